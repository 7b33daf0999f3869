"""Read a picture of coloured shapes back: background, objects (colour, shape, place) and their count.

Deterministic and model-free, so it can score any image: the background is the commonest colour on the
border; objects are connected regions that differ from it; a region's shape comes from how much of its
bounding box and convex hull it fills.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from nanobanana.bundled.shapes.prompts import COLOURS, PromptSpec

_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[n] for n in _NAMES], dtype=np.float32)
MIN_OBJECT_FRACTION = 0.01  # smaller regions are specks, not objects
BACKGROUND_DISTANCE = 60.0  # RGB distance from the background that marks a pixel as foreground


@dataclass(frozen=True)
class ShapeObject:
    """One object found in the image. Centre and bounding box are fractions of the image size."""

    colour: str
    shape: str
    position: str
    area: float
    centre: tuple[float, float]
    bbox: tuple[float, float, float, float]
    fill: float
    solidity: float
    corners: int


@dataclass(frozen=True)
class Analysis:
    """What `analyse` saw. `objects` are sorted largest first."""

    background: str
    objects: list[ShapeObject] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def main(self) -> ShapeObject | None:
        return self.objects[0] if self.objects else None


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette name nearest to one RGB triple."""
    distances = np.linalg.norm(_PALETTE - np.asarray(rgb, dtype=np.float32), axis=1)
    return _NAMES[int(np.argmin(distances))]


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected regions of a boolean mask, as arrays of (row, col)."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    regions = []
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        queue, pixels = deque([(r0, c0)]), []
        while queue:
            r, c = queue.popleft()
            pixels.append((r, c))
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    queue.append((rr, cc))
        regions.append(np.array(pixels))
    return regions


