"""The invisible watermark: 64 bits in the pixels, read back after the file's metadata is gone.

Payload: the service tag (3 ASCII bytes, `watermark.tag`) + the first 5 bytes of SHA-256(image id). It is
embedded with `invisible-watermark`'s DWT-DCT-SVD method (no model weights), which needs at least 256×256
pixels: a smaller image is reported as too small, never silently left unmarked. A reading counts as found
when at most 2 of the tag's 24 bits differ (a random image passes with probability ~2e-5 per try); the
reader also tries the image rescaled back to the sizes it was likely made at (×0.5, ×2, common model sizes),
because a resized image no longer lines up with the embedding grid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

MIN_PIXELS = 256 * 256  # the library refuses smaller images
PAYLOAD_BYTES = 8
TAG_BYTES = 3
TAG_TOLERANCE = 2  # bits of the tag that may be wrong
MODEL_SIDES = (256, 512, 768, 1024)


@dataclass(frozen=True)
class Embedding:
    """What happened to one image: `status` is embedded, too_small or off."""

    status: str
    width: int
    height: int

    @property
    def note(self) -> str:
        if self.status == "too_small":
            return too_small_note(self.width, self.height)
        return {"embedded": "invisible watermark embedded", "off": "invisible watermark off (operator)"}[self.status]


@dataclass(frozen=True)
class Reading:
    """What the reader found: `checked` False when the image is too small to carry the mark."""

    checked: bool
    found: bool
    payload: str | None = None  # "NB1:1a2b3c4d5e": tag and image-id bits, when found
    tag_errors: int | None = None
    bits: str | None = None  # the 64 bits read (hex), found or not
    scale: float | None = None  # the rescale at which it was found (1.0: as given)
    note: str = ""

    def to_dict(self) -> dict:
        return {"checked": self.checked, "found": self.found, "payload": self.payload, "note": self.note}


def too_small_note(width: int, height: int) -> str:
    return (f"too small for the invisible watermark ({width}×{height} px; it needs at least 256×256 = "
            f"{MIN_PIXELS} pixels): only the C2PA manifest marks it")


def payload_for(tag: str, image_id: str) -> bytes:
    return tag.encode("ascii") + hashlib.sha256(image_id.encode()).digest()[: PAYLOAD_BYTES - TAG_BYTES]


def _bgr(picture: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(picture.convert("RGB"))[:, :, ::-1])


class Watermark:
    def __init__(self, tag: str = "NB1", method: str = "dwtDctSvd") -> None:
        self.tag = tag
        self.method = method

    def embed(self, picture: Image.Image, image_id: str) -> tuple[Image.Image, Embedding]:
        """The picture with the mark in its pixels (or unchanged, `too_small`)."""
        from imwatermark import WatermarkEncoder

        width, height = picture.size
        if width * height < MIN_PIXELS:
            return picture, Embedding("too_small", width, height)
        encoder = WatermarkEncoder()
        encoder.set_watermark("bytes", payload_for(self.tag, image_id))
        marked = encoder.encode(_bgr(picture), self.method)
        return Image.fromarray(np.ascontiguousarray(marked[:, :, ::-1])), Embedding("embedded", width, height)

    def _bits(self, picture: Image.Image) -> bytes:
        from imwatermark import WatermarkDecoder

        return WatermarkDecoder("bytes", PAYLOAD_BYTES * 8).decode(_bgr(picture), self.method)

    def _candidates(self, picture: Image.Image) -> list[tuple[float, Image.Image]]:
        width, height = picture.size
        scales = [1.0, 0.5, 2.0]
        short = min(width, height)
        scales += [side / short for side in MODEL_SIDES if side != short]
        seen: set[tuple[int, int]] = set()
        out = []
        for scale in scales:
            size = (round(width * scale), round(height * scale))
            if size in seen or size[0] * size[1] < MIN_PIXELS or size[0] * size[1] > 4096 * 4096:
                continue
            seen.add(size)
            out.append((scale, picture if scale == 1.0 else picture.resize(size, Image.Resampling.BICUBIC)))
        return out

    def read(self, picture: Image.Image) -> Reading:
        """Look for the mark as given, then at the likely original sizes; the first match wins."""
        picture = picture.convert("RGB")
        width, height = picture.size
        if width * height < MIN_PIXELS:
            return Reading(False, False, note=too_small_note(width, height))
        tag = np.unpackbits(np.frombuffer(self.tag.encode("ascii"), np.uint8))
        first: Reading | None = None
        for scale, candidate in self._candidates(picture):
            bits = self._bits(candidate)
            errors = int(np.count_nonzero(np.unpackbits(np.frombuffer(bits[:TAG_BYTES], np.uint8)) != tag))
            if errors <= TAG_TOLERANCE:
                return Reading(True, True, payload=f"{self.tag}:{bits[TAG_BYTES:].hex()}", tag_errors=errors,
                               bits=bits.hex(), scale=scale, note="invisible watermark found"
                               + ("" if scale == 1.0 else f" (after rescaling ×{scale:.3g})"))
            if first is None:
                first = Reading(True, False, tag_errors=errors, bits=bits.hex(), note="no invisible watermark found")
        return first or Reading(True, False, note="no invisible watermark found")

    @staticmethod
    def bit_accuracy(bits_hex: str | None, expected: bytes) -> float:
        """The share of the 64 payload bits read correctly (0.5 is chance)."""
        if bits_hex is None:
            return 0.0
        got = np.unpackbits(np.frombuffer(bytes.fromhex(bits_hex), np.uint8))
        want = np.unpackbits(np.frombuffer(expected, np.uint8))
        return float(np.mean(got == want))
