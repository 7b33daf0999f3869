"""Provenance: every stored image carries signed C2PA Content Credentials and an invisible watermark.

    provenance = Provenance.from_config(data_dir, environ)     # once, in build_services
    stamp = provenance.stamp(Origin(mode, model_id, parents))  # per job
    picture = stamp.pixels(picture, image_id)                  # the watermark, before encoding
    data = stamp.sign(png_bytes)                               # bytes -> bytes, just before the write
    verdict = provenance.verify(data)                          # what `verify` and "Check an image" say

Storage stays unaware of it: `ImageStore.write_files` calls the stamp's two steps around its own PNG
encoding, wherever the bytes then go. Anything that must be inside the signed file (PNG text chunks with
settings, should an account opt in) has to be added before `sign`.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from nanobanana.errors import ProvenanceError, UnreadableFile
from nanobanana.provenance.config import ProvenanceConfig, load_provenance_config
from nanobanana.provenance.keys import (
    SigningMaterial,
    local_trust_anchor,
    signer_summary,
    signing_material,
)
from nanobanana.provenance.manifest import ManifestReading, Origin, read_manifest, sign_png
from nanobanana.provenance.watermark import MIN_PIXELS, Embedding, Reading, Watermark

__all__ = [
    "MIN_PIXELS",
    "Origin",
    "Provenance",
    "ProvenanceConfig",
    "Stamp",
    "Verdict",
    "load_provenance_config",
]

log = logging.getLogger(__name__)

# Exit codes of `python -m nanobanana verify` (the worst file decides).
AI_MARKED, NOT_MARKED, TAMPERED, UNREADABLE = 0, 3, 4, 5
MAX_VERIFY_BYTES = 50_000_000
MAX_VERIFY_PIXELS = 40_000_000
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "TIFF": "image/tiff",
        "BMP": "image/bmp", "AVIF": "image/avif", "HEIF": "image/heif"}


def _pillow_formats() -> list[str]:
    """The formats of `MIME` this Pillow can open (AVIF and HEIF need plugins that may be missing)."""
    Image.init()
    return [name for name in MIME if name in Image.OPEN]


@dataclass
class Verdict:
    """One file's marks: `status` is ai_marked, not_marked or tampered."""

    status: str
    manifest: ManifestReading
    watermark: Reading
    format: str = ""
    width: int = 0
    height: int = 0

    @property
    def exit_code(self) -> int:
        return {"ai_marked": AI_MARKED, "not_marked": NOT_MARKED, "tampered": TAMPERED}[self.status]

    @property
    def summary(self) -> str:
        if self.status == "tampered":
            return ("Tampered: this file has a C2PA manifest that no longer matches it (changed after signing)"
                    + (", though its invisible watermark says it was made by AI." if self.watermark.found else "."))
        if self.status == "ai_marked":
            ways = []
            if self.manifest.ai_generated:
                trust = "" if self.manifest.trusted else " (signer not trusted here)"
                ways.append(f"its signed C2PA manifest{trust}")
            if self.watermark.found:
                ways.append("its invisible watermark")
            return f"Made by AI: {' and '.join(ways)} {'say' if len(ways) > 1 else 'says'} so."
        small = "" if self.watermark.checked else f" The image is {self.watermark.note}."
        return "No AI mark found: no valid C2PA manifest and no invisible watermark." + small.replace(
            "only the C2PA manifest marks it", "it could not carry one")

    def to_dict(self) -> dict:
        return {"status": self.status, "summary": self.summary, "format": self.format, "width": self.width,
                "height": self.height, "manifest": self.manifest.to_dict(), "watermark": self.watermark.to_dict()}


@dataclass
class Stamp:
    """The marks for one job's images; `embeddings` records what the watermark did to each."""

    provenance: Provenance
    origin: Origin
    embeddings: list[Embedding] = field(default_factory=list)

    def pixels(self, picture: Image.Image, image_id: str) -> Image.Image:
        picture, embedding = self.provenance.embed(picture, image_id)
        self.embeddings.append(embedding)
        return picture

    def sign(self, data: bytes) -> bytes:
        return self.provenance.sign(data, self.origin)

    def record(self) -> dict:
        """What is kept with the images (their settings) and logged: which marks they carry."""
        statuses = sorted({e.status for e in self.embeddings})
        record = {"c2pa": self.provenance.config.c2pa.enabled, "watermark": ",".join(statuses) or "none"}
        if "too_small" in statuses:
            small = next(e for e in self.embeddings if e.status == "too_small")
            record["note"] = small.note
        return record


