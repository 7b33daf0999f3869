"""Running generations on the tiny model: sizes, reproducibility, image-to-image, edit fallback, callbacks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from nanobanana.errors import GenerationCancelled
from nanobanana.generation import ASPECT_RATIOS, GenerationRequest, Mode


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_request_and_seed_give_identical_pixels(generator):
    request = GenerationRequest(prompt="a red circle on a blue background", seed=42)
    first, second = generator.generate(request), generator.generate(request)
    assert np.array_equal(pixels(first.images[0]), pixels(second.images[0]))


def test_different_seeds_give_different_images(generator):
    a = generator.generate(GenerationRequest(prompt="a red circle", seed=1)).images[0]
    b = generator.generate(GenerationRequest(prompt="a red circle", seed=2)).images[0]
    assert not np.array_equal(pixels(a), pixels(b))


def test_a_batch_records_one_seed_per_image_and_each_regenerates_alone(generator):
    batch = generator.generate(GenerationRequest(prompt="a blue square", seed=100, num_images=3))
    assert batch.seeds == [100, 101, 102]
    alone = generator.generate(GenerationRequest(prompt="a blue square", seed=batch.seeds[2]))
    # Same noise, same weights; a batch of 3 may differ from a batch of 1 only by float rounding.
    assert np.abs(pixels(alone.images[0]) - pixels(batch.images[2])).max() <= 2


def test_a_random_seed_is_recorded_and_reproduces_the_image(generator):
    first = generator.generate(GenerationRequest(prompt="a green star"))
    again = generator.generate(GenerationRequest(prompt="a green star", seed=first.seeds[0]))
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_each_aspect_ratio_gives_its_native_size(generator, ratio):
    size = next(s for s in generator.sizes() if s.ratio == ratio)
    result = generator.generate(GenerationRequest(prompt="a red circle", aspect_ratio=ratio, seed=0, steps=1))
    assert result.images[0].size == (size.width, size.height)
    assert (result.settings.width, result.settings.height) == (size.width, size.height)


def test_image_to_image_keeps_the_requested_size_and_records_strength(generator):
    init = Image.new("RGB", (300, 200), "red")
    result = generator.generate(
        GenerationRequest(
            prompt="a blue circle",
            mode=Mode.IMAGE_TO_IMAGE,
            images=[init],
            strength=0.7,
            aspect_ratio="auto",
            seed=3,
        )
    )
    assert result.settings.aspect_ratio == "3:2"
    assert result.images[0].size == (result.settings.width, result.settings.height)
    assert result.settings.strength == 0.7
    assert result.settings.pipeline == "image-to-image"


def test_image_to_image_shares_weights_with_text_to_image(generator):
    model = generator.load()
    assert model.image_to_image.unet is model.base.unet
    assert model.image_to_image.vae is model.base.vae


def test_edit_falls_back_to_image_to_image_and_says_so(generator):
    result = generator.generate(
        GenerationRequest(prompt="make it blue", mode=Mode.EDIT, images=[Image.new("RGB", (64, 64), "red")], seed=1)
    )
    assert result.settings.pipeline == "image-to-image"
    assert any("no instruction-edit pipeline" in w for w in result.warnings)


def test_step_callback_reports_every_step(generator):
    seen: list[tuple[int, int]] = []
    generator.generate(
        GenerationRequest(prompt="a red circle", steps=5, seed=0), on_step=lambda s, t: seen.append((s, t))
    )
    assert seen == [(i, 5) for i in range(1, 6)]


def test_cancel_stops_the_generation(generator):
    cancel = threading.Event()

    def on_step(step: int, total: int) -> None:
        if step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        generator.generate(GenerationRequest(prompt="a red circle", steps=6, seed=0), on_step=on_step, cancel=cancel)


def test_stage_timings_are_measured_and_add_up(generator):
    t = generator.generate(GenerationRequest(prompt="a red circle", seed=0)).timings
    assert t.text_encoding > 0 and t.denoising > 0 and t.decoding > 0
    assert t.text_encoding + t.denoising + t.decoding <= t.total


def test_another_scheduler_can_be_chosen_per_request(generator):
    result = generator.generate(GenerationRequest(prompt="a red circle", seed=0, scheduler="EulerDiscreteScheduler"))
    assert result.settings.scheduler == "EulerDiscreteScheduler"
    default = generator.generate(GenerationRequest(prompt="a red circle", seed=0))
    assert default.settings.scheduler == "DPMSolverMultistepScheduler"


def test_concurrent_requests_are_each_reproducible(generator):
    request = GenerationRequest(prompt="a yellow triangle", seed=9)
    expected = pixels(generator.generate(request).images[0])
    results: list[np.ndarray] = []

    def run() -> None:
        results.append(pixels(generator.generate(GenerationRequest(prompt="a yellow triangle", seed=9)).images[0]))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(np.array_equal(r, expected) for r in results)
