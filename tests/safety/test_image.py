"""The image filter: NudeNet + open-nsfw (+ an optional transformers classifier) and its blocking rule."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw

from nanobanana.errors import ConfigError, ImageBlocked
from nanobanana.safety import ImageFilter, SafetyChecker, SafetyConfig, load_safety_config, models
from nanobanana.safety.config import ImageConfig
from nanobanana.safety.image_filter import ImageAnalysis

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def image_filter() -> ImageFilter:
    """NudeNet and open-nsfw as configured in configs/safety.yaml (loaded once per process)."""
    f = ImageFilter(load_safety_config(environ={}))
    f.check(Image.new("RGB", (32, 32), "white"))
    return f


def _drawing() -> Image.Image:
    img = Image.new("RGB", (256, 256), (40, 120, 200))
    draw = ImageDraw.Draw(img)
    draw.ellipse([60, 60, 200, 200], fill=(250, 200, 40))
    draw.rectangle([0, 200, 256, 256], fill=(30, 160, 60))
    return img


def test_a_portrait_photo_is_allowed_and_nudenet_sees_the_face(image_filter: ImageFilter):
    analysis = image_filter.analyze(Image.open(GRACE_HOPPER))
    assert analysis.verdict.allowed
    assert analysis.verdict.category is None
    assert any(d["class"] == "FACE_FEMALE" for d in analysis.detections)
    assert analysis.opennsfw_score < 0.1


def test_accepts_pil_images_numpy_arrays_and_paths(image_filter: ImageFilter, tmp_path: Path):
    drawing = _drawing()
    path = tmp_path / "drawing.png"
    drawing.save(path)
    verdicts = [image_filter.check(x) for x in (drawing, np.asarray(drawing), path, str(path))]
    assert all(v.allowed for v in verdicts)
    assert len({v.score for v in verdicts}) == 1


def test_transparent_and_greyscale_images_are_handled(image_filter: ImageFilter):
    assert image_filter.check(Image.new("RGBA", (64, 64), (0, 0, 0, 0))).allowed
    assert image_filter.check(Image.new("L", (64, 64), 128)).allowed


@pytest.mark.parametrize(
    ("nudenet_label", "nudenet_score", "opennsfw_score", "allowed"),
    [
        ("FEMALE_BREAST_EXPOSED", 0.7, 0.1, False),  # NudeNet alone blocks
        ("FEMALE_BREAST_EXPOSED", 0.3, 0.1, True),  # below its threshold
        (None, 0.0, 0.9, False),  # open-nsfw alone blocks
        (None, 0.0, 0.5, True),  # below its threshold
        ("BUTTOCKS_EXPOSED", 0.2, 0.85, False),
    ],
)
def test_blocks_when_nudenet_or_opennsfw_reaches_its_threshold(nudenet_label, nudenet_score, opennsfw_score, allowed):
    config = ImageConfig.model_validate({"nudenet": {"threshold": 0.5}, "opennsfw": {"threshold": 0.8}})
    analysis = ImageAnalysis(nudenet_score=nudenet_score, nudenet_label=nudenet_label, opennsfw_score=opennsfw_score)
    verdict = ImageFilter(config).decide(analysis)
    assert verdict.allowed is allowed
    assert verdict.score == max(nudenet_score, opennsfw_score)
    if not allowed:
        assert verdict.category == "sexual"
        assert verdict.reason.startswith("This image was blocked")


@pytest.mark.parametrize(
    ("size", "nudenet_score", "opennsfw_score", "allowed"),
    [
        ((64, 64), 0.7, 0.01, True),  # a small image: NudeNet alone at 0.7 is not enough
        ((64, 80), 0.7, 0.4, False),  # ... but with open-nsfw's support it is
        ((64, 64), 0.95, 0.01, False),  # ... and alone from the small-image threshold
        ((64, 64), 0.0, 0.85, False),  # open-nsfw alone blocks at any size
        ((127, 900), 0.7, 0.01, True),  # the short side decides
        ((128, 128), 0.7, 0.01, False),  # from 128 px the plain rule: NudeNet alone blocks
        ((1024, 768), 0.55, 0.0, False),
    ],
)
def test_small_images_need_stronger_evidence_from_nudenet(size, nudenet_score, opennsfw_score, allowed):
    config = ImageConfig.model_validate({
        "nudenet": {"threshold": 0.5}, "opennsfw": {"threshold": 0.8},
        "small_images": {"below_side": 128, "nudenet_threshold": 0.9, "opennsfw_support": 0.3},
    })
    analysis = ImageAnalysis(nudenet_score=nudenet_score, nudenet_label="FEMALE_BREAST_EXPOSED",
                             opennsfw_score=opennsfw_score, size=size)
    assert ImageFilter(config).decide(analysis).allowed is allowed


def test_the_small_image_rule_can_be_switched_off():
    config = ImageConfig.model_validate({"small_images": {"below_side": 0}})
    analysis = ImageAnalysis(nudenet_score=0.6, nudenet_label="FEMALE_BREAST_EXPOSED", size=(64, 64))
    assert not ImageFilter(config).decide(analysis).allowed


def test_the_analysis_records_the_size_the_rule_looks_at(image_filter: ImageFilter):
    assert image_filter.analyze(Image.new("RGB", (64, 80), "white")).size == (64, 80)


class _FakeDetector:
    def __init__(self, detections):
        self.detections = detections

    def detect(self, array):
        assert array.ndim == 3 and array.shape[2] == 3  # an RGB array, not a path
        return self.detections


def test_only_the_configured_labels_block(monkeypatch: pytest.MonkeyPatch):
    detections = [{"class": "BUTTOCKS_EXPOSED", "score": 0.9, "box": [0, 0, 10, 10]}]
    fake = _FakeDetector(detections)
    monkeypatch.setattr(models, "shared", lambda key, factory: fake)
    only_nudenet = {"opennsfw": {"enabled": False}}
    default = ImageFilter(ImageConfig.model_validate(only_nudenet))
    assert not default.check(_drawing()).allowed
    relaxed = ImageConfig.model_validate(only_nudenet | {"nudenet": {"blocking_labels": ["FEMALE_GENITALIA_EXPOSED"]}})
    verdict = ImageFilter(relaxed).check(_drawing())
    assert verdict.allowed and verdict.score == 0.0


def test_unknown_nudenet_label_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown NudeNet label"):
        load_safety_config(environ={"NANOBANANA_SAFETY__IMAGE__NUDENET__BLOCKING_LABELS": '["NAKED_ELBOW"]'})


def test_concurrent_checks_from_threads_agree_with_sequential(image_filter: ImageFilter):
    images = [Image.open(GRACE_HOPPER).convert("RGB"), _drawing()] * 3
    expected = [image_filter.check(im) for im in images]
    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(image_filter.check, images)) == expected


def test_disabled_image_filter_allows_and_warns_once(caplog: pytest.LogCaptureFixture):
    config = load_safety_config(environ={"NANOBANANA_SAFETY__IMAGE__ENABLED": "false"})
    checker = SafetyChecker(config)
    with caplog.at_level(logging.WARNING, logger="nanobanana.safety"):
        verdicts = [checker.check_image(_drawing()) for _ in range(2)]
    assert all(v.allowed and v.reason == "filter disabled by configuration" for v in verdicts)
    assert checker.image_filter is None
    assert sum("disabled" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 1


def test_image_blocked_carries_the_verdict(monkeypatch: pytest.MonkeyPatch):
    checker = SafetyChecker(load_safety_config(environ={}))
    blocked = ImageFilter(checker.config.image).decide(ImageAnalysis(opennsfw_score=0.99))
    monkeypatch.setattr(checker.image_filter, "check", lambda image: blocked)
    with pytest.raises(ImageBlocked) as info:
        checker.ensure_image_allowed(_drawing())
    assert info.value.verdict is blocked
    assert str(info.value) == blocked.reason


@pytest.fixture(scope="module")
def tiny_hub_classifier(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 2-label ViT saved as a local transformers image-classification model."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("hub-classifier")
    labels = {0: "normal", 1: "nsfw"}
    config = ViTConfig(
        image_size=32,
        patch_size=16,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=2,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


def test_hub_classifier_plugs_in_through_the_same_rule(tiny_hub_classifier: str):
    def config(threshold: float) -> SafetyConfig:
        return SafetyConfig.model_validate(
            {
                "image": {
                    "nudenet": {"enabled": False},
                    "opennsfw": {"enabled": False},
                    "hub": {"model": tiny_hub_classifier, "threshold": threshold},
                }
            }
        )

    strict = ImageFilter(config(0.0)).analyze(_drawing())
    assert set(strict.hub_scores) == {"normal", "nsfw"}
    assert not strict.verdict.allowed and strict.verdict.category == "sexual"
    assert strict.verdict.score == round(strict.hub_scores["nsfw"], 4)
    assert ImageFilter(config(1.0)).check(_drawing()).allowed
