"""Temporary image storage: results kept for a while under unguessable ids, readable only by their owner.

The bytes go to a `Blobs` store (`service/blobs.py`: the data folder, or an S3 bucket shared by every
replica) as `images/<id>.png`; the database row says whose each one is, what made it and when it expires
(anonymous: hours, accounts: days). Each owner has a count and a byte limit; at the limit the oldest
images expire first and the caller is told. Objects are written before their rows and deleted again if
the database transaction that records them fails; the sweeper deletes expired and orphaned objects.
Uploaded images are never stored: only results come here. Exports (zips) live beside them as
`exports/<name>.zip`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from PIL import Image, PngImagePlugin
from sqlalchemy.engine import Connection

from nanobanana.errors import ImageNotFound
from nanobanana.service.accounts import Identity
from nanobanana.service.blobs import BlobInfo, Blobs, LocalBlobs, open_blobs
from nanobanana.service.config import StorageConfig
from nanobanana.service.db import Database, images, utcnow

if TYPE_CHECKING:
    from nanobanana.provenance import Stamp

IMAGE_ID = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
ORPHAN_GRACE_SECONDS = 600  # files younger than this may belong to a request still being recorded


@dataclass(frozen=True)
class StoredImage:
    id: str
    request_id: str
    created_at: datetime
    expires_at: datetime
    prompt: str
    settings: dict
    seed: int
    width: int
    height: int
    bytes: int

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "request_id": self.request_id,
            "created_at": self.created_at.isoformat() + "Z",
            "expires_at": self.expires_at.isoformat() + "Z",
            "prompt": self.prompt,
            "settings": self.settings,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class WrittenFile:
    """An image written to the store, not yet recorded in the database."""

    id: str
    bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class ExportFile:
    """A zip kept for its owner for `export_expiry_minutes`, downloaded by its name."""

    name: str
    size: int


@dataclass
class Eviction:
    """Images removed to make room under the owner's limits."""

    ids: list[str] = field(default_factory=list)
    reason: str = ""

    def message(self) -> str | None:
        if not self.ids:
            return None
        n = len(self.ids)
        return f"Your {n} oldest image{'s' if n > 1 else ''} expired early to make room ({self.reason})."


@dataclass(frozen=True)
class SweepReport:
    images: int = 0
    files: int = 0
    exports: int = 0
    history: int = 0
    jobs: int = 0

    def to_dict(self) -> dict:
        return {"images": self.images, "files": self.files, "exports": self.exports, "history": self.history,
                "jobs": self.jobs}


def png_text(text: Mapping[str, str]) -> PngImagePlugin.PngInfo | None:
    """PNG text chunks (iTXt, so any prompt's characters survive), or None for a file without any."""
    if not text:
        return None
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)
    return info


def settings_text(prompt: str, settings: Mapping, seed: int, model: str) -> dict[str, str]:
    """What an opted-in account's PNG carries: the prompt and settings, in the "parameters" layout other
    studios (AUTOMATIC1111, ComfyUI readers) show, plus the same as JSON."""
    lines = [prompt]
    if settings.get("negative_prompt"):
        lines.append(f"Negative prompt: {settings['negative_prompt']}")
    parts = [f"Steps: {settings.get('steps')}", f"Sampler: {settings.get('scheduler') or 'default'}",
             f"CFG scale: {settings.get('guidance')}", f"Seed: {seed}",
             f"Size: {settings.get('width')}x{settings.get('height')}", f"Model: {model}"]
    if settings.get("strength") is not None and settings.get("mode") != "text_to_image":
        parts.append(f"Denoising strength: {settings['strength']}")
    lines.append(", ".join(parts))
    data = {"prompt": prompt, "seed": seed, "model": model,
            **{k: v for k, v in settings.items() if k not in ("prompt", "seeds")}}
    return {"parameters": "\n".join(lines), "nanobanana": json.dumps(data, ensure_ascii=False),
            "Software": "Nanobanana"}


