"""The invisible watermark: 64 bits in the pixels, read back after the file's metadata is gone.

Payload: the service tag (4 ASCII bytes, `watermark.tag`) + the first 4 bytes of SHA-256(image id). The bits
go into the blue-difference chroma (U) with `invisible-watermark`'s DWT-DCT-SVD algorithm (`EmbedDwtDctSvd`:
Haar DWT, then per 4×4 block of its low band, i.e. per 8×8 pixels, the largest singular value of the
block's DCT quantised to carry one bit, each bit repeated over many blocks; no model weights). Two
departures from the library's own code, both checked against it in tests/provenance: the blocks are
processed all at once with numpy (the library loops in Python: 0.7 s per 1024² image here, now a tenth
of that), and the colour conversion is ours, in floating point: the library writes the changed channel
back into 8-bit YUV, where values past 0 or 255 wrap around, so saturated areas (a white background)
lost the mark. Where a changed U would push a pixel out of range, the luminance moves instead (the reader
only looks at U).

It needs at least 256×256 pixels: a smaller image is reported as too small, never silently left unmarked.
A reading counts as found when at most 5 of the tag's 32 bits differ (a random image passes with
probability ~6e-5 per try); the reader also tries the image rescaled back to the sizes it was likely made
at (×0.5, ×2, common model sizes), because a resized image no longer lines up with the embedding grid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

MIN_PIXELS = 256 * 256  # what the library accepts; fewer blocks carry too few repeats of each bit
PAYLOAD_BYTES = 8
TAG_BYTES = 4
TAG_TOLERANCE = 5  # bits of the tag that may be wrong
MODEL_SIDES = (256, 512, 768, 1024)
# RGB -> YUV (BT.601) and back, in floating point.
_YUV = np.array([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])
_RGB = np.linalg.inv(_YUV)


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


def _rgb_and_u(picture: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The picture as float RGB, and its U channel (the only one the mark lives in)."""
    rgb = np.asarray(picture.convert("RGB"), np.float64)
    return rgb, rgb @ _YUV[1]


def _dct_matrix(n: int = 4) -> np.ndarray:
    """The orthonormal DCT-II matrix (what `cv2.dct` computes on an n×n block: D @ B @ D.T)."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = np.sqrt(2 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2)
    return d


_D = _dct_matrix()


def _blocks(approx: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The 4×4 blocks of the low band in the library's order (row by row), as an (N, 4, 4) array."""
    rows, cols = approx.shape[0] // 4, approx.shape[1] // 4
    blocks = approx[: rows * 4, : cols * 4].reshape(rows, 4, cols, 4).transpose(0, 2, 1, 3).reshape(-1, 4, 4)
    return blocks, rows, cols


