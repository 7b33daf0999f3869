"""Fixtures for the provenance tests: a `Provenance` on a temp data folder (its own local CA), and
pictures big enough to carry the watermark."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from nanobanana.bundled.shapes import random_spec, render
from nanobanana.provenance import Provenance, load_provenance_config


def picture(seed: int = 0, size: int = 256) -> Image.Image:
    """A shapes-world picture with a little grain, as a generated image has (flat colours alone are the
    watermark's worst case; the eval measures those too)."""
    base = np.asarray(render(random_spec(random.Random(seed)), size=size, seed=seed).convert("RGB"), np.float32)
    noise = np.random.default_rng(seed).normal(0, 6, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def provenance(tmp_path) -> Provenance:
    return Provenance(load_provenance_config({}), tmp_path / "data", {})
