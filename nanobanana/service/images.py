"""Temporary image storage: results kept for a while under unguessable ids, readable only by their owner.

Files live in `<data folder>/images/<id>.png`; the database row says whose each one is, what made it
and when it expires (anonymous: hours, accounts: days). Each owner has a count and a byte limit; at
the limit the oldest images expire first and the caller is told. Files are written under a temporary
name and renamed, and deleted again if the database transaction that records them fails. Uploaded
images are never stored: only results come here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from PIL import Image, PngImagePlugin
from sqlalchemy.engine import Connection

from nanobanana.errors import ImageNotFound
from nanobanana.service.accounts import Identity
from nanobanana.service.config import StorageConfig
from nanobanana.service.db import Database, images, utcnow

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
    """An image written to its final path, not yet recorded in the database."""

    id: str
    path: Path
    bytes: int
    width: int
    height: int


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
    def __init__(self, db: Database, data_dir: Path, config: StorageConfig) -> None:
        self.db = db
        self.config = config
        self.images_dir = data_dir / "images"
        self.exports_dir = data_dir / "exports"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.exports_dir.mkdir(parents=True, exist_ok=True)

    # -- limits -------------------------------------------------------------------------------------
    def expiry(self, identity: Identity) -> timedelta:
        c = self.config
        return timedelta(hours=c.account_expiry_hours if identity.is_account else c.anonymous_expiry_hours)

    def limits(self, identity: Identity) -> tuple[int, int]:
        c = self.config
        if identity.is_account:
            return c.account_max_images, c.account_max_bytes
        return c.anonymous_max_images, c.anonymous_max_bytes

    def _file(self, image_id: str) -> Path:
        return self.images_dir / f"{check_id(image_id)}.png"

    # -- writing ------------------------------------------------------------------------------------
    def write_files(self, pictures: Sequence[Image.Image], ids: Sequence[str] | None = None,
                    texts: Sequence[Mapping[str, str]] | None = None) -> list[WrittenFile]:
        """Encode and write each image (temp name, then rename). Pair with `record` or `remove_files`.
        `ids` are the image ids to use (chosen beforehand, so a job can name its files before they exist).
        `texts`: PNG text chunks per image (the owner's opt-in prompt and settings); none by default."""
        written: list[WrittenFile] = []
        ids = list(ids) if ids is not None else [secrets.token_urlsafe(24) for _ in pictures]
        texts = list(texts) if texts is not None else [{} for _ in pictures]
        try:
            for picture, image_id, text in zip(pictures, ids, texts, strict=True):
                check_id(image_id)
                buffer = io.BytesIO()
                # Fastest zlib level: several times quicker than the default on large images, files
                # about a third bigger; they are temporary anyway.
                picture.save(buffer, format="PNG", compress_level=1, pnginfo=png_text(text))
                data = buffer.getvalue()
                final = self._file(image_id)
                temp = final.with_name(f".{image_id}.tmp")
                temp.write_bytes(data)
                os.replace(temp, final)
                written.append(WrittenFile(image_id, final, len(data), picture.width, picture.height))
        except BaseException:
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
        removed = 0
        for image_id in image_ids:
            try:
                self._file(image_id).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

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

    def path(self, identity: Identity, image_id: str) -> Path:
        self.get(identity, image_id)
        path = self._file(image_id)
        if not path.is_file():
            raise ImageNotFound("There is no such image (it may have expired).")
        return path

    def load(self, identity: Identity, image_id: str) -> Image.Image:
        """One of this person's images, decoded."""
        with Image.open(self.path(identity, image_id)) as image:
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

    def new_export_path(self, identity: Identity, label: str) -> Path:
        return self.exports_dir / f"{self._export_prefix(identity)}-{label}-{secrets.token_urlsafe(12)}.zip"

    def exports_of(self, identity: Identity) -> list[Path]:
        """This person's export and "download all" zips that still exist."""
        return sorted(self.exports_dir.glob(f"{self._export_prefix(identity)}-*"))

    def export_file(self, identity: Identity, name: str) -> Path | None:
        """This person's zip called `name` if it exists and has not expired (the sweep may lag)."""
        cutoff = time.time() - self.config.export_expiry_minutes * 60
        for path in self.exports_of(identity):
            if path.name == name and path.stat().st_mtime >= cutoff:
                return path
        return None

    def remove_exports(self, identity: Identity) -> int:
        paths = self.exports_of(identity)
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    # -- sweeping -----------------------------------------------------------------------------------
    def sweep(self, now: datetime | None = None) -> SweepReport:
        """Delete expired rows and their files, orphaned files and old exports."""
        now = now or utcnow()
        with self.db.transaction() as c:
            expired = list(c.execute(sa.select(images.c.id).where(images.c.expires_at <= now)).scalars())
            if expired:
                c.execute(images.delete().where(images.c.id.in_(expired)))
        files = self.remove_files(expired)
        files += self._remove_orphans()
        exports = 0
        cutoff = time.time() - self.config.export_expiry_minutes * 60
        for path in self.exports_dir.iterdir():
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                exports += 1
        return SweepReport(images=len(expired), files=files, exports=exports)

    def _remove_orphans(self) -> int:
        # A file with no row: a crash between writing and recording. Young files may still be recorded.
        cutoff = time.time() - ORPHAN_GRACE_SECONDS
        old = [p for p in self.images_dir.iterdir() if p.is_file() and p.stat().st_mtime < cutoff]
        if not old:
            return 0
        with self.db.transaction() as c:
            known = set(c.execute(sa.select(images.c.id)).scalars())
        removed = 0
        for path in old:
            if path.suffix != ".png" or path.stem not in known:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
