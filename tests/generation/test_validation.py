"""Step 1 of a generation: every bad request is refused with a message that names the problem."""

from __future__ import annotations

import pytest
from PIL import Image

from nanobanana.errors import InvalidRequest, UnsupportedMode
from nanobanana.generation import GenerationRequest, Mode


def refused(generator, **fields) -> str:
    fields.setdefault("prompt", "a red circle")
    with pytest.raises(InvalidRequest) as info:
        generator.plan(GenerationRequest(**fields))
    return str(info.value)


def test_empty_prompt_is_refused(generator):
    assert "Write a prompt" in refused(generator, prompt="   ")


def test_a_lone_surrogate_in_a_prompt_is_refused_with_its_position(generator):
    assert "invalid character at position 7" in refused(generator, prompt="a red \ud800 circle")
    assert "negative prompt" in refused(generator, negative_prompt="blur\udfff")


def test_control_characters_are_cleaned_from_a_prompt(generator):
    plan = generator.plan(GenerationRequest(prompt="a red\x00 circle\x1b[31m\tnow"))
    assert plan.settings.prompt == "a red  circle [31m\tnow"


def test_prompt_over_the_character_limit_is_refused(generator):
    limit = generator.config.limits.max_prompt_chars
    assert f"limit is {limit}" in refused(generator, prompt="red " * limit)


def test_prompt_over_the_token_limit_is_truncated_and_says_so(generator):
    plan = generator.plan(GenerationRequest(prompt=" ".join(["red circle"] * 20)))
    assert plan.settings.prompt.split() == (["red", "circle"] * 20)[:14]
    assert "was cut to" in plan.warnings[0]


def test_prompt_over_the_token_limit_is_refused_when_configured(generator):
    config = generator.config.model_copy(deep=True)
    config.limits.long_prompt = "refuse"
    from nanobanana.generation import Generator

    strict = Generator(config)
    strict._model = generator.load()  # same weights, stricter policy
    with pytest.raises(InvalidRequest, match="tokens long"):
        strict.plan(GenerationRequest(prompt=" ".join(["red circle"] * 20)))


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("steps", 0, "Steps must be between 1 and 50"),
        ("steps", 51, "Steps must be between 1 and 50"),
        ("steps", 2.5, "Steps must be a whole number"),
        ("steps", "many", "Steps must be a whole number"),
        ("steps", True, "Steps must be a whole number"),
        ("num_images", 5, "Number of images must be between 1 and 4"),
        ("guidance", float("nan"), "Guidance must be a number"),
        ("guidance", 31, "Guidance must be at least 0.0 and at most 30.0"),
        ("seed", -1, "Seed must be between 0"),
        ("aspect_ratio", "7:3", "choose one of: 1:1, 2:3"),
        ("scheduler", "NoSuchScheduler", "Scheduler 'NoSuchScheduler' is not available"),
    ],
)
def test_out_of_range_values_are_refused_with_the_allowed_range(generator, field, value, fragment):
    assert fragment in refused(generator, **{field: value})


def test_unknown_mode_is_refused():
    with pytest.raises(InvalidRequest, match="Unknown mode 'paint'"):
        GenerationRequest(prompt="x", mode="paint")


def test_text_to_image_refuses_an_input_image(generator):
    assert "takes no input image" in refused(generator, images=[Image.new("RGB", (8, 8))])


def test_image_modes_need_an_input_image(generator):
    assert "needs an input image" in refused(generator, mode=Mode.IMAGE_TO_IMAGE)


def test_strength_must_be_in_the_open_unit_interval(generator):
    image = Image.new("RGB", (64, 64))
    assert "Strength must be above 0.0" in refused(generator, mode=Mode.IMAGE_TO_IMAGE, images=[image], strength=0)
    assert "no denoising step" in refused(generator, mode=Mode.IMAGE_TO_IMAGE, images=[image], strength=0.1, steps=4)


def test_several_images_need_a_multi_image_edit_pipeline(generator):
    images = [Image.new("RGB", (64, 64))] * 2
    with pytest.raises(UnsupportedMode, match="one image at a time"):
        generator.plan(GenerationRequest(prompt="x", mode=Mode.EDIT, images=images))


def test_mode_the_model_lacks_is_unsupported(generator):
    from nanobanana.generation import Generator

    config = generator.config.model_copy(deep=True)
    config.model.image_to_image = False
    text_only = Generator(config)
    text_only._model = generator.load()
    with pytest.raises(UnsupportedMode, match="supports: text-to-image"):
        text_only.plan(
            GenerationRequest(prompt="x", mode=Mode.IMAGE_TO_IMAGE, images=[Image.new("RGB", (8, 8))])
        )


def test_defaults_come_from_the_model_config(generator):
    settings = generator.plan(GenerationRequest(prompt="a red circle", seed=7)).settings
    defaults = generator.config.model.defaults
    assert (settings.steps, settings.guidance, settings.seeds) == (defaults.steps, defaults.guidance, (7,))
