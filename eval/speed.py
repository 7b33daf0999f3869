"""`python -m eval speed`: how fast the app answers, each figure beside a bare diffusers call on the same model.

1. Cold start, in fresh subprocesses: import → pipeline ready for our `Generator`, for the whole service
   (`build_studio` + model + safety filters loaded), and for a bare `AutoPipelineForText2Image`.
2. Per stage, over N warm requests through the service (`Studio.generate`, an anonymous visitor each):
   text encoding, denoising and decoding from `GenerationResult.timings`; validation, prompt safety, image
   safety and storage from what the studio records (`StudioResult.timings`). The bare call is timed with
   the same stage hooks. Bare and ours alternate (ABBA, a pause before each call), so machine noise hits both
   alike; p50 and p95 of each.
3. Throughput: the same N requests sent by K threads at once through the service, against the bare
   pipeline called N times in a row (one diffusers pipeline object cannot run two calls at once).

Writes `requests.csv`, `cold_start.csv`, `stages.csv`, `throughput.csv`, `summary.json` and PNG plots under
`--out` (default `results/speed`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from eval.common import (
    add_common_arguments,
    apply_threads,
    command_line,
    environment,
    generation_config,
    safety_filter,
    summary,
    write_csv,
    write_json,
)

GENERATION_STAGES = ("text_encoding", "denoising", "decoding")
SERVICE_STAGES = ("validate", "reserve", "prompt_safety", "image_safety", "store")
SETTLE_S = 0.3

# Each cold-start side runs in a fresh interpreter; `t0` is taken before the first import.
_COLD_START = {
    "nanobanana generator": """
import time; t0 = time.perf_counter()
import json, sys
from nanobanana.generation import Generator
from eval.common import generation_config
gen = Generator(generation_config(sys.argv[1] or None))
t1 = time.perf_counter(); gen.load(); t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "ready_s": t2 - t0}))
""",
    "nanobanana service": """
import time; t0 = time.perf_counter()
import json, sys, tempfile
from nanobanana.generation import Generator
from nanobanana.service.build import build_studio
from eval.common import generation_config, safety_filter
t1 = time.perf_counter()
studio = build_studio(generator=Generator(generation_config(sys.argv[1] or None)),
                      safety=safety_filter(sys.argv[2]), data_dir=tempfile.mkdtemp(), start_sweeper=False)
studio.services.generator.load(); studio.services.safety.checker
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "ready_s": t2 - t0}))
""",
    "bare diffusers": """