def _hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of 2-D points (Andrew's monotone chain + shoelace)."""
    pts = sorted({(float(x), float(y)) for x, y in points})
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1])
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def count_corners(rows: np.ndarray, cols: np.ndarray, bins: int = 48, prominence: float = 0.08) -> int:
    """Outward points of a region: peaks of its radius-by-angle profile that stand out from the +-30 degree
    neighbourhood (a triangle has 3, a star 5, a circle none; pixel squares give 4 or more)."""
    cy, cx = rows.mean() + 0.5, cols.mean() + 0.5
    pts = np.concatenate([np.stack([cols + dx, rows + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    angle = np.arctan2(pts[:, 1] - cy, pts[:, 0] - cx)
    radius = np.hypot(pts[:, 1] - cy, pts[:, 0] - cx)
    profile = np.zeros(bins)
    np.maximum.at(profile, ((angle + np.pi) / (2 * np.pi) * bins).astype(int) % bins, radius)
    profile = (np.roll(profile, 1) + profile + np.roll(profile, -1)) / 3
    profile = profile / profile.mean()
    half = bins // 12
    windows = np.stack([np.roll(profile, k) for k in range(-half, half + 1)])
    is_peak = (profile >= windows.max(axis=0)) & (profile - windows.min(axis=0) > prominence)
    return int(is_peak.sum())


def classify_shape(fill: float, solidity: float, corners: int) -> str:
    """Shape from the fill of the bounding box (square 1.0, circle 0.79, triangle 0.5), of the convex hull
    (a star fills ~0.56 of it, the others ~1) and the corner count; the last two keep blurred stars and
    triangles (whose fills drift towards a circle's) apart from circles."""
    if solidity < 0.78:
        return "star"
    if fill > 0.87:
        return "square"
    if corners == 3 and fill < 0.72:
        return "triangle"
    if corners >= 4 and solidity < 0.91:
        return "star"
    if fill < 0.64:
        return "triangle"
    return "circle"


def locate(cx: float, cy: float) -> str:
    """center when near the middle, else the side the centre is furthest towards."""
    dx, dy = cx - 0.5, cy - 0.5
    if max(abs(dx), abs(dy)) < 0.13:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def analyse(image: Image.Image) -> Analysis:
    """Background colour and the objects of an RGB image (any size; 64 px or more reads best)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = nearest_colour(bg_rgb)
    distance = np.linalg.norm(pixels - bg_rgb, axis=2)
    objects = []
    for region in _components(distance > BACKGROUND_DISTANCE):
        if len(region) < MIN_OBJECT_FRACTION * h * w:
            continue
        rows, cols = region[:, 0], region[:, 1]
        # The region's colour from its core: pixels furthest from the background (edges are blended).
        d = distance[rows, cols]
        core = d >= np.quantile(d, 0.5)
        core_rgb = np.median(pixels[rows[core], cols[core]], axis=0)
        colour = nearest_colour(core_rgb)
        # Measure the shape at the half-way contour between object and background colours, so blur and
        # anti-aliasing (which fatten a low-threshold mask) do not round off corners and star points.
        half = d >= 0.5 * float(np.linalg.norm(core_rgb - bg_rgb))
        if half.sum() >= 3:
            rows, cols = rows[half], cols[half]
        height = rows.max() - rows.min() + 1
        width = cols.max() - cols.min() + 1
        fill = len(rows) / float(height * width)
        hull = _hull_area(np.concatenate([np.stack([cols + dx, rows + dy], axis=1) for dx in (0, 1) for dy in (0, 1)]))
        solidity = len(rows) / hull if hull else 1.0
        corners_found = count_corners(rows, cols)
        cx, cy = (cols.mean() + 0.5) / w, (rows.mean() + 0.5) / h
        objects.append(
            ShapeObject(
                colour=colour,
                shape=classify_shape(fill, solidity, corners_found),
                position=locate(cx, cy),
                area=len(region) / float(h * w),
                centre=(float(cx), float(cy)),
                bbox=(cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h),
                fill=float(fill),
                solidity=float(solidity),
                corners=corners_found,
            )
        )
    objects.sort(key=lambda o: o.area, reverse=True)
    return Analysis(background=background, objects=objects)


def score(analysis: Analysis, spec: PromptSpec) -> dict[str, bool]:
    """Which stated parts of `spec` the image shows: colour, shape, colour_shape, background, position,
    count. Fields that are None in `spec` are left out (use `spec.filled()` to check the conventions)."""
    if spec.second is not None:
        return _score_pair(analysis, spec)
    main = analysis.main
    result: dict[str, bool] = {}
    if spec.colour is not None:
        result["colour"] = main is not None and main.colour == spec.colour
    if spec.shape is not None:
        result["shape"] = main is not None and main.shape == spec.shape
    if spec.colour is not None and spec.shape is not None:
        result["colour_shape"] = result["colour"] and result["shape"]
    if spec.background is not None:
        result["background"] = analysis.background == spec.background
    if spec.position is not None and (spec.count or 1) == 1:
        result["position"] = main is not None and main.position == spec.position
    if spec.count is not None:
        result["count"] = analysis.count == spec.count
    return result


def _score_pair(analysis: Analysis, spec: PromptSpec) -> dict[str, bool]:
    """Two different objects: the two largest must be the two asked for, in either place; `order` checks
    the first-named one is on the left, as the training pictures draw it."""
    wanted = sorted([(spec.colour, spec.shape), spec.second])
    found = analysis.objects[:2]
    seen = sorted((o.colour, o.shape) for o in found)
    result = {
        "colour": sorted(c for c, _ in seen) == sorted(c for c, _ in wanted),
        "shape": sorted(s for _, s in seen) == sorted(s for _, s in wanted),
        "colour_shape": seen == wanted,
        "count": analysis.count == 2,
    }
    if spec.background is not None:
        result["background"] = analysis.background == spec.background
    left = min(found, key=lambda o: o.centre[0]) if len(found) == 2 else None
    result["order"] = left is not None and (left.colour, left.shape) == (spec.colour, spec.shape) and seen == wanted
    return result


def edge_width(image: Image.Image, side: int = 256) -> float | None:
    """How soft the main object's outline is: pixels part-way (10-90 %) between the object's and the
    background's colours near the outline, per outline pixel, in pixels of an image `side` px wide (a 64 px
    picture shown at 256 px counts 4x). A supersampled render scores about 1; None without an object."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    bg = np.median(border, axis=0)
    distance = np.linalg.norm(pixels - bg, axis=2)
    regions = [r for r in _components(distance > BACKGROUND_DISTANCE) if len(r) >= MIN_OBJECT_FRACTION * h * w]
    if not regions:
        return None
    region = max(regions, key=len)
    d = distance[region[:, 0], region[:, 1]]
    core = d >= np.quantile(d, 0.5)
    direction = np.median(pixels[region[core, 0], region[core, 1]], axis=0) - bg
    t = np.clip(((pixels - bg) @ direction) / float(direction @ direction), 0.0, 1.0)
    inside = t >= 0.5
    interior = np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
    outline = inside & ~interior
    near = outline.copy()
    for _ in range(max(2, w // 16)):  # the band around the outline where a soft edge can be
        near = near | np.roll(near, 1, 0) | np.roll(near, -1, 0) | np.roll(near, 1, 1) | np.roll(near, -1, 1)
    soft = near & (t > 0.1) & (t < 0.9)
    return float(soft.sum() / max(1, outline.sum()) * side / w)