class Provenance:
    """The marks this instance applies, and the reader for them (one per process, made at start-up)."""

    def __init__(self, config: ProvenanceConfig, data_dir: Path, environ: Mapping[str, str] | None = None, *,
                 operator: str = "Nanobanana", signing: bool = True) -> None:
        """`signing=False`: a reader only (`verify`), which never makes or loads a key."""
        environ = os.environ if environ is None else environ
        self.config = config
        self.data_dir = Path(data_dir)
        self.watermark = Watermark(config.watermark.tag, config.watermark.strength)
        self.material: SigningMaterial | None = None
        if config.c2pa.enabled and signing:
            self.material = signing_material(config.c2pa.signer, self.data_dir, environ, operator=operator)
        self._small_logged = threading.Event()

    @classmethod
    def from_config(cls, data_dir: Path, environ: Mapping[str, str] | None = None, *,
                    operator: str = "Nanobanana", signing: bool = True) -> Provenance:
        """The marks as `configs/provenance.yaml` and the environment set them."""
        return cls(load_provenance_config(environ), data_dir, environ, operator=operator, signing=signing)

    # -- marking --------------------------------------------------------------------------------------
    def stamp(self, origin: Origin) -> Stamp:
        if origin.prompt is not None and not self.config.c2pa.include_prompt:
            origin = Origin(origin.mode, origin.model_id, origin.parents, None)
        return Stamp(self, origin)

    def embed(self, picture: Image.Image, image_id: str) -> tuple[Image.Image, Embedding]:
        if not self.config.watermark.enabled:
            return picture, Embedding("off", picture.width, picture.height)
        picture, embedding = self.watermark.embed(picture, image_id)
        if embedding.status == "too_small" and not self._small_logged.is_set():
            self._small_logged.set()  # once per process: every image of a small model would say the same
            log.warning("images are %s", embedding.note)
        return picture, embedding

    def sign(self, data: bytes, origin: Origin) -> bytes:
        if self.material is None:
            return data
        signer = self.config.c2pa.signer
        try:
            return sign_png(data, origin, self.material, timestamp_url=signer.timestamp_url,
                            algorithm=signer.algorithm)
        except Exception as exc:
            import c2pa

            if isinstance(exc, c2pa.C2paError):
                log.error("C2PA signing failed (%s): %s", type(exc).__name__.lstrip("_"), exc)
                raise ProvenanceError("The image could not be signed (C2PA); it was not stored. The operator's "
                                      f"log says why ({type(exc).__name__.lstrip('_')}).") from exc
            raise

    def mark(self, picture: Image.Image, image_id: str, origin: Origin) -> tuple[bytes, Embedding]:
        """Watermark, encode and sign one picture: the bytes of the file to hand out (CLI, eval)."""
        stamp = self.stamp(origin)
        picture = stamp.pixels(picture, image_id)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", compress_level=1)
        return stamp.sign(buffer.getvalue()), stamp.embeddings[0]

    # -- reading --------------------------------------------------------------------------------------
    def trust_anchors(self) -> bytes | None:
        """This instance's CA plus the configured extra anchors (PEM)."""
        parts = [local_trust_anchor(self.data_dir) or b""]
        if self.config.c2pa.trust_anchors is not None:
            try:
                parts.append(Path(self.config.c2pa.trust_anchors).expanduser().read_bytes())
            except OSError as exc:
                raise ProvenanceError(f"c2pa.trust_anchors cannot be read: {exc.strerror}.") from None
        joined = b"\n".join(p.strip() for p in parts if p.strip())
        return joined or None

    def verify_file(self, path: Path) -> Verdict:
        """`verify` on a file, read only up to the size limit (a huge file or /dev/zero is not read whole)."""
        with Path(path).open("rb") as file:
            return self.verify(file.read(MAX_VERIFY_BYTES + 1))

    def verify(self, data: bytes) -> Verdict:
        """Both marks of a file's bytes, with a verdict: ai_marked, not_marked or tampered."""
        if len(data) > MAX_VERIFY_BYTES:
            raise UnreadableFile(f"The file is larger than {MAX_VERIFY_BYTES / 1e6:.0f} MB; files up to "
                                 f"{MAX_VERIFY_BYTES / 1e6:.0f} MB can be checked.")
        fmt, picture = "", None
        too_big = f"images up to {MAX_VERIFY_PIXELS / 1e6:.0f} megapixels can be checked."
        try:
            # Only the formats C2PA marks: Pillow would hand an EPS file (named .png, say) to Ghostscript.
            with Image.open(io.BytesIO(data), formats=_pillow_formats()) as image:
                fmt = image.format or ""
                if image.width * image.height > MAX_VERIFY_PIXELS:  # read the header, not a decompression bomb
                    raise UnreadableFile(f"The image is {image.width}×{image.height} px; {too_big}")
                image.load()
                picture = image.convert("RGB")
        except UnreadableFile:
            raise
        except Image.DecompressionBombError:  # Pillow refuses the largest ones in `open`, before our check
            raise UnreadableFile(f"The image is far too large; {too_big}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            pass  # a signed file with a changed byte may not decode; its manifest still tells
        manifest = read_manifest(data, MIME.get(fmt, "image/png"), self.trust_anchors())
        if picture is None:
            if not manifest.present or manifest.parse_error:
                raise UnreadableFile("This is not an image we can read (PNG, JPEG, WebP, ...).")
            manifest.valid = False
            manifest.problems = manifest.problems or ["image.undecodable"]
            manifest.note = "C2PA manifest present, but the image data is damaged: the file was changed"
            reading = Reading(False, False, note="not checked: the image data is damaged")
            return Verdict("tampered", manifest, reading, fmt)
        reading = self.watermark.read(picture)
        if manifest.present and not manifest.valid:
            status = "tampered"
        elif manifest.ai_generated or reading.found:
            status = "ai_marked"
        else:
            status = "not_marked"
        return Verdict(status, manifest, reading, fmt, picture.width, picture.height)

    # -- what the policy page says ---------------------------------------------------------------------
    def describe(self) -> dict:
        c2pa_config, mark = self.config.c2pa, self.config.watermark
        signer = None
        if self.material is not None:
            signer = {"source": self.material.source, **signer_summary(self.material.chain)}
        return {"c2pa": c2pa_config.enabled, "include_prompt": c2pa_config.include_prompt, "signer": signer,
                "watermark": mark.enabled, "watermark_method": mark.method, "watermark_tag": mark.tag,
                "min_pixels": MIN_PIXELS}
