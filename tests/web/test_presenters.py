"""What the page shows, from the service's results (no server needed)."""

from __future__ import annotations

from nanobanana.generation import AspectSize
from nanobanana.web import presenters


def test_presets_that_land_on_the_same_size_say_so():
    sizes = [AspectSize("1:1", 64, 64), AspectSize("3:4", 64, 80), AspectSize("4:5", 64, 80)]
    labels = [label for label, _ in presenters.ratio_choices(sizes)]
    assert labels == ["1:1 · 64×64", "3:4 · 64×80", "4:5 · 64×80 (same size as 3:4)"]
    assert [ratio for _, ratio in presenters.ratio_choices(sizes)] == ["1:1", "3:4", "4:5"]


def test_download_names_come_from_the_prompt_and_seed():
    assert presenters.download_name("A red circle, on blue!", 42) == "a-red-circle-on-blue-seed42.png"
    assert presenters.download_name("", 7) == "image-seed7.png"
    assert len(presenters.download_name("word " * 100, 1)) <= 70


def test_the_prompt_box_states_both_limits():
    from types import SimpleNamespace

    from nanobanana.generation import Limits

    info = SimpleNamespace(limits=Limits(), max_prompt_tokens=16, model_name="shapes")
    assert presenters.prompt_limits(info) == (
        "Up to 2000 characters; shapes reads the first 16 tokens (longer prompts are cut, and you are told).")
