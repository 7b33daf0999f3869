"""`python -m eval overhead`: what our generation module adds over a bare diffusers call.

Both run on the same model files and settings in one process, interleaved (bare, ours, bare, ours, ...)
so that machine noise hits both alike. The bare side is a second pipeline loaded straight with
`AutoPipelineForText2Image.from_pretrained` and called with the same arguments and generators.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from nanobanana.generation import (
    GenerationRequest,
    Generator,
    load_generation_config,
    model_config_from_reference,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("overhead", help="generation module overhead vs a bare diffusers call")
    parser.add_argument("--model", default=None, help="model reference (default: the configured one)")
    parser.add_argument("-n", "--repeats", type=int, default=30, help="calls per side (default 30)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--prompt", default="a red circle on a blue background")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("results/overhead"))
    parser.set_defaults(func=run)


def measure(generator: Generator, bare_pipe, repeats: int, prompt: str, steps: int | None) -> dict:
    request = GenerationRequest(prompt=prompt, seed=0, steps=steps)
    settings = generator.plan(request).settings

    def bare_call() -> None:
        with torch.inference_mode():
            bare_pipe(
                prompt=settings.prompt,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                width=settings.width,
                height=settings.height,
                generator=[torch.Generator("cpu").manual_seed(s) for s in settings.seeds],
                output_type="pil",
            )

    def ours() -> None:
        generator.generate(request)

    for fn in (bare_call, ours):  # warm-up: first calls pay one-off allocations
        fn()
    wall: dict[str, list[float]] = {"bare": [], "ours": []}
    cpu: dict[str, list[float]] = {"bare": [], "ours": []}
    for _ in range(repeats):
        for name, fn in (("bare", bare_call), ("ours", ours)):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - cpu_start)
            wall[name].append(time.perf_counter() - wall_start)

    def paired_overhead(times: dict[str, list[float]]) -> float:
        # Median of per-pair ratios: each pair ran back to back, so slow spells of the machine cancel out.
        return statistics.median(o / b - 1 for o, b in zip(times["ours"], times["bare"], strict=True))

    return {
        "model": generator.model_id,
        "width": settings.width,
        "height": settings.height,
        "steps": settings.steps,
        "repeats": repeats,
        "bare_median_s": statistics.median(wall["bare"]),
        "ours_median_s": statistics.median(wall["ours"]),
        "bare_cpu_median_s": statistics.median(cpu["bare"]),
        "ours_cpu_median_s": statistics.median(cpu["ours"]),
        "overhead_wall": paired_overhead(wall),
        "overhead_cpu": paired_overhead(cpu),
    }


def run(args: argparse.Namespace) -> int:
    from diffusers import AutoPipelineForText2Image

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_generation_config()
    if args.model:
        config = config.model_copy(update={"model": model_config_from_reference(args.model)})
    generator = Generator(config)
    model = generator.load()
    bare = AutoPipelineForText2Image.from_pretrained(
        str(config.model.local_path) if config.model.is_local else config.model.source,
        dtype=model.dtype,
        local_files_only=config.model.is_local,
    ).to(model.device)
    bare.scheduler = type(model.base.scheduler).from_config(model.base.scheduler.config)
    bare.set_progress_bar_config(disable=True)
    report = measure(generator, bare, args.repeats, args.prompt, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(report, indent=2))
    print(
        f"model {report['model']} {report['width']}×{report['height']}, {report['steps']} steps, "
        f"{report['repeats']} interleaved calls per side"
    )
    print(f"  {'':16} {'wall ms':>9} {'CPU ms':>9}")
    print(f"  {'bare diffusers':16} {report['bare_median_s'] * 1000:9.2f} {report['bare_cpu_median_s'] * 1000:9.2f}")
    print(f"  {'nanobanana':16} {report['ours_median_s'] * 1000:9.2f} {report['ours_cpu_median_s'] * 1000:9.2f}")
    print(
        f"  overhead (median of paired ratios): wall {report['overhead_wall'] * 100:+.2f}%, "
        f"CPU {report['overhead_cpu'] * 100:+.2f}%  (target ≤ 3%)"
    )
    return 0