def embed_bits(approx: np.ndarray, bits: list[int], scale: float) -> None:
    """`EmbedDwtDctSvd.encode_frame`, vectorised: block k carries bits[k % len(bits)]; changes `approx`."""
    blocks, rows, cols = _blocks(approx)
    if not len(blocks):
        return
    coefficients = _D @ blocks @ _D.T
    u, s, vh = np.linalg.svd(coefficients)
    wanted = np.asarray(bits, np.float64)[np.arange(len(blocks)) % len(bits)]
    top = (s[:, 0] // scale + 0.25 + 0.5 * wanted) * scale
    # Only the largest singular value changes: add its difference along its own singular vectors.
    coefficients += (top - s[:, 0])[:, None, None] * (u[:, :, :1] @ vh[:, :1, :])
    changed = _D.T @ coefficients @ _D
    approx[: rows * 4, : cols * 4] = changed.reshape(rows, cols, 4, 4).transpose(0, 2, 1, 3).reshape(rows * 4, cols * 4)


def read_bits(approx: np.ndarray, n: int, scale: float) -> np.ndarray:
    """`EmbedDwtDctSvd.decode_frame` vectorised: per bit, the share of its blocks that read 1."""
    blocks, _, _ = _blocks(approx)
    if not len(blocks):
        return np.zeros(n)
    top = np.linalg.svd(_D @ blocks @ _D.T, compute_uv=False)[:, 0]
    votes = (np.mod(top, scale) > scale * 0.5).astype(np.float64)
    index = np.arange(len(blocks)) % n
    return np.bincount(index, weights=votes, minlength=n) / np.maximum(np.bincount(index, minlength=n), 1)


def _lowpass(channel: np.ndarray) -> tuple[np.ndarray, tuple, tuple[int, int]]:
    import pywt

    h, w = channel.shape[0] // 4 * 4, channel.shape[1] // 4 * 4
    approx, details = pywt.dwt2(channel[:h, :w], "haar")
    return approx, details, (h, w)


class Watermark:
    def __init__(self, tag: str = "NBAI", strength: float = 48) -> None:
        self.tag = tag
        self.strength = strength  # the quantisation step: larger survives more, and shows more

    def embed(self, picture: Image.Image, image_id: str) -> tuple[Image.Image, Embedding]:
        """The picture with the mark in its pixels (or unchanged, `too_small`)."""
        import pywt

        width, height = picture.size
        if width * height < MIN_PIXELS:
            return picture, Embedding("too_small", width, height)
        bits = [int(b) for b in np.unpackbits(np.frombuffer(payload_for(self.tag, image_id), np.uint8))]
        rgb, u = _rgb_and_u(picture)
        approx, details, (h, w) = _lowpass(u)
        embed_bits(approx, bits, self.strength)
        change = pywt.idwt2((approx, details), "haar") - u[:h, :w]
        rgb[:h, :w] += change[:, :, None] * _RGB[:, 1]  # Y and V kept: only U moves
        # Out of range: shift all three channels (the luminance) back in, which leaves U as marked.
        r, g, b = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
        high = np.maximum(np.maximum(np.maximum(r, g), b) - 255, 0)
        low = np.maximum(-np.minimum(np.minimum(r, g), b), 0)
        rgb += (low - high)[:, :, None]
        marked = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
        return marked, Embedding("embedded", width, height)

    def _bits(self, picture: Image.Image) -> bytes:
        approx, _, _ = _lowpass(_rgb_and_u(picture)[1])
        bits = read_bits(approx, PAYLOAD_BYTES * 8, self.strength) > 0.5
        return np.packbits(bits.astype(np.uint8)).tobytes()

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
        if width * height < MIN_PIXELS // 4:  # not even a marked image halved
            return Reading(False, False, note=too_small_note(width, height))
        tag = np.unpackbits(np.frombuffer(self.tag.encode("ascii"), np.uint8))
        best: Reading | None = None  # the closest miss, for measuring bit accuracy
        for scale, candidate in self._candidates(picture):
            bits = self._bits(candidate)
            errors = int(np.count_nonzero(np.unpackbits(np.frombuffer(bits[:TAG_BYTES], np.uint8)) != tag))
            if errors <= TAG_TOLERANCE:
                return Reading(True, True, payload=f"{self.tag}:{bits[TAG_BYTES:].hex()}", tag_errors=errors,
                               bits=bits.hex(), scale=scale, note="invisible watermark found"
                               + ("" if scale == 1.0 else f" (after rescaling ×{scale:.3g})"))
            if best is None or errors < (best.tag_errors or 0):
                best = Reading(True, False, tag_errors=errors, bits=bits.hex(), scale=scale,
                               note="no invisible watermark found")
        return best or Reading(True, False, note="no invisible watermark found")

    @staticmethod
    def bit_accuracy(bits_hex: str | None, expected: bytes) -> float:
        """The share of the 64 payload bits read correctly (0.5 is chance)."""
        if bits_hex is None:
            return 0.0
        got = np.unpackbits(np.frombuffer(bytes.fromhex(bits_hex), np.uint8))
        want = np.unpackbits(np.frombuffer(expected, np.uint8))
        return float(np.mean(got == want))
