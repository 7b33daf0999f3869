"""`python -m nanobanana generate` as a researcher runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from PIL import Image

from nanobanana.config import REPO_ROOT


def run_cli(*args: str, model_dir) -> subprocess.CompletedProcess:
    env = os.environ | {"NANOBANANA_MODEL": str(model_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "nanobanana", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
    )


def test_generate_writes_pngs_and_a_result_json(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    done = run_cli(
        "generate",
        "a red circle on a blue background",
        "--aspect",
        "16:9",
        "-n",
        "2",
        "--seed",
        "1",
        "--out",
        str(out),
        model_dir=tiny_model_dir,
    )
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "result.json").read_text())
    assert meta["seeds"] == [1, 2] and meta["settings"]["aspect_ratio"] == "16:9"
    assert set(meta["timings"]) == {"load", "text_encoding", "denoising", "decoding", "total"}
    sizes = {Image.open(out / name).size for name in meta["files"]}
    assert sizes == {(meta["settings"]["width"], meta["settings"]["height"])}

    again = tmp_path / "again"
    init = out / meta["files"][0]
    done = run_cli(
        "generate",
        "a blue circle",
        "--init",
        str(init),
        "--strength",
        "0.7",
        "--seed",
        "5",
        "--json",
        "--out",
        str(again),
        model_dir=tiny_model_dir,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["settings"]["mode"] == "image-to-image" and result["settings"]["strength"] == 0.7


def test_a_bad_request_exits_non_zero_with_a_readable_message(tmp_path, tiny_model_dir):
    done = run_cli("generate", "a red circle", "--steps", "0", "--out", str(tmp_path), model_dir=tiny_model_dir)
    assert done.returncode == 1
    assert "error: Steps must be between 1" in done.stderr
    assert "Traceback" not in done.stderr
