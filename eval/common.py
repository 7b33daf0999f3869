"""What the eval commands share: the model they load, the machine they ran on, CSV/JSON output and the
statistics (Wilson intervals, percentiles). No generation or service logic lives here: commands call
`nanobanana.generation` and `nanobanana.service.studio` exactly as the app does.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from nanobanana.config import REPO_ROOT
from nanobanana.generation import GenerationConfig, load_generation_config, model_config_from_reference

RESULTS = Path("results")
BUNDLED = "bundled"
VERSIONED = ("torch", "diffusers", "transformers", "gradio", "safetensors", "pillow", "numpy", "pandas")


def add_common_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--model", default=None,
        help="model reference: a config name, YAML file, diffusers folder or hub id (default: the configured one)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice and generation")
    parser.add_argument("--small", action="store_true", help="CI sizes: a few requests, seconds not minutes")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: on a shared CPU, more threads wait on each other; 0: torch's choice)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / command, help=f"output folder (default results/{command})"
    )


def apply_threads(threads: int | None) -> None:
    """Set torch's thread count for this thread; worker threads call it again (see `speed.throughput`)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def generation_config(model: str | None) -> GenerationConfig:
    """The app's configuration, with the model replaced when `model` names one."""
    config = load_generation_config()
    if model:
        config = config.model_copy(update={"model": model_config_from_reference(model)})
    return config


def default_size(config: GenerationConfig) -> tuple[int, int]:
    """The pixel size the app makes at the model's default aspect ratio (the same `size_for` the app uses),
    for a comparison that must ask another app for the same picture size. Models that leave their size
    multiple to the loaded weights get 8 (every diffusers VAE's)."""
    from nanobanana.generation.aspect import size_for

    model = config.model
    size = size_for(model.defaults.aspect_ratio, model.base_resolution, model.size_multiple or 8,
                    model.min_short_side, model.aspect_ratios)
    return size.width, size.height


def bundled_model_ready() -> bool:
    """True when the trained bundled model's folder exists (it holds model_index.json)."""
    try:
        folder = model_config_from_reference(BUNDLED).local_path
    except Exception:
        return False
    return folder is not None and (folder / "model_index.json").is_file()


def bare_pipeline(config: GenerationConfig, loaded: Any) -> Any:
    """The same model files loaded straight with diffusers, with the scheduler our generator uses."""
    from diffusers import AutoPipelineForText2Image

    model = config.model
    pipe = AutoPipelineForText2Image.from_pretrained(
        str(model.local_path) if model.is_local else model.source,
        dtype=loaded.dtype,
        local_files_only=model.is_local,
    ).to(loaded.device)
    pipe.scheduler = type(loaded.base.scheduler).from_config(loaded.base.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class AllowAll:
    """A safety filter that allows everything (`--safety off`): measures the path without the filters."""

    class _Allowed:
        allowed = True
        score = 0.0

    def check_prompt(self, text: str) -> Any:
        return self._Allowed()

    def check_image(self, image: Any) -> Any:
        return self._Allowed()


def safety_filter(choice: str) -> Any:
    """None (the configured `SafetyChecker`, as the app uses) or `AllowAll` for `--safety off`."""
    return AllowAll() if choice == "off" else None


# -- the machine and the versions ---------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Date, machine, versions and git commit: what a result was measured on."""
    commit = None
    head = REPO_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        commit = (REPO_ROOT / ".git" / ref[5:]).read_text().strip()[:12] if ref.startswith("ref: ") else ref[:12]
    except OSError:
        pass
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        threads = None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "torch_threads": threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in VERSIONED},
        "git_commit": commit,
    }


# -- output ---------------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def command_line(command: str, args: argparse.Namespace, *names: str) -> str:
    """The command that reproduces a run, e.g. `python -m eval speed --small --seed 0`."""
    parts = ["python -m eval", command]
    if getattr(args, "small", False):
        parts.append("--small")
    if getattr(args, "model", None):
        parts.append(f"--model {args.model}")
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            shown = " ".join(map(str, value)) if isinstance(value, list | tuple) else value
            parts.append(f"--{name.replace('_', '-')}" + ("" if value is True else f" {shown}"))
    parts.append(f"--seed {args.seed}")
    return " ".join(parts)


# -- statistics -----------------------------------------------------------------------------------------
def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at 0 and n, unlike the normal approximation)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values) if values else math.nan,
    }
