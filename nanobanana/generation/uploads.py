"""Reading uploaded images safely: format allow-list, byte and pixel limits, no decompression bombs.

Uploads are decoded in memory and never written to disk.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from nanobanana.errors import InvalidImage
from nanobanana.generation.config import Limits


def _read_bytes(source: bytes | str | Path, limits: Limits) -> bytes:
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():  # the message names no server path
            raise InvalidImage(f"The uploaded file {path.name!r} is no longer here; upload it again.")
        if path.stat().st_size > limits.max_upload_bytes:
            raise InvalidImage(_too_big_message(path.stat().st_size, limits))
        data = path.read_bytes()
    if len(data) > limits.max_upload_bytes:
        raise InvalidImage(_too_big_message(len(data), limits))
    if not data:
        raise InvalidImage("The uploaded file is empty.")
    return data


def _too_big_message(size: int, limits: Limits) -> str:
    return f"The uploaded file is {size / 1e6:.1f} MB; the limit is {limits.max_upload_bytes / 1e6:.0f} MB."


def load_image(source: bytes | str | Path | Image.Image, limits: Limits) -> Image.Image:
    """Decode an upload into an RGB image, or raise `InvalidImage` with a message the user can act on."""
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, limits)
        return ImageOps.exif_transpose(source).convert("RGB")
    data = _read_bytes(source, limits)
    with _decoding(limits):
        _probe(data, limits)
        # verify() leaves the file unusable, so decode from a fresh handle.
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")


def load_images(sources: Sequence[bytes | str | Path], limits: Limits, max_side: int | None = None):
    """Several uploads for one request, cheapest checks first: the count before any file is read, every
    file's size and header before any is decoded; each decoded image is shrunk to `max_side` at once, so
    a request holds at most one full-size decode in memory."""
    if len(sources) > limits.max_input_images:
        raise InvalidImage(f"Upload at most {limits.max_input_images} images; got {len(sources)}.")
    data = [_read_bytes(source, limits) for source in sources]
    with _decoding(limits):
        for item in data:
            _probe(item, limits)
    pictures = []
    for item in data:
        picture = load_image(item, limits)
        if max_side and max(picture.size) > max_side:
            picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        pictures.append(picture)
    return pictures


def _probe(data: bytes, limits: Limits) -> None:
    """Format and pixel count from the header, and a structural check, without decoding the pixels."""
    with Image.open(io.BytesIO(data)) as probe:
        _check_pixels(probe.width, probe.height, limits)
        if probe.format not in limits.upload_formats:
            raise InvalidImage(
                f"{probe.format or 'This'} images are not accepted; upload one of: {', '.join(limits.upload_formats)}."
            )
        probe.verify()


@contextlib.contextmanager
def _decoding(limits: Limits) -> Iterator[None]:
    """Turn Pillow's failures into `InvalidImage` messages."""
    allowed = ", ".join(limits.upload_formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(
            f"The image is too large to decode safely; the limit is {limits.max_upload_pixels / 1e6:.0f} "
            "megapixels. Downscale it and try again."
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"The file is not an image we can read; upload one of: {allowed}.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"The image is corrupt or truncated and could not be decoded ({exc}).") from exc


def _check_pixels(width: int, height: int, limits: Limits) -> None:
    if width < 1 or height < 1:
        raise InvalidImage("The image has no pixels.")
    if width * height > limits.max_upload_pixels:
        raise InvalidImage(
            f"The image is {width}×{height} = {width * height / 1e6:.0f} megapixels; the limit is "
            f"{limits.max_upload_pixels / 1e6:.0f} megapixels. Downscale it and try again."
        )
