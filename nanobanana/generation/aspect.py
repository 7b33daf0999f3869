"""The ten aspect-ratio presets, mapped to sizes native to the loaded model.

A preset keeps about the model's base pixel count (base_resolution²), rounded to the size multiple its
VAE and UNet/transformer need, and never below `min_short_side` on the short edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nanobanana.errors import InvalidRequest
from nanobanana.generation.config import ASPECT_RATIOS


@dataclass(frozen=True)
class AspectSize:
    ratio: str
    width: int
    height: int

    @property
    def label(self) -> str:
        """What the UI shows: "16:9 · 1344×768"."""
        return f"{self.ratio} · {self.width}×{self.height}"


def _parse(ratio: str) -> float:
    w, h = (int(part) for part in ratio.split(":"))
    return w / h


def size_for(ratio: str, base_resolution: int, multiple: int, min_short_side: int = 0) -> AspectSize:
    if ratio not in ASPECT_RATIOS:
        raise InvalidRequest(f"Aspect ratio {ratio!r} is not offered; choose one of: {', '.join(ASPECT_RATIOS)}.")
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


def all_sizes(base_resolution: int, multiple: int, min_short_side: int = 0) -> list[AspectSize]:
    return [size_for(r, base_resolution, multiple, min_short_side) for r in ASPECT_RATIOS]


def closest_ratio(width: int, height: int) -> str:
    """The preset whose ratio is nearest (in log space) to an image's own."""
    target = math.log(width / height)
    return min(ASPECT_RATIOS, key=lambda r: abs(math.log(_parse(r)) - target))
