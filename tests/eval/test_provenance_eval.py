"""`python -m eval provenance` end to end at its smallest, and its section in `python -m eval report`."""

from __future__ import annotations

import json

import pytest

from eval.common import bundled_model_ready
from eval.provenance import model_images
from tests.eval.test_commands import _run

pytestmark = pytest.mark.slow


def test_the_provenance_eval_measures_every_transform_and_the_report_shows_it(tiny_model_dir, tmp_path):
    out = tmp_path / "provenance"
    _run("provenance", "--small", "--limit", "1", "--model", str(tiny_model_dir), "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    marked = summary["marked"]["all"]
    assert len(marked) == 9 and {"PNG→JPEG q50", "resize ×0.5", "crop 10 %", "screenshot ×1.25"} <= set(marked)
    untouched = marked["none (the signed file)"]
    assert untouched["detection"]["value"] == 1.0 and untouched["c2pa_valid"]["value"] == 1.0
    assert untouched["bit_accuracy"] == 1.0
    assert marked["PNG→JPEG q90"]["c2pa_valid"]["value"] == 0.0  # a re-encode drops the manifest: reported
    assert summary["false_positives"]["all"]["n"] > 0
    assert [row["size"] for row in summary["timing"]] == ["256×256", "512×512", "1024×1024"]
    assert "too small for the watermark" in summary["model_note"]  # the tiny model makes 64 px images
    _run("report", "--results", str(tmp_path))
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## AI marks (C2PA and watermark)" in md and "PNG→JPEG q75" in md and "watermark_ms" in md


@pytest.mark.skipif(not bundled_model_ready(), reason="the bundled model's folder is missing")
def test_the_bundled_models_own_images_are_measured_too():
    # 256 px and up: big enough for the watermark, so the eval marks the model's own outputs as well.
    images, model_id, size = model_images("bundled", 1, seed=0)
    assert model_id == "nanobanana-shapes" and size == (256, 256)
    assert [image.size for image in images] == [(256, 256)]
