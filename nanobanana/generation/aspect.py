"""The aspect-ratio presets (the ten by default, or the model's own list), mapped to sizes native to it.

A preset keeps about the model's base pixel count (base_resolution²), rounded to the size multiple its
VAE and UNet/transformer need, and never below `min_short_side` on the short edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nanobanana.errors import InvalidRequest
from nanobanana.generation.config import ASPECT_RATIOS


@dataclass(frozen=True)
class AspectSize:
    ratio: str
    width: int
    height: int
    size: str = ""  # a remote model's size label ("2K"); "" for local models
    is_default_size: bool = True

    @property
    def label(self) -> str:
        """What the UI shows: "16:9 · 1344×768" (a remote model: "16:9 · 2K · 2752×1536", about)."""
        if self.size:
            return f"{self.ratio} · {self.size} · about {self.width}×{self.height}"
        return f"{self.ratio} · {self.width}×{self.height}"

    @property
    def value(self) -> str:
        """What a choice of it sends: the ratio, or "16:9@2K" for a remote model's other sizes."""
        return self.ratio if self.is_default_size else f"{self.ratio}@{self.size}"


def split_choice(value: str | None) -> tuple[str | None, str | None]:
    """An aspect choice ("16:9" or "16:9@2K") as (ratio, size label or None)."""
    if not value:
        return None, None
    ratio, _, size = value.partition("@")
    return ratio, size or None


def _parse(ratio: str) -> float:
    w, h = (int(part) for part in ratio.split(":"))
    return w / h


def size_for(ratio: str, base_resolution: int, multiple: int, min_short_side: int = 0,
             ratios: Sequence[str] = ASPECT_RATIOS) -> AspectSize:
    if ratio not in ratios:
        raise InvalidRequest(f"Aspect ratio {ratio!r} is not offered; choose one of: {', '.join(ratios)}.")
    r = _parse(ratio)
    area = base_resolution * base_resolution
    width, height = math.sqrt(area * r), math.sqrt(area / r)
    short = min(width, height)
    if short < min_short_side:
        width, height = width * min_short_side / short, height * min_short_side / short

    def snap(x: float, floor: int) -> int:
        return max(multiple, math.ceil(floor / multiple) * multiple, round(x / multiple) * multiple)

    floor_w = min_short_side if width <= height else 0
    floor_h = min_short_side if height <= width else 0
    return AspectSize(ratio, snap(width, floor_w), snap(height, floor_h))


def all_sizes(base_resolution: int, multiple: int, min_short_side: int = 0,
              ratios: Sequence[str] = ASPECT_RATIOS) -> list[AspectSize]:
    return [size_for(r, base_resolution, multiple, min_short_side, ratios) for r in ratios]


def closest_ratio(width: int, height: int, ratios: Sequence[str] = ASPECT_RATIOS) -> str:
    """The preset whose ratio is nearest (in log space) to an image's own."""
    target = math.log(width / height)
    return min(ratios, key=lambda r: abs(math.log(_parse(r)) - target))
