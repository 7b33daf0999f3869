"""Where stored bytes go: a folder on this machine, or a bucket on an S3-compatible object store.

    blobs = open_blobs(config.storage, data_dir)   # storage.location: local | s3://bucket[/prefix]
    images = blobs.under("images")                 # keys are plain relative names: "<id>.png"

Both kinds offer the same few calls: `put`, `get`, `chunks` (a streamed read), `delete`, `list` (with
each object's size and time) and `under` (a view on a sub-folder or key prefix). Who may read what is
decided above this layer (`ImageStore`), never here: the bucket stays private and every download goes
through the app's own routes. An S3 store that cannot be reached raises `StorageUnavailable`, whose
message can be shown as it is; credentials come from the environment as for any AWS client
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, or an instance role).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nanobanana.errors import StorageError, StorageUnavailable

KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")
CHUNK = 1 << 20
UNAVAILABLE = ("The image store cannot be reached right now; nothing was charged. Try again in a few "
               "minutes.")


@dataclass(frozen=True)
class BlobInfo:
    key: str  # relative to the view it was listed from
    size: int
    modified: float  # seconds since the epoch


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key) or ".." in key:
        raise StorageError("That is not a stored file's name.")
    return key


class LocalBlobs:
    """Files under one folder; writes go to a temporary name first, then are renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return "LocalBlobs(<data folder>)"

    def under(self, prefix: str) -> LocalBlobs:
        return LocalBlobs(self.root / check_key(prefix))

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        try:
            temp.write_bytes(data)
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)

    def put_file(self, key: str, source: Path) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, final)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise KeyError(key) from None

    def chunks(self, key: str) -> Iterator[bytes]:
        path = self.path(key)
        if not path.is_file():
            raise KeyError(key)
        handle = path.open("rb")

        def read() -> Iterator[bytes]:
            with handle:
                while block := handle.read(CHUNK):
                    yield block

        return read()

    def delete(self, keys: Iterable[str]) -> int:
        removed = 0
        for key in list(keys):
            path = self.path(key)
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            if path.parent != self.root:
                with contextlib.suppress(OSError):
                    path.parent.rmdir()  # a job's input folder, once empty
        return removed

    def list(self, prefix: str = "") -> list[BlobInfo]:
        found = []
        for path in self.root.rglob("*"):
            if not path.is_file() or path.name.startswith("."):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                stat = path.stat()
                found.append(BlobInfo(key, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda b: b.key)

    def temporaries(self) -> list[Path]:
        """Temporary files left by a crash in the middle of a write."""
        return [p for p in self.root.rglob(".*.tmp") if p.is_file()]


class S3Blobs:
    """Objects under `prefix` in one bucket (boto3; any S3-compatible server)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"S3Blobs(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def under(self, prefix: str) -> S3Blobs:
        return S3Blobs(self.client, self.bucket, f"{self.prefix}{check_key(prefix)}/")

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise KeyError(kwargs.get("Key")) from None
            if code in {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                raise StorageUnavailable(f"{UNAVAILABLE} (The operator should check the bucket and its "
                                         f"credentials: {code}.)") from exc
            raise StorageUnavailable(UNAVAILABLE) from exc
        except BotoCoreError as exc:  # connection refused, timeouts, DNS
            raise StorageUnavailable(UNAVAILABLE) from exc

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self.prefix + check_key(key), Body=data)

    def put_file(self, key: str, source: Path) -> None:
        try:
            with source.open("rb") as handle:
                self._call("put_object", Key=self.prefix + check_key(key), Body=handle)
        finally:
            source.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        return self._call("get_object", Key=self.prefix + check_key(key))["Body"].read()

    def chunks(self, key: str) -> Iterator[bytes]:
        body = self._call("get_object", Key=self.prefix + check_key(key))["Body"]
        return body.iter_chunks(CHUNK)

    def delete(self, keys: Iterable[str]) -> int:
        keys = [self.prefix + check_key(k) for k in keys]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            part = keys[start:start + 1000]
            self._call("delete_objects", Delete={"Objects": [{"Key": k} for k in part], "Quiet": True})
        return len(keys)

    def list(self, prefix: str = "") -> list[BlobInfo]:
        found, token = [], None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list_objects_v2", Prefix=self.prefix + prefix, **extra)
            for item in page.get("Contents", []):
                modified = item["LastModified"]
                if modified.tzinfo is None:
                    modified = modified.replace(tzinfo=UTC)
                found.append(BlobInfo(item["Key"][len(self.prefix):], int(item["Size"]), modified.timestamp()))
            if not page.get("IsTruncated"):
                return sorted(found, key=lambda b: b.key)
            token = page["NextContinuationToken"]

    def temporaries(self) -> list[Path]:
        return []  # an object appears whole or not at all


Blobs = LocalBlobs | S3Blobs


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, location: str) -> S3Location:
        parts = urlsplit(location)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"storage.location must be 'local' or s3://BUCKET[/PREFIX], not {location!r}")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")


def s3_client(endpoint: str | None, region: str | None) -> Any:
    """A boto3 client that gives up quickly (a request waits on it) and addresses buckets by path, as
    self-hosted servers (SeaweedFS, MinIO) expect."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"},
                    s3={"addressing_style": "path"}, signature_version="s3v4")
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region or "us-east-1", config=config)


def open_blobs(storage: Any, data_dir: Path) -> Blobs:
    """The store `storage.location` names (`local`: `<data_dir>`)."""
    if storage.location == "local":
        return LocalBlobs(data_dir)
    where = S3Location.parse(storage.location)
    return S3Blobs(s3_client(storage.s3_endpoint, storage.s3_region), where.bucket, where.prefix)


def modified_now() -> float:
    return datetime.now(UTC).timestamp()
