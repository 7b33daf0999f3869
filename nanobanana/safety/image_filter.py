"""The image filter: NudeNet's detector and the open-nsfw classifier, plus an optional hub classifier.

Rule (documented in `configs/safety.yaml`): an image is blocked as `sexual` when
  NudeNet finds a blocking label (`image.nudenet.blocking_labels`) with score >= `image.nudenet.threshold`
     (on an image whose short side is under `image.small_images.below_side`: score >=
     `image.small_images.nudenet_threshold`, or >= `image.nudenet.threshold` with open-nsfw's probability
     >= `image.small_images.opennsfw_support`)
  OR open-nsfw's NSFW probability >= `image.opennsfw.threshold`
  OR the hub classifier, when one is configured, gives an unsafe label a score >= `image.hub.threshold`
     (the category is the one `image.hub.unsafe_labels` maps that label to).
The verdict's score is the strongest of these signals, also when the image is allowed.

Neither bundled model estimates age or detects violence; see the safety report for what was measured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from nanobanana.safety import models
from nanobanana.safety.config import ImageConfig, SafetyConfig
from nanobanana.safety.types import IMAGE_REASONS, Verdict

ImageInput = Image.Image | np.ndarray | str | os.PathLike


@dataclass
class ImageAnalysis:
    """What each model said about one image (for eval and debugging; callers use `Verdict`)."""

    detections: list[dict[str, Any]] = field(default_factory=list)  # NudeNet, all labels
    nudenet_score: float = 0.0  # highest score among blocking labels
    nudenet_label: str | None = None
    opennsfw_score: float = 0.0
    hub_scores: dict[str, float] = field(default_factory=dict)
    size: tuple[int, int] | None = None  # (width, height) of the image checked
    verdict: Verdict | None = None

    def to_dict(self) -> dict:
        return {
            "size": list(self.size) if self.size else None,
            "detections": self.detections,
            "nudenet_score": round(self.nudenet_score, 4),
            "nudenet_label": self.nudenet_label,
            "opennsfw_score": round(self.opennsfw_score, 4),
            "hub_scores": self.hub_scores,
            "verdict": self.verdict.to_dict() if self.verdict else None,
        }


def to_rgb(image: ImageInput) -> Image.Image:
    """Any supported input as an RGB PIL image (transparent areas composited on white)."""
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            opened.load()
            image = opened.copy()
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, a numpy array or a path, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class ImageFilter:
    """Checks generated and uploaded images. Build once and reuse; safe to call from several threads."""

    def __init__(self, config: SafetyConfig | ImageConfig | None = None):
        if isinstance(config, SafetyConfig):
            config = config.image
        self.config = config or ImageConfig()

    def check(self, image: ImageInput) -> Verdict:
        """Allowed, or blocked with a category, a score (0..1) and a reason fit for the user."""
        return self.analyze(image).verdict  # type: ignore[return-value]

    def analyze(self, image: ImageInput) -> ImageAnalysis:
        rgb = to_rgb(image)
        analysis = ImageAnalysis(size=rgb.size)
        cfg = self.config
        if cfg.nudenet.enabled:
            detector = models.shared(models.NUDENET, models.load_nudenet)
            # NudeNet swaps channels for file paths; an RGB array reaches the model in the order it was
            # trained on (checked by hand: higher scores on a test portrait than with the path).
            analysis.detections = detector.detect(np.ascontiguousarray(np.asarray(rgb)))
            blocking = [d for d in analysis.detections if d["class"] in cfg.nudenet.blocking_labels]
            if blocking:
                top = max(blocking, key=lambda d: d["score"])
                analysis.nudenet_score, analysis.nudenet_label = float(top["score"]), top["class"]
        if cfg.opennsfw.enabled:
            classifier = models.shared(models.OPENNSFW, models.load_opennsfw)
            analysis.opennsfw_score = float(classifier.classify(rgb).nsfw)
        if cfg.hub.model:
            analysis.hub_scores = self._hub_scores(rgb)
        analysis.verdict = self.decide(analysis)
        return analysis

    def decide(self, analysis: ImageAnalysis) -> Verdict:
        cfg = self.config
        signals: list[tuple[float, bool, str]] = []  # (score, blocks, category)
        if cfg.nudenet.enabled:
            score = analysis.nudenet_score
            signals.append((score, analysis.nudenet_label is not None and self._nudenet_blocks(analysis), "sexual"))
        if cfg.opennsfw.enabled:
            score = analysis.opennsfw_score
            signals.append((score, score >= cfg.opennsfw.threshold, "sexual"))
        for label, score in analysis.hub_scores.items():
            category = cfg.hub.unsafe_labels.get(label)
            if category is not None:
                signals.append((score, score >= cfg.hub.threshold, category))
        blocking = [s for s in signals if s[1]]
        if blocking:
            score, _, category = max(blocking)
            return Verdict.block(category, score, IMAGE_REASONS[category])
        return Verdict.allow(max((s[0] for s in signals), default=0.0))

    def _nudenet_blocks(self, analysis: ImageAnalysis) -> bool:
        cfg, score = self.config, analysis.nudenet_score
        small = cfg.small_images
        if analysis.size is None or min(analysis.size) >= small.below_side:
            return score >= cfg.nudenet.threshold
        supported = cfg.opennsfw.enabled and analysis.opennsfw_score >= small.opennsfw_support
        return score >= small.nudenet_threshold or (score >= cfg.nudenet.threshold and supported)

    def _hub_scores(self, rgb: Image.Image) -> dict[str, float]:
        hub = self.config.hub
        key = f"image:hub:{hub.model}:{hub.device}"
        classifier = models.shared(key, lambda: models.load_hub_classifier(hub.model, hub.device))  # type: ignore[arg-type]
        with models.lock_for(key):
            predictions = classifier(rgb, top_k=None)
        return {str(p["label"]).lower(): float(p["score"]) for p in predictions}
