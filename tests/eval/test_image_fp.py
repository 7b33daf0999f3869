"""`python -m eval image-fp` makes images on the app's path, and its rates agree with its per-image output."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
from PIL import Image

from eval.__main__ import main as eval_main
from eval.common import bundled_model_ready
from eval.image_fp import photo_uploads, split_of

pytestmark = pytest.mark.skipif(not bundled_model_ready(), reason="the bundled model's folder is missing")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One --small run, with a labelled folder (its 'unsafe' image only exercises the recall plumbing)."""
    root = tmp_path_factory.mktemp("image-fp")
    for label, colour in (("safe", (30, 160, 60)), ("unsafe", (200, 40, 40))):
        (root / "labelled" / label).mkdir(parents=True)
        Image.new("RGB", (320, 240), colour).save(root / "labelled" / label / "0.png")
    out = root / "out"
    assert eval_main(["image-fp", "--small", "--images", str(root / "labelled"), "--out", str(out)]) == 0
    return out


def _rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_writes_its_report_and_data(run_dir: Path):
    for name in ("images.csv", "sweep.csv", "summary.json", "image_fp_report.md", "image_fp_scores.png"):
        assert (run_dir / name).stat().st_size > 0, name
    report = (run_dir / "image_fp_report.md").read_text(encoding="utf-8")
    assert "| all outputs |" in report and "plain rule" in report


def test_it_checks_text_to_image_outputs_edits_and_the_uploads_themselves(run_dir: Path):
    rows = _rows(run_dir / "images.csv")
    kinds = {r["kind"] for r in rows}
    assert {"text-to-image", "edit", "upload"} <= kinds
    edits = [r for r in rows if r["kind"] == "edit"]
    assert {r["prompt"] for r in edits} >= {"make the sky purple"}
    assert {(r["width"], r["height"]) for r in rows if r["kind"] in ("text-to-image", "edit")} == {("256", "256")}


def test_false_positive_rates_match_an_independent_count(run_dir: Path):
    rows = [r for r in _rows(run_dir / "images.csv") if r["label"] == "safe" and r["kind"] != "upload"
            and not r["kind"].startswith("labelled")]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    for rule in ("plain", "configured"):
        entry = summary["false_positives"]["all outputs"][rule]
        assert entry["n"] == len(rows)
        assert entry["blocked"] == sum(r[f"blocked_{rule}"] == "True" for r in rows)
        low, high = entry["ci95"]
        assert low <= entry["rate"] <= high


def test_labelled_images_are_checked_at_full_size_and_at_the_output_size(run_dir: Path):
    rows = [r for r in _rows(run_dir / "images.csv") if r["kind"].startswith("labelled")]
    assert sorted(r["kind"] for r in rows) == ["labelled at 256 px"] * 2 + ["labelled full size"] * 2
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["recall"]) == {"labelled at 256 px", "labelled full size"}
    assert summary["unchanged_large"]["flipped"] == 0


def test_the_split_is_fixed_by_the_description():
    description = "edit|gradio|lion.jpg|make the sky purple|1"
    assert split_of(description) == split_of(description)
    assert {split_of(f"text-to-image|x||p|{seed}") for seed in range(20)} == {"tune", "report"}


def test_the_uploads_are_photos_found_on_disk():
    uploads = photo_uploads(seed=0)
    assert any(u.source == "matplotlib" for u in uploads)
    assert all(min(u.image.size) >= 128 for u in uploads)
