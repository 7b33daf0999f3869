"""Files in and out of the page without Gradio's public cache.

Gradio copies every file a handler returns into a cache that anyone holding the URL may read. Our stored
images and zips instead go out as links to `/files/images/<id>/<name>.png` and `/files/exports/<file>/<name>.zip`
(the last part is only the name a download gets), which
check on every request that the caller owns the file and that it has not expired. Uploads come in through
`uploaded_images`, which hands the handler Gradio's upload path (the handler decodes and deletes it).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from gradio import route_utils
from gradio.data_classes import FileData
from gradio.utils import NamedString
from gradio_client import utils as client_utils
from PIL import Image

from nanobanana.errors import InvalidImage, NanobananaError, StorageUnavailable
from nanobanana.generation import Limits, load_images
from nanobanana.service.accounts import Identity
from nanobanana.web import auth
from nanobanana.web.middleware import VISITOR_COOKIE
from nanobanana.web.presenters import download_name

PRIVATE = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
IMAGE_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
EXPORT_NAME = re.compile(r"[A-Za-z0-9_-]{8,120}\.zip")
DOWNLOAD_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}\.(png|zip)")


# Factories, not subclasses: Gradio writes a .pyi stub beside every module that subclasses a component.
def linked_file(**kwargs: Any) -> gr.File:
    """A `gr.File` whose value is `(url, size in bytes)` of a file on this site: shown and downloaded from
    there, never copied."""
    component = gr.File(**kwargs)

    def postprocess(value: Any) -> FileData | None:
        if value is None:
            return None
        url, size = value
        return FileData(path=url, url=url, size=size, orig_name=urlsplit(url).path.rsplit("/", 1)[-1])

    component.postprocess = postprocess  # type: ignore[method-assign]
    return component


def uploaded_images(**kwargs: Any) -> gr.File:
    """A `gr.File` for uploads that hands the handler Gradio's upload paths as they are.

    (`gr.File(type="filepath")` opens a temporary file per upload and never closes or removes it.)
    """
    component = gr.File(**kwargs)

    def process_single_file(f: FileData) -> NamedString:
        if component.file_types and not client_utils.is_valid_file(f.path, component.file_types):
            raise gr.Error("Upload an image file (PNG, JPEG or WebP).", print_exception=False)
        return NamedString(f.path)

    component._process_single_file = process_single_file  # type: ignore[method-assign]
    return component


class UploadMemory:
    """Uploads as decoded once (metadata gone, shrunk to what the model makes), held in memory so the
    same upload can be edited again with another instruction: the raw file on disk is deleted at the
    first read. Entries go after `ttl_seconds` or when more than `max_entries` are held (oldest first).
    Keys are Gradio's upload paths, which the request guard ties to the client that uploaded them."""

    def __init__(self, ttl_seconds: float = 1800, max_entries: int = 256) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._held: dict[str, tuple[float, Image.Image]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, image: Image.Image) -> None:
        with self._lock:
            self._expire()
            self._held.pop(key, None)
            self._held[key] = (time.monotonic() + self.ttl_seconds, image)
            while len(self._held) > self.max_entries:
                self._held.pop(next(iter(self._held)))

    def get(self, key: str) -> Image.Image | None:
        with self._lock:
            self._expire()
            held = self._held.get(key)
        return held[1].copy() if held else None

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (until, _) in self._held.items() if until < now]:
            del self._held[key]


def read_uploads(files: list[Any], limits: Limits, max_side: int, memory: UploadMemory | None = None
                 ) -> list[Image.Image]:
    """Decode this request's uploads in memory under the limits (count, bytes, pixels; headers before
    pixels), then delete Gradio's copies: raw uploads may carry EXIF metadata such as GPS positions.
    An upload read before (the same file, edited again) comes from `memory`."""
    paths = [Path(getattr(f, "name", f)) for f in files]
    try:
        if len(paths) > limits.max_input_images:
            raise InvalidImage(f"Upload at most {limits.max_input_images} images; got {len(paths)}.")
        remembered = {str(p): memory.get(str(p)) for p in paths if memory is not None and not p.is_file()}
        fresh = [p for p in paths if remembered.get(str(p)) is None]
        decoded = dict(zip(map(str, fresh), load_images(fresh, limits, max_side=max_side), strict=True))
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
    if memory is not None:
        for key, image in decoded.items():
            memory.put(key, image.copy())
    return [remembered.get(str(p)) or decoded[str(p)] for p in paths]


def site_root(request: gr.Request) -> str:
    """This site's URL as the visitor reached it, for links in a handler's output."""
    raw = getattr(request, "request", None)
    if raw is None:
        return ""
    return route_utils.get_root_url(raw, route_path=raw.url.path, root_path=None)


def request_identity(studio: Any, request: Request) -> Identity | None:
    """Who is asking a plain route: the signed-in account (never created here), else the visitor cookie."""
    info = request.session.get("oauth_info") if "session" in request.scope else None
    if isinstance(info, dict) and isinstance(info.get("userinfo"), dict):
        return studio.signed_in(auth.profile_data(info["userinfo"]))
    visitor = request.cookies.get(VISITOR_COOKIE)
    client = request.client.host if request.client else None
    return Identity.anonymous(visitor, client) if visitor else None


def _not_found() -> Response:
    return JSONResponse({"error": "There is no such file (it may have expired)."}, status_code=404,
                        headers=PRIVATE)


def image_link(root: str, image: Any) -> str:
    """Where one stored image is served, named for a download by its prompt and seed."""
    return f"{root}/files/images/{image.id}/{download_name(image.prompt, image.seed)}"


def file_routes(app: FastAPI, studio: Any) -> None:
    """`/files/images/<id>/<name>.png` and `/files/exports/<file>/<name>.zip`, for their owner only (404
    for anyone else, so ids do not leak), with headers that keep every cache from storing them."""

    @app.get("/files/images/{image_id}/{download_as}")
    def image_file(image_id: str, download_as: str, request: Request) -> Response:
        identity = request_identity(studio, request)
        if not IMAGE_ID.fullmatch(image_id) or not DOWNLOAD_NAME.fullmatch(download_as) or identity is None:
            return _not_found()
        try:
            data = studio.image_bytes(identity, image_id)
        except StorageUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers=PRIVATE)
        except NanobananaError:
            return _not_found()
        return Response(data, media_type="image/png",
                        headers={**PRIVATE, "Content-Disposition": f'inline; filename="{download_as}"'})

    @app.get("/files/exports/{name}/{download_as}")
    def export_file(name: str, download_as: str, request: Request) -> Response:
        identity = request_identity(studio, request)
        if not EXPORT_NAME.fullmatch(name) or not DOWNLOAD_NAME.fullmatch(download_as) or identity is None:
            return _not_found()
        try:
            found = studio.export_download(identity, name)
        except StorageUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers=PRIVATE)
        if found is None:
            return _not_found()
        export, chunks = found
        return StreamingResponse(chunks, media_type="application/zip", headers={
            **PRIVATE, "Content-Length": str(export.size),
            "Content-Disposition": f'attachment; filename="{download_as}"'})
