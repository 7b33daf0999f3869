"""A tiny world of coloured shapes: render it, describe it, and read it back from any image.

Used to train the bundled model (`nanobanana.bundled.train`), by its tests and by eval.

Public API:

- `PromptSpec(colour, shape, background=None, position=None, count=None, second=None)`: what an image should
  show; `second=(colour, shape)` is a second, different object ("a red circle and a blue square", drawn on
  the right); `.filled()` applies the conventions (white background, center, one object).
- `parse_prompt(text) -> PromptSpec`: "two blue stars on a black background" -> blue, star, black, count 2.
- `render(spec, size=64, seed=0) -> PIL.Image`: an anti-aliased picture of a spec.
- `analyse(image) -> Analysis`: `.background`, `.objects` (largest first: colour, shape, position, area,
  centre, bbox, fill, solidity, corners), `.count`, `.main`.
- `score(analysis, spec) -> dict[str, bool]`: colour, shape, colour_shape, background, position, count
  (only for the fields `spec` states; with a `second` object: both kinds found, in either place, plus `order`).
- `caption(spec, template)`, `random_caption(spec, rng)`, `random_spec(rng, exclude, mix)`,
  `held_out_combos()`: the training captions and data distribution (`COUNT_MIX`, the 64 px model's shares of
  one/two/three/two-different objects; `MULTI_OBJECT_MIX`, the 256 px fine-tune's);
  `TRAIN_TEMPLATES` / `HELD_OUT_TEMPLATES` are the phrasings
  seen / never seen in training.
- Vocabulary: `COLOURS` (name -> RGB), `SHAPE_COLOURS`, `BACKGROUNDS`, `SHAPES`, `POSITIONS`, `COUNTS`,
  `VOCABULARY` (every word the bundled model's tokenizer knows).
"""

from nanobanana.bundled.shapes.analyser import (
    Analysis,
    ShapeObject,
    analyse,
    classify_shape,
    count_corners,
    locate,
    score,
)
from nanobanana.bundled.shapes.dataset import (
    COUNT_MIX,
    MULTI_OBJECT_MIX,
    PAIR_HEAVY_MIX,
    all_single_combos,
    held_out_combos,
    random_spec,
    render,
)
from nanobanana.bundled.shapes.prompts import (
    BACKGROUNDS,
    COLOURS,
    COUNTS,
    HELD_OUT_TEMPLATES,
    POSITIONS,
    SHAPE_COLOURS,
    SHAPES,
    TRAIN_TEMPLATES,
    VOCABULARY,
    PromptSpec,
    caption,
    parse_prompt,
    random_caption,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "COUNTS",
    "COUNT_MIX",
    "HELD_OUT_TEMPLATES",
    "MULTI_OBJECT_MIX",
    "PAIR_HEAVY_MIX",
    "POSITIONS",
    "SHAPES",
    "SHAPE_COLOURS",
    "TRAIN_TEMPLATES",
    "VOCABULARY",
    "Analysis",
    "PromptSpec",
    "ShapeObject",
    "all_single_combos",
    "analyse",
    "caption",
    "classify_shape",
    "count_corners",
    "held_out_combos",
    "locate",
    "parse_prompt",
    "random_caption",
    "random_spec",
    "render",
    "score",
]
