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
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.processes import free_port, free_port_range, free_ports, run_until_signalled

RAY = Path(sys.executable).with_name("ray")
# Ray's own switch (meant for Windows and macOS) that keeps it on loopback: otherwise every client turns a
# 127.0.0.1 address into the machine's outward one before connecting.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def cluster_env(folder: Path) -> dict[str, str]:
    """What every process of a local cluster shares (the head, `nanobanana worker --ray`, web replicas,
    in-process clients): loopback only, and Ray's token authentication with a token made here (0600). Left
    to itself Ray 2.60 turns tokens on for a head when ~/.ray/auth_token exists, but not for its clients."""
    token = folder / "auth_token"
    if not token.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return {**LOOPBACK_ONLY, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
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
        self.env = cluster_env(folder)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> RayHead:
        self.folder.mkdir(parents=True, exist_ok=True)
        chosen = free_ports(len(PORT_FLAGS), taken={self.port})
        ports = [f"--{flag}={port}" for flag, port in zip(PORT_FLAGS, chosen, strict=True)]
        worker_port = free_port_range(200)
        command = [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                   f"--num-cpus={self.num_cpus}", "--num-gpus=0", "--include-dashboard=false",
                   f"--object-store-memory={self.object_store_mb * 1_000_000}", f"--temp-dir={self.folder}",
                   "--disable-usage-stats", f"--min-worker-port={worker_port}",
                   f"--max-worker-port={worker_port + 200}", *ports]
        log = (self.folder / "ray-head.log").open("ab")
        env = {**os.environ, **self.env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
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
    return run_until_signalled(lambda: head.process is not None and head.process.poll() is None, head.stop)


if __name__ == "__main__":
    raise SystemExit(main())
