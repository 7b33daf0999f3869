"""`python -m eval speed|errors|adherence|report` run end to end on the tiny model, and their key numbers
are recomputed here from the CSV they wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nanobanana.config import REPO_ROOT

pytestmark = pytest.mark.slow


def _run(*argv: str) -> None:
    """In this process (the imports are paid once); torch's thread count is put back afterwards."""
    import torch

    from eval.__main__ import main

    threads = torch.get_num_threads()
    try:
        assert main(list(argv)) == 0
    finally:
        torch.set_num_threads(threads)


def _eval(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "eval", *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def tiny_model_yaml(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/models/tiny-random.yaml pointed at the freshly built test model."""
    config = yaml.safe_load((REPO_ROOT / "configs/models/tiny-random.yaml").read_text())
    config["source"] = str(tiny_model_dir)
    path = tmp_path_factory.mktemp("config") / "tiny-random.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def results(tiny_model_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small run of each command into one results folder (the report test reads them all)."""
    root = tmp_path_factory.mktemp("results")
    model = ["--model", str(tiny_model_yaml), "--seed", "3"]
    _run("speed", "--small", "--cold-starts", "0", "--requests", "2", "--safety", "off", *model,
          "--out", str(root / "speed"))
    _run("errors", "--small", "--safety", "off", *model, "--out", str(root / "errors"))
    _run("adherence", "--prompts", "1", "--seeds", "2", "--steps", "2", "--bootstrap", "100", *model,
          "--out", str(root / "adherence"))
    return root


def test_every_command_has_help():
    from eval.__main__ import build_parser

    out = build_parser().format_help()
    for command in ("speed", "errors", "adherence", "report", "safety", "overhead"):
        assert command in out


def test_speed_percentiles_are_those_of_the_per_request_times(results):
    requests = pd.read_csv(results / "speed/requests.csv")
    summary = json.loads((results / "speed/summary.json").read_text())
    for side in ("nanobanana service", "bare diffusers"):
        totals = requests.loc[requests.side == side, "total"]
        assert len(totals) == 2
        assert summary["latency_s"][side]["p50"] == pytest.approx(totals.quantile(0.5))
        assert summary["latency_s"][side]["p95"] == pytest.approx(totals.quantile(0.95))
    ours = requests[requests.side == "nanobanana service"]
    # The service's stages never add up to more than the whole request.
    stages = ours[["validate", "reserve", "prompt_safety", "generate", "image_safety", "store"]].sum(axis=1)
    assert (stages <= ours.total + 1e-6).all()
    stages_csv = pd.read_csv(results / "speed/stages.csv").set_index("stage")
    assert stages_csv.loc["denoising", "ours_p50_ms"] == pytest.approx(ours.denoising.median() * 1000, abs=0.01)


def test_errors_rates_by_cause_match_the_requests_and_no_credit_was_lost(results):
    requests = pd.read_csv(results / "errors/requests.csv")
    by_cause = pd.read_csv(results / "errors/by_cause.csv").set_index("cause")
    checks = json.loads((results / "errors/checks.json").read_text())
    assert checks["all_passed"]
    for cause, group in requests.groupby("cause"):
        assert by_cause.loc[cause, "error_rate"] == pytest.approx((group.outcome != "ok").mean())
    assert (requests.outcome == requests.expected).all()
    # Injected faults that were charged came back in full.
    refunds = checks["failed_requests_refunded_in_full"]
    assert refunds["charged_then_failed"] >= 2
    assert refunds["credits_refunded"] == refunds["credits_charged"]


def test_adherence_accuracy_is_the_share_of_correct_images(results):
    samples = pd.read_csv(results / "adherence/samples.csv")
    table = pd.read_csv(results / "adherence/table.csv")
    table = table[table.images.notna()].set_index(["task", "split"])
    assert set(samples.task) == {"colour", "shape", "count", "position", "two_objects"}
    for (task, split), group in samples.groupby(["task", "split"]):
        row = table.loc[(task, split)]
        assert row.images == len(group) == 2
        assert row.accuracy == pytest.approx(group.correct.mean())
        assert row.ci_low <= row.accuracy <= row.ci_high
    # The analyser reads pictures drawn to the prompt correctly: the scorer's ceiling is 100%.
    references = samples[samples.task != "two_objects"].reference_correct.astype(bool)
    assert references.all()
    summary = json.loads((results / "adherence/summary.json").read_text())
    assert "random weights" in summary["note"]


def test_report_holds_every_section_table_and_plot(results):
    _eval("report", "--results", str(results))  # the command line itself, once
    report = results / "report"
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    for heading in ("Machine, versions, configuration", "Speed", "Errors and credits", "Prompt adherence"):
        assert f"## {heading}" in md
    for item in ("diffusers", "transformers", "gradio", "RAM", "max_images"):
        assert item in md
    assert "python -m eval safety" in md  # not run here: the report says how to make it
    images = sorted(p.name for p in report.glob("*.png"))
    assert len(images) >= 5
    for name in images:
        assert f"({name})" in md and f"src='{name}'" in html


@pytest.mark.slow
def test_throughput_compares_both_apps_over_http_and_writes_its_report(tiny_model_yaml, tmp_path):
    out = tmp_path / "throughput"
    _run("throughput", "--small", "--clients", "1", "2", "--seconds", "2", "--model", str(tiny_model_yaml),
         "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert [row["clients"] for row in summary["by_clients"]] == [1, 2]
    for row in summary["by_clients"]:
        assert row["ours_requests"] > 0 and row["naive_requests"] > 0
        assert row["ours_failures"] == 0 and row["naive_failures"] == 0
    fair = summary["fairness"]
    assert fair["ours"]["light_requests"] > 0 and fair["ours"]["light_wait_p95"] is not None
    report = (out / "report.md").read_text()
    assert "| 2 |" in report and "Why the ratio moves" in report and (out / "throughput.png").stat().st_size