def check_id(image_id: str) -> str:
    """An image id as we issue them (no slashes, dots or anything a path could be made of)."""
    if not isinstance(image_id, str) or not IMAGE_ID.fullmatch(image_id):
        raise ImageNotFound("There is no such image (it may have expired).")
    return image_id


def _stored(row: sa.Row) -> StoredImage:
    return StoredImage(
        id=row.id, request_id=row.request_id, created_at=row.created_at, expires_at=row.expires_at,
        prompt=row.prompt, settings=dict(row.settings or {}), seed=int(row.seed), width=int(row.width),
        height=int(row.height), bytes=int(row.bytes),
    )


class ImageStore:
    def __init__(self, db: Database, data_dir: Path, config: StorageConfig, blobs: Blobs | None = None) -> None:
        self.db = db
        self.config = config
        self.blobs = blobs if blobs is not None else open_blobs(config, data_dir)
        self.image_blobs = self.blobs.under("images")
        self.export_blobs = self.blobs.under("exports")
        # On local storage the folders themselves (operator tools and tests look inside them).
        local = isinstance(self.blobs, LocalBlobs)
        self.images_dir = self.image_blobs.root if local else None
        self.exports_dir = self.export_blobs.root if local else None

    # -- limits -------------------------------------------------------------------------------------
    def expiry(self, identity: Identity) -> timedelta:
        c = self.config
        return timedelta(hours=c.account_expiry_hours if identity.is_account else c.anonymous_expiry_hours)

    def limits(self, identity: Identity) -> tuple[int, int]:
        c = self.config
        if identity.is_account:
            return c.account_max_images, c.account_max_bytes
        return c.anonymous_max_images, c.anonymous_max_bytes

    @staticmethod
    def _key(image_id: str) -> str:
        return f"{check_id(image_id)}.png"

    # -- writing ------------------------------------------------------------------------------------
    @staticmethod
    def encode(picture: Image.Image, text: Mapping[str, str] | None = None) -> bytes:
        """The PNG bytes we store for a result, with `text` as PNG text chunks (none by default)."""
        buffer = io.BytesIO()
        # Fastest zlib level: several times quicker than the default on large images, files about a
        # third bigger; they are temporary anyway.
        picture.save(buffer, format="PNG", compress_level=1, pnginfo=png_text(text or {}))
        return buffer.getvalue()

    def write_files(self, pictures: Sequence[Image.Image], ids: Sequence[str] | None = None,
                    texts: Sequence[Mapping[str, str]] | None = None, *,
                    stamp: Stamp | None = None) -> list[WrittenFile]:
        """Encode and store each image. Pair with `record` or `remove_files`. `ids` are the image ids to
        use (chosen beforehand, so a job can name its files before they exist); `texts`: PNG text chunks
        per image (the owner's opt-in prompt and settings), none by default; `stamp` marks them: the
        watermark in the pixels, then the signed C2PA manifest over the bytes. Raises `StorageUnavailable`
        when the object store cannot be reached (what was written is removed)."""
        written: list[WrittenFile] = []
        ids = list(ids) if ids is not None else [secrets.token_urlsafe(24) for _ in pictures]
        texts = list(texts) if texts is not None else [{} for _ in pictures]
        try:
            for picture, image_id, text in zip(pictures, ids, texts, strict=True):
                check_id(image_id)
                if stamp is not None:
                    picture = stamp.pixels(picture, image_id)
                data = self.encode(picture, text)
                if stamp is not None:
                    data = stamp.sign(data)  # last: nothing may change the bytes after signing
                self.image_blobs.put(self._key(image_id), data)
                written.append(WrittenFile(image_id, len(data), picture.width, picture.height))
        except BaseException:
            with contextlib.suppress(Exception):  # the store is down: the sweeper removes them as orphans
                self.remove_files(w.id for w in written)
            raise
        return written

    def record(
        self, conn: Connection, identity: Identity, files: Sequence[WrittenFile], *, request_id: str,
        prompt: str, settings: dict, seeds: Sequence[int],
    ) -> list[StoredImage]:
        """Insert the rows for written files, in the caller's transaction."""
        now = utcnow()
        expires = now + self.expiry(identity)
        rows = [
            {
                "id": f.id, "owner_kind": identity.kind, "owner_key": identity.owner_key,
                "request_id": request_id, "prompt": prompt, "settings": settings, "seed": int(seed),
                "width": f.width, "height": f.height, "bytes": f.bytes,
                "created_at": now, "expires_at": expires,
            }
            for f, seed in zip(files, seeds, strict=True)
        ]
        if rows:
            conn.execute(images.insert(), rows)
        return [StoredImage(**{k: r[k] for k in StoredImage.__dataclass_fields__}) for r in rows]

    def make_room(self, conn: Connection, identity: Identity, keep: Iterable[str] = ()) -> Eviction:
        """Expire the owner's oldest images until count and bytes are within limits (caller's transaction).

        Images in `keep` (the ones just made) go last. Delete the evicted files after the commit.
        """
        max_count, max_bytes = self.limits(identity)
        keep = set(keep)
        rows = conn.execute(
            sa.select(images.c.id, images.c.bytes, images.c.created_at).where(*self._owned(identity))
        ).all()
        rows.sort(key=lambda r: (r.id in keep, r.created_at, r.id), reverse=True)
        count = total = 0
        evicted: list[str] = []
        for row in rows:
            if count + 1 > max_count or total + row.bytes > max_bytes:
                evicted.append(row.id)
            else:
                count, total = count + 1, total + row.bytes
        if evicted:
            conn.execute(images.delete().where(images.c.id.in_(evicted)))
        reason = f"limit: {max_count} images, {max_bytes / 1e6:g} MB"
        return Eviction(evicted, reason)

    def remove_files(self, image_ids: Iterable[str]) -> int:
        return self.image_blobs.delete([self._key(i) for i in image_ids])

    # -- reading (every read checks the owner) -----------------------------------------------------
    def _owned(self, identity: Identity) -> tuple:
        return (images.c.owner_kind == identity.kind, images.c.owner_key == identity.owner_key)

    def list(self, identity: Identity, conn: Connection | None = None) -> list[StoredImage]:
        with self.db.transaction(conn) as c:
            rows = c.execute(
                sa.select(images)
                .where(*self._owned(identity), images.c.expires_at > utcnow())
                .order_by(images.c.created_at.desc(), images.c.id)
            ).all()
        return [_stored(r) for r in rows]

    def get(self, identity: Identity, image_id: str) -> StoredImage:
        check_id(image_id)
        with self.db.transaction() as c:
            row = c.execute(
                sa.select(images).where(
                    images.c.id == image_id, *self._owned(identity), images.c.expires_at > utcnow()
                )
            ).first()
        if row is None:
            raise ImageNotFound("There is no such image (it may have expired).")
        return _stored(row)

    def read(self, identity: Identity, image_id: str) -> bytes:
        """The PNG bytes of one of this person's images; `ImageNotFound` for anything else."""
        self.get(identity, image_id)
        try:
            return self.image_blobs.get(self._key(image_id))
        except KeyError:
            raise ImageNotFound("There is no such image (it may have expired).") from None

    def path(self, identity: Identity, image_id: str) -> Path:
        """The file of one of this person's images on local storage (operator tools and tests)."""
        self.get(identity, image_id)
        if not isinstance(self.image_blobs, LocalBlobs):
            raise ImageNotFound("Images are kept in object storage here: read them with `read`.")
        path = self.image_blobs.path(self._key(image_id))
        if not path.is_file():
            raise ImageNotFound("There is no such image (it may have expired).")
        return path

    def load(self, identity: Identity, image_id: str) -> Image.Image:
        """One of this person's images, decoded."""
        with Image.open(io.BytesIO(self.read(identity, image_id))) as image:
            image.load()
            return image.copy()

    def delete(self, identity: Identity, image_id: str) -> None:
        check_id(image_id)
        with self.db.transaction() as c:
            done = c.execute(images.delete().where(images.c.id == image_id, *self._owned(identity))).rowcount
        if not done:
            raise ImageNotFound("There is no such image (it may have expired).")
        self.remove_files([image_id])

    def delete_owner(self, identity: Identity, conn: Connection) -> list[str]:
        """Remove every row of this owner (caller's transaction); returns the ids whose files to delete."""
        ids = list(conn.execute(sa.select(images.c.id).where(*self._owned(identity))).scalars())
        conn.execute(images.delete().where(*self._owned(identity)))
        return ids

    # -- exports ------------------------------------------------------------------------------------
    def _export_prefix(self, identity: Identity) -> str:
        return hashlib.sha256(f"export:{identity.kind}:{identity.owner_key}".encode()).hexdigest()[:20]

    def save_export(self, identity: Identity, label: str, source: Path) -> ExportFile:
        """Keep the zip at `source` (moved or uploaded, then gone) as one of this person's exports."""
        name = f"{self._export_prefix(identity)}-{label}-{secrets.token_urlsafe(12)}.zip"
        size = source.stat().st_size
        self.export_blobs.put_file(name, source)
        return ExportFile(name, size)

    def exports_of(self, identity: Identity) -> list[BlobInfo]:
        """This person's export and "download all" zips that still exist."""
        return self.export_blobs.list(f"{self._export_prefix(identity)}-")

    def export_file(self, identity: Identity, name: str) -> ExportFile | None:
        """This person's zip called `name` if it exists and has not expired (the sweep may lag)."""
        cutoff = time.time() - self.config.export_expiry_minutes * 60
        for blob in self.exports_of(identity):
            if blob.key == name and blob.modified >= cutoff:
                return ExportFile(blob.key, blob.size)
        return None

    def export_chunks(self, identity: Identity, name: str) -> tuple[ExportFile, Iterator[bytes]] | None:
        """This person's zip called `name` and its bytes as a stream, or None."""
        export = self.export_file(identity, name)
        if export is None:
            return None
        try:
            return export, self.export_blobs.chunks(export.name)
        except KeyError:
            return None

    def remove_exports(self, identity: Identity, name: str | None = None) -> int:
        """Delete this person's zips (only the one called `name`, if given)."""
        return self.export_blobs.delete([b.key for b in self.exports_of(identity) if name in (None, b.key)])

    # -- sweeping -----------------------------------------------------------------------------------
    def sweep(self, now: datetime | None = None) -> SweepReport:
        """Delete expired rows and their objects, orphaned objects and old exports."""
        now = now or utcnow()
        with self.db.transaction() as c:
            expired = list(c.execute(sa.select(images.c.id).where(images.c.expires_at <= now)).scalars())
            if expired:
                c.execute(images.delete().where(images.c.id.in_(expired)))
        files = self.remove_files(expired)
        files += self._remove_orphans()
        cutoff = time.time() - self.config.export_expiry_minutes * 60
        old = [b.key for b in self.export_blobs.list() if b.modified < cutoff]
        exports = self.export_blobs.delete(old)
        for temp in self.blobs.temporaries():  # a write cut short by a crash
            if temp.stat().st_mtime < time.time() - ORPHAN_GRACE_SECONDS:
                temp.unlink(missing_ok=True)
        return SweepReport(images=len(expired), files=files, exports=exports)

    def _remove_orphans(self) -> int:
        # An object with no row: a crash between writing and recording. Young ones may still be recorded.
        cutoff = time.time() - ORPHAN_GRACE_SECONDS
        old = [b.key for b in self.image_blobs.list() if b.modified < cutoff]
        if not old:
            return 0
        with self.db.transaction() as c:
            known = {f"{i}.png" for i in c.execute(sa.select(images.c.id)).scalars()}
        return self.image_blobs.delete([key for key in old if key not in known])
