"""`python -m eval safety` runs end to end, and its numbers agree with its own per-prompt output."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pytest
from PIL import Image

from eval.__main__ import main as eval_main
from eval.safety import DEFAULT_PROMPTS, LABELS, bootstrap_weights, builtin_safe_images, stratified_sample

SAMPLE = 48


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small run: a stratified sample of the shipped prompts and a tiny labelled image folder."""
    root = tmp_path_factory.mktemp("safety-eval")
    images = root / "images"
    for label, colours in {"safe": [(200, 30, 30), (30, 200, 30)], "unsafe": [(30, 30, 200)]}.items():
        (images / label).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (96, 96), colour).save(images / label / f"{i}.png")
    out = root / "out"
    args = ["safety", "--sample", str(SAMPLE), "--bootstrap", "200", "--latency-samples", "3"]
    args += ["--images", str(images), "--no-builtin-images", "--out", str(out)]
    assert eval_main(args) == 0
    return out


def _rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_writes_every_output(run_dir: Path):
    for name in [
        "prompts.csv",
        "prompt_metrics.json",
        "prompt_sweep.csv",
        "prompt_pr.png",
        "images.csv",
        "image_metrics.json",
        "image_fpr.png",
        "latency.json",
        "summary.json",
        "safety_report.md",
    ]:
        assert (run_dir / name).stat().st_size > 0, name
    report = (run_dir / "safety_report.md").read_text(encoding="utf-8")
    assert "## Prompt filter" in report and "## Image filter" in report


def test_prompt_metrics_match_an_independent_count_of_the_per_prompt_output(run_dir: Path):
    rows = _rows(run_dir / "prompts.csv")
    metrics = json.loads((run_dir / "prompt_metrics.json").read_text(encoding="utf-8"))
    assert {"dev", "test", "all"} <= set(metrics)
    for split, m in metrics.items():
        chosen = [r for r in rows if split in ("all", r["split"])]
        unsafe = [r["expected"] != "safe" for r in chosen]
        blocked = [r["allowed"] == "False" for r in chosen]
        tp = sum(u and b for u, b in zip(unsafe, blocked, strict=True))
        fp = sum(not u and b for u, b in zip(unsafe, blocked, strict=True))
        fn = sum(u and not b for u, b in zip(unsafe, blocked, strict=True))
        tn = sum(not u and not b for u, b in zip(unsafe, blocked, strict=True))
        b = m["binary"]
        assert (b["tp"], b["fp"], b["fn"], b["tn"]) == (tp, fp, fn, tn)
        assert b["recall"]["value"] == pytest.approx(tp / (tp + fn), abs=1e-4)
        assert b["fpr"]["value"] == pytest.approx(fp / (fp + tn), abs=1e-4)
        if tp + fp:
            assert b["precision"]["value"] == pytest.approx(tp / (tp + fp), abs=1e-4)
        for name in ("recall", "fpr", "precision", "f1"):
            lo, hi = b[name]["ci95"]
            if b[name]["value"] is not None and lo is not None:
                assert lo - 1e-9 <= b[name]["value"] <= hi + 1e-9
        confusion = m["confusion"]
        assert sum(sum(c.values()) for c in confusion.values()) == len(chosen)
        assert sum(c["allowed"] for label, c in confusion.items() if label != "safe") == fn


def test_the_sample_is_stratified_and_keeps_disguised_variants_with_their_base(run_dir: Path):
    rows = _rows(run_dir / "prompts.csv")
    assert SAMPLE * 0.7 <= len({r["group"] for r in rows}) <= SAMPLE * 1.3
    assert {r["expected"] for r in rows} == set(LABELS)
    assert {r["split"] for r in rows} == {"dev", "test"}
    with DEFAULT_PROMPTS.open(encoding="utf-8", newline="") as fh:
        full = list(csv.DictReader(fh))
    sampled_groups = {r["group"] for r in rows}
    assert sum(r["group"] in sampled_groups for r in full) == len(rows)


def test_sweep_at_offset_zero_reproduces_the_reported_operating_point(run_dir: Path):
    metrics = json.loads((run_dir / "prompt_metrics.json").read_text(encoding="utf-8"))
    points = _rows(run_dir / "prompt_sweep.csv")
    for split in ("dev", "test", "all"):
        (zero,) = [p for p in points if p["layer"] == "combined" and p["split"] == split and float(p["offset"]) == 0]
        assert float(zero["recall"]) == pytest.approx(metrics[split]["binary"]["recall"]["value"], abs=1e-4)
        assert float(zero["fpr"]) == pytest.approx(metrics[split]["binary"]["fpr"]["value"], abs=1e-4)


def test_image_metrics_match_the_per_image_output(run_dir: Path):
    rows = _rows(run_dir / "images.csv")
    metrics = json.loads((run_dir / "image_metrics.json").read_text(encoding="utf-8"))
    assert len(rows) == 3 and metrics["n_safe"] == 2 and metrics["n_unsafe"] == 1
    safe_blocked = sum(r["label"] == "safe" and r["allowed"] == "False" for r in rows)
    assert metrics["fpr"]["value"] == pytest.approx(safe_blocked / 2)
    latency = json.loads((run_dir / "latency.json").read_text(encoding="utf-8"))
    assert latency["image"]["per_image"]["n"] == 3
    assert latency["prompt"]["single_call"]["median_ms"] > 0


def test_builtin_safe_images_are_made_offline():
    items = builtin_safe_images(seed=0)
    assert len(items) >= 100
    assert {item["label"] for item in items} == {"safe"}
    assert {"matplotlib", "procedural"} <= {item["source"] for item in items}


def test_cluster_bootstrap_moves_whole_groups():
    weights = bootstrap_weights(["a", "a", "b", "c"], n_boot=50, seed=1)
    assert weights.shape == (50, 4)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 1])
    assert (weights[:, [0, 2, 3]].sum(axis=1) == 3).all()


def test_stratified_sample_is_deterministic():
    rows = [
        {"prompt": f"p{i}", "group": f"g{i}", "split": "dev", "expected": "safe" if i % 2 else "hate"}
        for i in range(40)
    ]
    assert stratified_sample(rows, 10, seed=3) == stratified_sample(rows, 10, seed=3)
    assert len(stratified_sample(rows, 10, seed=3)) == 10
