"""The shapes analyser reads back what the procedural renderer drew, and prompts parse into what they say."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nanobanana.bundled.shapes import (
    BACKGROUNDS,
    HELD_OUT_TEMPLATES,
    MULTI_OBJECT_MIX,
    POSITIONS,
    SHAPE_COLOURS,
    SHAPES,
    TRAIN_TEMPLATES,
    PromptSpec,
    analyse,
    caption,
    held_out_combos,
    parse_prompt,
    random_caption,
    random_spec,
    render,
    score,
)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_is_recognised_in_every_colour(shape):
    for i, colour in enumerate(SHAPE_COLOURS):
        background = BACKGROUNDS[(i * 3 + 1) % len(BACKGROUNDS)]
        background = "gray" if background == colour else background
        spec = PromptSpec(colour, shape, background, "center", 1)
        result = analyse(render(spec, 64, seed=i))
        assert (result.background, result.main.colour, result.main.shape) == (background, colour, shape)


@pytest.mark.parametrize("position", POSITIONS)
def test_single_objects_are_located(position):
    for seed, shape in enumerate(SHAPES):
        result = analyse(render(PromptSpec("blue", shape, "white", position, 1), 64, seed=seed))
        assert result.count == 1
        assert result.main.position == position


@pytest.mark.parametrize("count", [1, 2, 3])
def test_objects_are_counted(count):
    for seed, shape in enumerate(SHAPES * 3):
        result = analyse(render(PromptSpec("red", shape, "black", None, count), 64, seed=seed))
        assert result.count == count, (shape, seed)
        assert {o.shape for o in result.objects} == {shape}


def test_random_training_images_score_perfectly():
    rng = random.Random(7)
    for seed in range(120):
        spec = random_spec(rng).filled()
        assert all(score(analyse(render(spec, 64, seed)), spec).values()), spec


@pytest.mark.parametrize("size", [64, 256])
def test_multi_object_training_images_score_perfectly_at_both_sizes(size):
    rng = random.Random(11)
    for seed in range(60):
        spec = random_spec(rng, mix=MULTI_OBJECT_MIX).filled()
        assert all(score(analyse(render(spec, size, seed)), spec).values()), spec


def test_two_different_objects_are_drawn_left_to_right_in_the_order_named():
    spec = parse_prompt("a red circle and a blue square on white").filled()
    assert spec == PromptSpec("red", "circle", "white", None, 2, ("blue", "square"))
    result = analyse(render(spec, 256, seed=1))
    left, right = sorted(result.objects, key=lambda o: o.centre[0])
    assert (left.colour, left.shape, right.colour, right.shape) == ("red", "circle", "blue", "square")
    fields = ("colour", "shape", "colour_shape", "count", "background", "order")
    assert score(result, spec) == dict.fromkeys(fields, True)
    swapped = analyse(render(PromptSpec("blue", "square", "white", None, 2, ("red", "circle")), 256, seed=1))
    assert score(swapped, spec)["colour_shape"] and not score(swapped, spec)["order"]
    assert not score(analyse(render(PromptSpec("red", "circle", "white", None, 2), 256)), spec)["colour_shape"]


def test_render_is_deterministic_by_seed_and_anti_aliased():
    spec = PromptSpec("green", "star", "purple", "left", 1)
    a, b = np.asarray(render(spec, 64, seed=3)), np.asarray(render(spec, 64, seed=3))
    assert (a == b).all()
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 2  # blended edge pixels


def test_larger_images_read_the_same():
    spec = PromptSpec("orange", "triangle", "cyan", "right", 1)
    result = analyse(render(spec, 128, seed=0))
    assert all(score(result, spec).values())


def test_blank_image_has_no_objects():
    result = analyse(render(PromptSpec("white", "circle", "white", "center", 1), 64))
    assert result.count == 0 and result.main is None
    assert score(result, PromptSpec("red", "circle")) == {
        "colour": False,
        "shape": False,
        "colour_shape": False,
    }


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red triangle on a white background", PromptSpec("red", "triangle", "white", None, 1)),
        ("a red circle on a blue background", PromptSpec("red", "circle", "blue", None, 1)),
        ("red circle, blue background", PromptSpec("red", "circle", "blue", None, 1)),
        ("a red circle on blue", PromptSpec("red", "circle", "blue", None, 1)),
        ("a blue circle", PromptSpec("blue", "circle", None, None, 1)),
        ("two green stars on the left", PromptSpec("green", "star", None, "left", 2)),
        ("Three Yellow Squares, grey background", PromptSpec("yellow", "square", "gray", None, 3)),
        ("black background with a white star at the top", PromptSpec("white", "star", "black", "top", 1)),
        ("a red circle and a blue square", PromptSpec("red", "circle", None, None, 2, ("blue", "square"))),
        ("a blue background with a red star and a green star",
         PromptSpec("red", "star", "blue", None, 2, ("green", "star"))),
        ("a red circle and a red circle", PromptSpec("red", "circle", None, None, 1)),
    ],
)
def test_prompts_parse_into_what_they_ask_for(prompt, expected):
    assert parse_prompt(prompt) == expected


@pytest.mark.parametrize("mix", [None, MULTI_OBJECT_MIX])
def test_every_phrasing_parses_back_to_its_spec(mix):
    rng = random.Random(3)
    for _ in range(300):
        spec = random_spec(rng, mix=mix).filled()
        assert parse_prompt(random_caption(spec, rng)).filled() == spec
        for template in TRAIN_TEMPLATES + HELD_OUT_TEMPLATES:
            assert parse_prompt(caption(spec, template)).filled() == spec, template


def test_held_out_combos_never_appear_in_training_specs():
    held = held_out_combos()
    assert held and ("red", "circle", "blue") not in held
    rng = random.Random(0)
    for _ in range(2000):
        spec = random_spec(rng, held)
        assert (spec.colour, spec.shape, spec.background) not in held
