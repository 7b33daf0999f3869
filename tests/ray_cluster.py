"""A real local Ray head for the tests and the local cluster: `ray start --head --block` with small
settings (2 CPUs, an 80 MB object store, no dashboard UI), every port chosen free, advertised on 127.0.0.1,
in its own process group so that stopping it stops exactly what it started (never `ray stop`, which
stops every Ray process on the machine).

    with RayHead(folder) as head:       # the fixture `ray_head` in tests/conftest.py
        head.address                    # for ray.init / jobs.ray.address

    python -m tests.ray_cluster DIR     # deploy/local-cluster.sh: prints the address, runs until killed
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    # Not tests.helpers.free_port: that module imports the model code, and this one runs as a small process.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` different free ports (two calls of free_port may hand out the same one)."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def free_port_range(size: int, low: int = 20000, high: int = 32000) -> int:
    """The first port of `size` + 1 consecutive free ports, below the kernel's ephemeral range (from 32768),
    where free_port's picks land: Ray refuses to start when its worker ports overlap another component's."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(low, high - size)
        if all(_bindable(port) for port in range(base, base + size + 1)):
            return base
    raise RuntimeError(f"no {size + 1} consecutive free ports between {low} and {high}")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


RAY = Path(sys.executable).with_name("ray")
PORT_FLAGS = ["node-manager-port", "object-manager-port", "ray-client-server-port", "dashboard-port",
              "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
              "metrics-export-port"]


class RayHead:
    def __init__(self, folder: Path, num_cpus: int = 2, object_store_mb: int = 80) -> None:
        self.folder = folder
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> RayHead:
        self.folder.mkdir(parents=True, exist_ok=True)
        chosen = [port for port in free_ports(len(PORT_FLAGS) + 1) if port != self.port][: len(PORT_FLAGS)]
        ports = [f"--{flag}={port}" for flag, port in zip(PORT_FLAGS, chosen, strict=True)]
        worker_port = free_port_range(200)
        command = [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                   f"--num-cpus={self.num_cpus}", "--num-gpus=0", "--include-dashboard=false",
                   f"--object-store-memory={self.object_store_mb * 1_000_000}", f"--temp-dir={self.folder}",
                   "--disable-usage-stats", f"--min-worker-port={worker_port}",
                   f"--max-worker-port={worker_port + 200}", *ports]
        log = (self.folder / "ray-head.log").open("ab")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited: {(self.folder / 'ray-head.log').read_text()[-3000:]}")
            if b"Ray runtime started" in (self.folder / "ray-head.log").read_bytes() and self._listening():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("the Ray head did not start")

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is None:
            return
        group = self.process.pid
        for sig, wait in ((signal.SIGTERM, 8), (signal.SIGKILL, 10)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(group):
                time.sleep(0.2)
            if not _group_alive(group):
                break
        self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def main() -> int:
    head = RayHead(Path(sys.argv[1])).start()
    print(head.address, flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        while not stop and head.process and head.process.poll() is None:
            time.sleep(0.5)
    finally:
        head.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