import time; t0 = time.perf_counter()
import json, sys
import torch
from diffusers import AutoPipelineForText2Image
t1 = time.perf_counter()
source, local = sys.argv[3], sys.argv[4] == "1"
pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=torch.float32, local_files_only=local).to("cpu")
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "ready_s": t2 - t0}))
""",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "speed", help="cold start, per-stage time, p50/p95 and throughput vs bare diffusers",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser, "speed")
    parser.add_argument("-n", "--requests", type=int, default=None, help="warm requests per side (default 20; small 3)")
    parser.add_argument("-k", "--concurrency", type=int, default=None, help="threads at once (default 4; small 2)")
    parser.add_argument("--cold-starts", type=int, default=None, help="subprocesses per side (default 3; small 1)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--prompt", default="a red circle on a blue background")
    parser.add_argument("--safety", choices=["on", "off"], default="on",
                        help="on: the configured safety filters, as the app runs (default); off: allow all")
    parser.set_defaults(func=run)


# -- 1. cold start ------------------------------------------------------------------------------------
def cold_starts(args: argparse.Namespace, config: Any, repeats: int) -> list[dict[str, Any]]:
    model = config.model
    source = str(model.local_path) if model.is_local else model.source
    argv = [args.model or "", args.safety, source, "1" if model.is_local else "0"]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    rows = []
    for repeat in range(repeats):
        for side, code in _COLD_START.items():  # interleaved: a slow spell hits every side
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False,
                cwd=Path(__file__).resolve().parent.parent, env=env,
            )
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"cold start of {side} failed:\n{done.stderr[-2000:]}")
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"side": side, "repeat": repeat, **measured, "process_wall_s": wall})
    return rows


# -- 2. warm requests, stage by stage -----------------------------------------------------------------
def _bare_stage_clock(pipe: Any) -> Any:
    # The generator's own stage hooks, installed on the bare pipeline: both sides are timed the same way.
    from nanobanana.generation.generator import _install_stage_hooks, _StageClock

    clock = _StageClock()
    _install_stage_hooks(SimpleNamespace(base=pipe), clock)
    return clock


def make_bare_call(pipe: Any, settings: Any) -> Any:
    """A bare diffusers call with the same arguments and generators as our request; returns its timings."""
    import torch

    clock = _bare_stage_clock(pipe)

    def call(seed: int) -> dict[str, float]:
        clock.reset()
        started = time.perf_counter()
        with torch.inference_mode():
            pipe(
                prompt=settings.prompt,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                width=settings.width,
                height=settings.height,
                generator=[torch.Generator("cpu").manual_seed(seed)],
                output_type="pil",
            )
        total = time.perf_counter() - started
        return {
            "total": total,
            "pipeline": total,
            "text_encoding": clock.text_encoding,
            "denoising": max(0.0, total - clock.text_encoding - clock.decoding),
            "decoding": clock.decoding,
        }

    return call


def studio_row(result: Any) -> dict[str, float]:
    """One service request's timings: the studio's stages plus the generator's."""
    row = {stage: result.timings.get(stage, 0.0) for stage in (*SERVICE_STAGES, "generate", "pipeline", "total")}
    if "write_files" in result.timings:  # part of "store": encoding and writing the PNGs
        row["write_files"] = result.timings["write_files"]
    gen = result.generation.timings
    row.update(text_encoding=gen.text_encoding, denoising=gen.denoising, decoding=gen.decoding)
    return row


def warm_requests(studio: Any, bare_call: Any, request_for: Any, identity_for: Any, n: int, seed: int) -> list[dict]:
    # Warm-up: the first calls pay one-off allocations (and the safety models' first inference).
    bare_call(seed)
    studio.generate(request_for(seed), identity_for("warm-up"))
    rows = []

    def bare(i: int) -> None:
        rows.append({"side": "bare diffusers", "request": i, **bare_call(seed + i)})

    def ours(i: int) -> None:
        result = studio.generate(request_for(seed + i), identity_for(f"warm-{i}"))
        rows.append({"side": "nanobanana service", "request": i, **studio_row(result)})

    for i in range(n):
        # ABBA order, and a pause before each call: what a call leaves behind (after an image check the
        # filter's ONNX threads keep spinning for a moment, slowing whatever runs next) must not fall on
        # one side only. The throughput test below keeps that effect, as a busy server sees it.
        for side in (bare, ours) if i % 2 == 0 else (ours, bare):
            time.sleep(SETTLE_S)
            side(i)
    return rows


def stage_table(rows: list[dict]) -> list[dict[str, Any]]:
    table = []
    present = {key for row in rows for key in row}
    for stage in (*SERVICE_STAGES[:3], *GENERATION_STAGES, "pipeline", *SERVICE_STAGES[3:], "write_files", "total"):
        if stage not in present:
            continue
        entry: dict[str, Any] = {"stage": stage}
        for side, label in (("nanobanana service", "ours"), ("bare diffusers", "bare")):
            values = [r[stage] for r in rows if r["side"] == side and stage in r]
            stats = summary(values) if values else None
            entry[f"{label}_p50_ms"] = round(stats["p50"] * 1000, 2) if stats else None
            entry[f"{label}_p95_ms"] = round(stats["p95"] * 1000, 2) if stats else None
        table.append(entry)
    return table


