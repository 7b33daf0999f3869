"""Procedural, anti-aliased pictures of coloured shapes, and the random specs training draws from."""

from __future__ import annotations

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
    """(cx, cy, r) of each object as fractions of the image side: one placed by position; two side by side
    (left to right in the order the prompt names them); three in a triangle. Few, regular layouts let a
    small model learn to count; the jitter keeps them from being one picture."""
    spec = spec.filled()
    if spec.count == 1:
        cx, cy = POSITION_CENTRES[spec.position]
        r = rng.uniform(0.19, 0.24) if spec.position == "center" else rng.uniform(0.17, 0.21)
        return [(cx + rng.uniform(-0.03, 0.03), cy + rng.uniform(-0.03, 0.03), r)]
    if spec.count == 2:
        r = rng.uniform(0.15, 0.18)
        cy = 0.5 + rng.uniform(-0.05, 0.05)
        return [(0.27 + rng.uniform(-0.03, 0.03), cy, r), (0.73 + rng.uniform(-0.03, 0.03), cy, r)]
    r = rng.uniform(0.13, 0.15)
    centres = [(0.5, 0.27), (0.26, 0.71), (0.74, 0.71)]
    return [(x + rng.uniform(-0.03, 0.03), y + rng.uniform(-0.03, 0.03), r) for x, y in centres]


def render(spec: PromptSpec, size: int = 64, seed: int = 0) -> Image.Image:
    """An RGB picture of `spec` (defaults filled in), `size` pixels square, anti-aliased by supersampling."""
    spec = spec.filled()
    if spec.colour not in COLOURS or spec.shape not in SHAPES:
        raise ValueError(f"render needs a colour and a shape, got {spec}")
    rng = random.Random(seed)
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), COLOURS[spec.background])
    draw = ImageDraw.Draw(image)
    kinds = [(spec.colour, spec.shape)] * spec.count if not spec.second else [(spec.colour, spec.shape), spec.second]
    for (fx, fy, fr), (colour, shape) in zip(object_layout(spec, rng), kinds, strict=True):
        cx, cy, r = fx * big, fy * big, fr * big
        fill = COLOURS[colour]
        polygon = shape_polygon(shape, cx, cy, r)
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


# Shares of one object, two alike, three alike and two different objects in the training data.
COUNT_MIX = {"one": 0.8, "two": 0.1, "three": 0.1, "pair": 0.0}
# The mix the 256 px model was fine-tuned on: far more multi-object pictures, the only way counts hold.
MULTI_OBJECT_MIX = {"one": 0.4, "two": 0.18, "three": 0.17, "pair": 0.25}
# The shares its UNet phase drew from that data after step 450: two different objects learn slowest.
PAIR_HEAVY_MIX = {"one": 0.3, "two": 0.15, "three": 0.15, "pair": 0.4}


def random_spec(
    rng: random.Random,
    exclude: set[tuple[str, str, str]] | None = None,
    mix: dict[str, float] | None = None,
) -> PromptSpec:
    """A training spec: by default mostly single objects, 40% of them centred; white background a quarter of
    the time. `mix` sets the shares of one / two / three alike / two different ("pair") objects."""
    exclude = exclude or set()
    mix = mix or COUNT_MIX
    while True:
        colour = rng.choice(SHAPE_COLOURS)
        shape = rng.choice(SHAPES)
        background = DEFAULT_BACKGROUND if rng.random() < 0.25 else rng.choice(BACKGROUNDS)
        if background == colour or (colour, shape, background) in exclude:
            continue
        kind = rng.choices(list(mix), weights=list(mix.values()))[0]
        if kind == "pair":
            second = (rng.choice(SHAPE_COLOURS), rng.choice(SHAPES))
            if second[0] == background or second == (colour, shape):
                continue
            return PromptSpec(colour, shape, background, None, 2, second)
        count = {"one": 1, "two": 2, "three": 3}[kind]
        position = ("center" if rng.random() < 0.4 else rng.choice(POSITIONS)) if count == 1 else None
        return PromptSpec(colour, shape, background, position, count)
