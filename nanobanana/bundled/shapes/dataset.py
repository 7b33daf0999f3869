"""Procedural, anti-aliased pictures of coloured shapes, and the random specs training draws from."""

from __future__ import annotations

import itertools
import math
import random

from PIL import Image, ImageDraw

from nanobanana.bundled.shapes.prompts import (
    BACKGROUNDS,
    COLOURS,
    DEFAULT_BACKGROUND,
    POSITIONS,
    SHAPE_COLOURS,
    SHAPES,
    PromptSpec,
)

SUPERSAMPLE = 4
# Where a single object's centre goes, as fractions of width and height.
POSITION_CENTRES = {
    "center": (0.5, 0.5),
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
}


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Corner points of `shape` centred on (cx, cy) with half-size r; None for a circle."""
    if shape == "circle":
        return None
    if shape == "square":
        h = r * 0.88  # a square looks bigger than a circle of the same width
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)]
    if shape == "star":
        outer, inner = 1.08 * r, 0.45 * 1.08 * r
        points = []
        for k in range(10):
            radius = outer if k % 2 == 0 else inner
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + 0.08 * r + radius * math.sin(angle)))
        return points
    raise ValueError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")


def object_layout(spec: PromptSpec, rng: random.Random) -> list[tuple[float, float, float]]:
    """(cx, cy, r) of each object as fractions of the image side: one placed by position, several apart."""
    spec = spec.filled()
    if spec.count == 1:
        cx, cy = POSITION_CENTRES[spec.position]
        r = rng.uniform(0.19, 0.24) if spec.position == "center" else rng.uniform(0.17, 0.21)
        return [(cx + rng.uniform(-0.03, 0.03), cy + rng.uniform(-0.03, 0.03), r)]
    for _ in range(200):
        r = rng.uniform(0.12, 0.15)
        centres = [(rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)) for _ in range(spec.count)]
        if all(math.dist(a, b) > 2.7 * r for a, b in itertools.combinations(centres, 2)):
            return [(x, y, r) for x, y in centres]
    # A fixed row when random placement keeps overlapping (rare).
    xs = [0.2, 0.5, 0.8] if spec.count == 3 else [0.3, 0.7]
    return [(x, 0.5, 0.13) for x in xs]


def render(spec: PromptSpec, size: int = 64, seed: int = 0) -> Image.Image:
    """An RGB picture of `spec` (defaults filled in), `size` pixels square, anti-aliased by supersampling."""
    spec = spec.filled()
    if spec.colour not in COLOURS or spec.shape not in SHAPES:
        raise ValueError(f"render needs a colour and a shape, got {spec}")
    rng = random.Random(seed)
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), COLOURS[spec.background])
    draw = ImageDraw.Draw(image)
    fill = COLOURS[spec.colour]
    for fx, fy, fr in object_layout(spec, rng):
        cx, cy, r = fx * big, fy * big, fr * big
        polygon = shape_polygon(spec.shape, cx, cy, r)
        if polygon is None:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon(polygon, fill=fill)
    return image.reduce(SUPERSAMPLE)


def all_single_combos() -> list[tuple[str, str, str]]:
    """Every (colour, shape, background) with the object's colour different from the background."""
    return [(c, s, b) for c in SHAPE_COLOURS for s in SHAPES for b in BACKGROUNDS if c != b]


def held_out_combos(fraction: float = 0.08, seed: int = 1234) -> set[tuple[str, str, str]]:
    """(colour, shape, background) triples never shown in training, fixed by seed (used by eval)."""
    combos = all_single_combos()
    rng = random.Random(seed)
    rng.shuffle(combos)
    keep = {("red", "triangle", "white"), ("red", "circle", "blue"), ("blue", "circle", "white")}
    chosen = [c for c in combos if c not in keep]
    return set(chosen[: int(len(combos) * fraction)])


def random_spec(rng: random.Random, exclude: set[tuple[str, str, str]] | None = None) -> PromptSpec:
    """A training spec: mostly single objects, 40% of them centred; white background a quarter of the time."""
    exclude = exclude or set()
    while True:
        colour = rng.choice(SHAPE_COLOURS)
        shape = rng.choice(SHAPES)
        background = DEFAULT_BACKGROUND if rng.random() < 0.25 else rng.choice(BACKGROUNDS)
        if background == colour or (colour, shape, background) in exclude:
            continue
        count = rng.choices([1, 2, 3], weights=[0.8, 0.1, 0.1])[0]
        position = ("center" if rng.random() < 0.4 else rng.choice(POSITIONS)) if count == 1 else None
        return PromptSpec(colour, shape, background, position, count)