# -- 3. throughput ------------------------------------------------------------------------------------
def throughput(
    studio: Any, bare_call: Any, request_for: Any, identity_for: Any, n: int, k: int, seed: int, threads: int | None
):
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        studio.generate(request_for(seed + i), identity_for(f"load-{i}"))
        with lock:
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=k, initializer=apply_threads, initargs=(threads,)) as pool:
        list(pool.map(one, range(n)))
    ours_wall = time.perf_counter() - started

    started = time.perf_counter()
    bare_latencies = []
    for i in range(n):
        t = time.perf_counter()
        bare_call(seed + i)
        bare_latencies.append(time.perf_counter() - t)
    bare_wall = time.perf_counter() - started
    ours, bare = summary(latencies), summary(bare_latencies)
    return [
        {"side": "nanobanana service", "concurrency": k, "requests": n, "wall_s": ours_wall,
         "requests_per_min": 60 * n / ours_wall, "latency_p50_s": ours["p50"], "latency_p95_s": ours["p95"]},
        {"side": "bare diffusers", "concurrency": 1, "requests": n, "wall_s": bare_wall,
         "requests_per_min": 60 * n / bare_wall, "latency_p50_s": bare["p50"], "latency_p95_s": bare["p95"]},
    ]


# -- plots --------------------------------------------------------------------------------------------
def plot(out: Path, cold: list[dict], rows: list[dict], stages: list[dict], through: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    shown = [s for s in stages if s["stage"] not in ("total", "pipeline", "write_files")]
    y = range(len(shown))
    ours = [s["ours_p50_ms"] or 0 for s in shown]
    bare = [s["bare_p50_ms"] or 0 for s in shown]
    axes[0].barh([i + 0.2 for i in y], ours, height=0.4, label="nanobanana service")
    axes[0].barh([i - 0.2 for i in y], bare, height=0.4, label="bare diffusers")
    axes[0].set_yticks(list(y), [s["stage"] for s in shown])
    axes[0].invert_yaxis()
    axes[0].set_xlabel("median ms per request")
    axes[0].set_title("Time per stage (p50)")
    axes[0].legend(loc="lower right")
    sides = [("nanobanana service", "C0", "nanobanana service\n(whole request)"),
             ("bare diffusers", "C1", "bare diffusers\n(pipeline call)")]
    data = [[r["total"] for r in rows if r["side"] == side] for side, _, _ in sides]
    axes[1].boxplot(data, tick_labels=[label for _, _, label in sides])
    for i, (values, (_, colour, _)) in enumerate(zip(data, sides, strict=True), start=1):
        axes[1].scatter([i] * len(values), values, s=10, alpha=0.6, color=colour)
    axes[1].set_ylabel("seconds")
    axes[1].set_ylim(bottom=0)
    axes[1].set_title(f"Warm request latency (n={len(data[0])} each)")
    fig.tight_layout()
    fig.savefig(out / "speed_stages.png", dpi=110)
    plt.close(fig)
    names.append("speed_stages.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    cold_sides = list(dict.fromkeys(r["side"] for r in cold))
    imports = [summary([r["import_s"] for r in cold if r["side"] == s])["p50"] for s in cold_sides]
    loads = [summary([r["load_s"] for r in cold if r["side"] == s])["p50"] for s in cold_sides]
    axes[0].barh(cold_sides, imports, label="imports (ours import diffusers inside load)")
    axes[0].barh(cold_sides, loads, left=imports, label="load (model; service: + database, filters)")
    axes[0].set_xlabel("seconds (median)")
    axes[0].set_title("Cold start: import → ready")
    axes[0].legend(loc="lower right", fontsize=8)
    serial = 60 / summary([r["total"] for r in rows if r["side"] == "nanobanana service"])["mean"]
    labels = [f"{t['side']}\n{t['concurrency']} at once" for t in through]
    labels[-1] += " (pipeline only)"
    axes[1].bar([*labels, "nanobanana service\none at a time"], [*(t["requests_per_min"] for t in through), serial],
                color=["C0", "C1", "C2"])
    axes[1].tick_params(axis="x", labelsize=8)
    axes[1].set_ylabel("requests per minute")
    axes[1].set_title("Throughput")
    fig.tight_layout()
    fig.savefig(out / "speed_cold_throughput.png", dpi=110)
    plt.close(fig)
    names.append("speed_cold_throughput.png")
    return names


def run(args: argparse.Namespace) -> int:
    from nanobanana.generation import GenerationRequest, Generator
    from nanobanana.service.accounts import Identity
    from nanobanana.service.build import build_studio

    apply_threads(args.threads)
    n = args.requests or (3 if args.small else 20)
    k = args.concurrency or (2 if args.small else 4)
    repeats = args.cold_starts if args.cold_starts is not None else (1 if args.small else 3)
    args.out.mkdir(parents=True, exist_ok=True)
    config = generation_config(args.model)

    print(f"cold start: {repeats} × {len(_COLD_START)} subprocesses", flush=True)
    cold = cold_starts(args, config, repeats)

    with tempfile.TemporaryDirectory(prefix="nanobanana-speed-") as data_dir:
        studio = build_studio(
            generator=Generator(config), safety=safety_filter(args.safety), data_dir=Path(data_dir),
            start_sweeper=False,
        )
        try:
            loaded = studio.services.generator.load()
            from eval.common import bare_pipeline

            def request_for(seed: int) -> GenerationRequest:
                return GenerationRequest(args.prompt, seed=seed, steps=args.steps)

            def identity_for(name: str) -> Identity:
                return Identity.anonymous(f"speed-{name}")

            settings = studio.services.generator.plan(request_for(args.seed)).settings
            bare_call = make_bare_call(bare_pipeline(config, loaded), settings)
            print(f"warm requests: {n} per side, interleaved", flush=True)
            rows = warm_requests(studio, bare_call, request_for, identity_for, n, args.seed)
            print(f"throughput: {n} requests, {k} at once", flush=True)
            through = throughput(
                studio, bare_call, request_for, identity_for, n, k, args.seed + 1000, args.threads
            )
        finally:
            studio.close()

    stages = stage_table(rows)
    write_csv(args.out / "cold_start.csv", cold)
    write_csv(args.out / "requests.csv", rows)
    write_csv(args.out / "stages.csv", stages)
    write_csv(args.out / "throughput.csv", through)
    cold_summary = {
        side: {
            key: summary([r[key] for r in cold if r["side"] == side])["p50"]
            for key in ("import_s", "load_s", "ready_s")
        }
        for side in _COLD_START
    }
    totals = {
        side: summary([r["total"] for r in rows if r["side"] == side])
        for side in ("nanobanana service", "bare diffusers")
    }
    result = {
        "command": command_line("speed", args, "requests", "concurrency", "steps", "threads")
        + f" --safety {args.safety}",
        "environment": environment(),
        "model": config.model.name,
        "settings": {"width": settings.width, "height": settings.height, "steps": settings.steps,
                     "guidance": settings.guidance, "scheduler": settings.scheduler, "prompt": settings.prompt},
        "safety": args.safety,
        "requests": n,
        "concurrency": k,
        "cold_start_p50_s": cold_summary,
        "latency_s": totals,
        "throughput": through,
        "plots": plot(args.out, cold, rows, stages, through),
    }
    write_json(args.out / "summary.json", result)

    print(f"model {config.model.name} {settings.width}×{settings.height}, {settings.steps} steps, safety {args.safety}")
    for side, values in cold_summary.items():
        print(f"  cold start {side:22} {values['ready_s']:7.2f} s (imports {values['import_s']:.2f} s)")
    for side, stats in totals.items():
        print(f"  warm {side:28} p50 {stats['p50'] * 1000:8.1f} ms  p95 {stats['p95'] * 1000:8.1f} ms")
    for t in through:
        print(f"  throughput {t['side']:22} {t['requests_per_min']:7.1f} requests/min (K={t['concurrency']})")
    print(f"wrote {args.out}/summary.json")
    return 0
