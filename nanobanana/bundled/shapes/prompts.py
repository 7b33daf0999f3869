"""The shapes world in words: vocabulary, caption phrasings and a parser of prompts into a `PromptSpec`.

A `PromptSpec` says what an image should show: one shape kind in one colour, repeated `count` times, on a
plain background, placed left/right/top/bottom/center when there is a single object. Conventions the
bundled model is trained on: no background named means white; no position named means center.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

# Palette in sRGB. Colours are far apart so the analyser can name them by nearest palette entry.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (245, 220, 30),
    "green": (40, 170, 60),
    "cyan": (40, 210, 230),
    "blue": (35, 70, 225),
    "purple": (135, 45, 190),
    "pink": (245, 135, 200),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
SHAPE_COLOURS = [c for c in COLOURS if c != "gray"]
BACKGROUNDS = list(COLOURS)
SHAPES = ["circle", "square", "triangle", "star"]
POSITIONS = ["center", "left", "right", "top", "bottom"]
COUNTS = [1, 2, 3]
DEFAULT_BACKGROUND = "white"
DEFAULT_POSITION = "center"

NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
PLURALS = {f"{shape}s": shape for shape in SHAPES}
SYNONYMS = {"grey": "gray", "middle": "center", "centre": "center"}
POSITION_PHRASES = {
    "center": ["in the center", "in the middle", "at the center"],
    "left": ["on the left", "at the left"],
    "right": ["on the right", "at the right"],
    "top": ["at the top", "on the top"],
    "bottom": ["at the bottom", "on the bottom"],
}

# {obj}: "a red circle" / "two red circles"; {bare}: "red circle(s)"; {pos}: " on the left" or "";
# {bg}: "blue"; {a_bg}: "a blue" / "an orange". Templates without a background are only used for the
# default (white) background. Both orders (object first, background first) are in training.
TRAIN_TEMPLATES = [
    "{obj}{pos} on {a_bg} background",
    "{bare}{pos}, {bg} background",
    "{obj}{pos} on {bg}",
    "a picture of {obj}{pos} on {a_bg} background",
    "{obj}{pos} with {a_bg} background",
    "an image of {bare}{pos} on {bg}",
    "{bg} background, {obj}{pos}",
    "{a_bg} background with {obj}{pos}",
]
TRAIN_TEMPLATES_NO_BG = ["{obj}{pos}", "{bare}{pos}", "a picture of {obj}{pos}"]
# Phrasings never seen in training: the same words in new combinations, to measure generalisation.
HELD_OUT_TEMPLATES = [
    "{bare}{pos} on {bg} background",
    "on {a_bg} background, {obj}{pos}",
    "an image of {obj}{pos} with {a_bg} background",
    "{bg} background with {bare}{pos}",
]

VOCABULARY = sorted(
    set(COLOURS)
    | set(SHAPES)
    | set(PLURALS)
    | set(NUMBER_WORDS)
    | set(SYNONYMS)
    | {"center", "left", "right", "top", "bottom", "middle"}
    | {"on", "the", "in", "at", "of", "with", "and", "picture", "image", "photo", "background", ","}
)


@dataclass(frozen=True)
class PromptSpec:
    """What an image should show. `None` fields were not stated in the prompt (scoring skips them)."""

    colour: str | None
    shape: str | None
    background: str | None = None
    position: str | None = None
    count: int | None = None
    # A second, different object ("a red circle and a blue square"): (colour, shape), drawn on the right.
    second: tuple[str, str] | None = None

    def filled(self) -> PromptSpec:
        """The spec with the training conventions applied: white background, center, one object."""
        return replace(
            self,
            background=self.background or DEFAULT_BACKGROUND,
            position=self.position or (DEFAULT_POSITION if (self.count or 1) == 1 else None),
            count=2 if self.second else (self.count or 1),
        )


def _words(text: str) -> list[str]:
    words = re.findall(r"[a-z]+|,", text.lower())
    return [SYNONYMS.get(w, w) for w in words]


def parse_prompt(text: str) -> PromptSpec:
    """Read the colour, shape, background, position and count a prompt asks for.

    "two blue stars on a black background" -> PromptSpec("blue", "star", "black", None, 2). The colour
    right before the word "background" (or after "on", as in "a red circle on blue") is the background;
    the first other colour is the object's. "and" after a shape starts a second object: "a red circle and
    a blue square on white" -> red circle, second (blue, square), count 2.
    """
    words = _words(text)
    colours: list[str | None] = [None, None]
    shapes: list[str | None] = [None, None]
    background = position = None
    count = None
    part = 0
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        prev = words[i - 1] if i > 0 else ""
        if word == "and" and part == 0 and shapes[0] is not None:
            part = 1
        elif word in COLOURS:
            if nxt == "background" or (prev == "on" and nxt not in SHAPES and nxt not in PLURALS):
                background = background or word
            elif colours[part] is None:
                colours[part] = word
            else:
                background = background or word
        elif word in SHAPES or word in PLURALS:
            shapes[part] = shapes[part] or PLURALS.get(word, word)
            if word in PLURALS and count is None and part == 0:
                count = 2
        elif word in NUMBER_WORDS and word not in {"a", "an"} and part == 0:
            count = NUMBER_WORDS[word]
        elif word in {"left", "right", "top", "bottom", "center"}:
            position = word
    second = None
    if shapes[1] is not None and colours[1] is not None and (colours[1], shapes[1]) != (colours[0], shapes[0]):
        second = (colours[1], shapes[1])
        count, position = 2, None
    if count is None and shapes[0] is not None:
        count = 1
    return PromptSpec(colours[0], shapes[0], background, position, count, second)


def _object_phrase(colour: str, shape: str, n: int) -> tuple[str, str]:
    """("a red circle", "red circle") or ("two red circles", "two red circles")."""
    noun = shape + ("s" if n > 1 else "")
    article = "an" if colour[0] in "aeiou" else "a"
    obj = f"{article} {colour} {noun}" if n == 1 else f"{COUNT_WORDS[n]} {colour} {noun}"
    return obj, (f"{colour} {noun}" if n == 1 else obj)


def caption(spec: PromptSpec, template: str) -> str:
    """Write `spec` with one template (see `TRAIN_TEMPLATES`); position is said only for one object."""
    spec = spec.filled()
    n = spec.count
    if spec.second:  # "a red circle and a blue square" / "red circle and blue square"
        obj, bare = _object_phrase(spec.colour, spec.shape, 1)
        obj2, bare2 = _object_phrase(*spec.second, 1)
        obj, bare = f"{obj} and {obj2}", f"{bare} and {bare2}"
    else:
        obj, bare = _object_phrase(spec.colour, spec.shape, n)
    pos = ""
    if n == 1 and spec.position != DEFAULT_POSITION:
        pos = " " + POSITION_PHRASES[spec.position][0]
    a_bg = f"{'an' if spec.background[0] in 'aeiou' else 'a'} {spec.background}"
    text = template.format(obj=obj, bare=bare, pos=pos, bg=spec.background, a_bg=a_bg)
    return text


def random_caption(spec: PromptSpec, rng: random.Random, templates: list[str] | None = None) -> str:
    """A training caption for `spec`: a random template and position phrasing; the background may be left
    unsaid when it is white, and "center" is said or not at random."""
    spec = spec.filled()
    if templates is None:
        templates = TRAIN_TEMPLATES + (TRAIN_TEMPLATES_NO_BG if spec.background == DEFAULT_BACKGROUND else [])
        if spec.background == DEFAULT_BACKGROUND and rng.random() < 0.3:
            templates = TRAIN_TEMPLATES_NO_BG
    text = caption(spec, rng.choice(templates))
    if spec.count == 1 and not spec.second:
        phrases = POSITION_PHRASES[spec.position]
        said = phrases[0]
        if spec.position == DEFAULT_POSITION:
            if rng.random() < 0.25:
                obj_end = text.find(spec.shape) + len(spec.shape)
                return text[:obj_end] + " " + rng.choice(phrases) + text[obj_end:]
            return text
        return text.replace(said, rng.choice(phrases), 1)
    return text
