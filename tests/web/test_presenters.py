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


def test_the_way_to_more_credits_is_the_configured_link_or_the_policy_contact():
    assert presenters.more_credits("https://shop.example.org/credits", "x@example.org") == \
        "[Get more credits](https://shop.example.org/credits)."
    assert presenters.more_credits("Ask at the front desk.", "x@example.org") == "Ask at the front desk."
    assert presenters.more_credits(None, "ops@example.org") == \
        "For more credits, write to [ops@example.org](mailto:ops@example.org)."
    assert presenters.more_credits(None, "the front desk") == "For more credits, ask the operator (the front desk)."


def test_the_stats_headline_and_the_rows_count_errors_alike():
    import pandas as pd

    from nanobanana.service.usage import UsageStats

    by_day = pd.DataFrame([{"day": "2026-12-01", "requests": 4, "images": 2, "ok": 2, "error_rate": 0.25,
                            "p50_generation_s": 0.1, "p95_generation_s": 0.2, "p50_total_s": 0.3}])
    by_setting = pd.DataFrame([{"mode": "edit", "model": "m", "aspect_ratio": "auto", "steps": 4, "requests": 4,
                                "images": 2, "ok": 2, "error_rate": 0.25}])
    by_outcome = pd.DataFrame([{"day": "2026-12-01", "outcome": o, "requests": n}
                               for o, n in [("ok", 2), ("blocked_prompt", 1), ("error:GenerationFailed", 1)]])
    numbers, *_, popular = presenters.stats_figures(UsageStats(by_day, by_setting, by_outcome, 4))
    assert "error rate **25%**" in numbers and "**25%** refused" in numbers
    assert popular["error rate"].tolist() == ["25%"]
