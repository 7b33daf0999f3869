"""Every shipped model config, run on its tiny twin: the same diffusers pipeline class and components as
the hub model (random weights, small widths), loaded by the same loader and driven by the same generator.

What a twin proves: our code paths for that architecture (its encoders and prompt limit, its pipelines,
sizes, seeds, progress, cancel, the settings it ignores). What it cannot: image quality, real memory and
speed, the real weights' own configs (scheduler, tokenizer files), nor a gated download.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from nanobanana.errors import GenerationCancelled, UnsupportedMode
from nanobanana.generation import GenerationRequest, Mode, all_sizes, model_config_from_reference


@dataclass(frozen=True)
class Expect:
    """What the real model is, as our code must see it through its twin."""

    pipeline: str
    size_multiple: int  # the real model's size grid
    prompt_room: int  # tokens of prompt its prompt encoder reads (klein: at most; its chat turn takes some)
    edit: bool  # an instruction-edit pipeline (else image-to-image, or nothing)
    image_to_image: bool


SHIPPED = {
    "sd-turbo": Expect("StableDiffusionPipeline", 64, 75, edit=False, image_to_image=True),
    "sdxl-turbo": Expect("StableDiffusionXLPipeline", 32, 75, edit=False, image_to_image=True),
    "flux-schnell": Expect("FluxPipeline", 16, 255, edit=False, image_to_image=True),
    "flux-kontext": Expect("FluxKontextPipeline", 16, 511, edit=True, image_to_image=False),
    "flux2-klein": Expect("Flux2KleinPipeline", 16, 512, edit=True, image_to_image=False),
}
NAMES = list(SHIPPED)
INPUT = Image.new("RGB", (96, 64), (200, 40, 40))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def t2i(prompt: str = "a red cat on a blue background", **kwargs) -> GenerationRequest:
    kwargs.setdefault("steps", 2)
    kwargs.setdefault("seed", 1)
    return GenerationRequest(prompt, **kwargs)


@pytest.fixture(params=NAMES)
def twin(request, twin_generators):
    return request.param, twin_generators(request.param)


def test_every_shipped_local_config_has_a_twin_here():
    from nanobanana.bundled.twins import shipped_configs

    assert sorted(p.stem for p in shipped_configs()) == sorted(NAMES)


def test_the_twin_loads_as_the_real_models_pipeline_class(twin):
    name, generator = twin
    model = generator.load()
    assert type(model.base).__name__ == SHIPPED[name].pipeline
    assert model.size_multiple == SHIPPED[name].size_multiple
    assert (model.edit is not None) == SHIPPED[name].edit
    assert (model.image_to_image is not None) == SHIPPED[name].image_to_image


def test_text_to_image_makes_the_planned_size(twin):
    _, generator = twin
    result = generator.generate(t2i(aspect_ratio="16:9"))
    assert result.images[0].size == (result.settings.width, result.settings.height)
    assert result.settings.pipeline == "text-to-image"


def test_every_aspect_preset_runs_on_the_models_size_grid(twin):
    name, generator = twin
    real = model_config_from_reference(name)
    multiple = SHIPPED[name].size_multiple
    # At the real model's base resolution: the grid it needs, about its pixel count.
    for size in all_sizes(real.base_resolution, multiple, real.min_short_side, real.aspect_ratios):
        assert size.width % multiple == 0 and size.height % multiple == 0
        assert 0.8 < size.width * size.height / real.base_resolution**2 < 1.25, size
    # And each preset really runs through the pipeline at the twin's small base.
    for size in generator.sizes():
        result = generator.generate(t2i(aspect_ratio=size.ratio, steps=1))
        assert result.images[0].size == (size.width, size.height), size.ratio


def test_the_same_seed_gives_the_same_pixels_and_another_seed_others(twin):
    _, generator = twin
    first, again = generator.generate(t2i(seed=7)), generator.generate(t2i(seed=7))
    other = generator.generate(t2i(seed=8))
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert not np.array_equal(pixels(first.images[0]), pixels(other.images[0]))


def test_image_i_of_a_batch_is_the_image_of_its_seed_alone(twin):
    _, generator = twin
    batch = generator.generate(t2i(seed=20, num_images=2))
    alone = generator.generate(t2i(seed=21))
    assert np.abs(pixels(batch.images[1]) - pixels(alone.images[0])).max() <= 2


def test_progress_reports_each_step_and_cancel_stops_at_the_next(twin):
    _, generator = twin
    steps: list[tuple[int, int]] = []
    generator.generate(t2i(steps=3), on_step=lambda step, total: steps.append((step, total)))
    assert [s for s, _ in steps] == [1, 2, 3] and {t for _, t in steps} == {3}
    cancel = threading.Event()
    seen: list[int] = []

    def stop_after_first(step: int, total: int) -> None:
        seen.append(step)
        cancel.set()

    with pytest.raises(GenerationCancelled):
        generator.generate(t2i(steps=3), on_step=stop_after_first, cancel=cancel)
    assert seen == [1]


def test_image_to_image_where_the_config_allows_it(twin):
    name, generator = twin
    request = t2i(mode=Mode.IMAGE_TO_IMAGE, images=[INPUT], aspect_ratio="auto", strength=0.5, steps=2)
    if not SHIPPED[name].image_to_image:
        with pytest.raises(UnsupportedMode):
            generator.plan(request)
        return
    result = generator.generate(request)
    assert result.settings.pipeline == "image-to-image" and result.settings.aspect_ratio == "3:2"
    assert result.images[0].size == (result.settings.width, result.settings.height)


def test_edit_uses_the_edit_pipeline_where_there_is_one(twin):
    name, generator = twin
    result = generator.generate(t2i("make it blue", mode=Mode.EDIT, images=[INPUT], aspect_ratio="1:1"))
    expected = "edit" if SHIPPED[name].edit else "image-to-image"
    assert result.settings.pipeline == expected
    assert result.images[0].size == (result.settings.width, result.settings.height)


def test_several_reference_images_only_where_the_config_says_so(twin):
    _, generator = twin
    config = generator.config.model
    images = [INPUT, Image.new("RGB", (64, 64), (20, 20, 220))]
    request = t2i("put the cat from image 1 on image 2", mode=Mode.EDIT, images=images, aspect_ratio="1:1")
    if config.edit_max_images < 2:
        with pytest.raises(UnsupportedMode):
            generator.plan(request)
        return
    result = generator.generate(request)
    assert result.settings.pipeline == "edit" and len(result.images) == 1
    # The second reference image is read: another one changes the result.
    other = generator.generate(t2i("put the cat from image 1 on image 2", mode=Mode.EDIT, aspect_ratio="1:1",
                                   images=[INPUT, Image.new("RGB", (64, 64), (240, 240, 0))]))
    assert not np.array_equal(pixels(result.images[0]), pixels(other.images[0]))


def test_the_prompt_limit_is_that_of_the_encoder_that_reads_the_prompt(twin):
    name, generator = twin
    model = generator.load()
    if name == "flux2-klein":  # 512 tokens less Qwen's chat turn around the prompt
        assert SHIPPED[name].prompt_room - 40 < model.prompt_room < SHIPPED[name].prompt_room
    else:
        assert model.prompt_room == SHIPPED[name].prompt_room
    long_prompt = " ".join(["a"] * 900)  # one token per word in every tokenizer, under the 2000 characters
    plan = generator.plan(t2i(long_prompt))
    kept = model.prompt_tokenizer(plan.settings.prompt, add_special_tokens=False)["input_ids"]
    assert len(kept) <= model.prompt_room
    assert any(f"the model reads {model.prompt_room}" in w for w in plan.warnings)
    # The pipeline takes the fitted prompt without cutting it again.
    generator.run(plan)


def test_negative_prompt_and_guidance_are_used_or_ignored_as_the_config_says(twin):
    _, generator = twin
    config = generator.config.model
    plan = generator.plan(t2i(negative_prompt="blurry", guidance=7.5))
    if config.supports_negative_prompt:
        assert plan.settings.negative_prompt == "blurry"
    else:
        assert plan.settings.negative_prompt == ""
        assert any("negative prompt" in w for w in plan.warnings)
    if config.supports_guidance:
        assert plan.settings.guidance == 7.5
    else:
        assert plan.settings.guidance == config.defaults.guidance
        assert any("does not use guidance" in w for w in plan.warnings)
    assert generator.run(plan).images


def test_a_twin_serves_the_whole_request_path(twin, tmp_path):
    """Queue, worker, image filter, storage and credits on each architecture, as the app runs it."""
    from nanobanana.service.accounts import OAuthProfileData
    from tests.helpers import make_studio

    _, generator = twin
    studio = make_studio(tmp_path / "data", generator)
    try:
        account = studio.sign_in(OAuthProfileData("huggingface", "3003", "lee", None))
        result = studio.generate(t2i(num_images=2, steps=1), account.identity)
        assert len(result.images) == 2 and result.charged >= 2
        assert studio.services.ledger.balance(account.id) == account.balance - result.charged
    finally:
        studio.close()
