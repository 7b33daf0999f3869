"""`python -m eval service-overhead`: what the service adds to a request, beyond the model and the filters.

One run, interleaved (generator, studio, generator, studio, ...) on the configured model so that machine
noise hits both alike:
- **generator**: `Generator.generate` alone (what `python -m eval overhead` compares with bare diffusers);
- **studio**: `Studio.generate` for a signed-in account (validate, reserve credits, safety hooks,
  generate, store the PNGs, usage row, settle) on a fresh SQLite data folder (or `--database-url`).

The service's own overhead per request is the studio's total minus the pipeline call and minus the time
in the safety models, reported as a share of the studio's total (target ≤ 3%). The filters are a
pass-through by default (their models are measured by `python -m eval safety`); `--real-safety` runs the
real `SafetyChecker` and subtracts its time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from nanobanana.generation import GenerationRequest, Generator, load_generation_config, model_config_from_reference

STAGES = ("validate", "reserve", "prompt_safety", "generate", "image_safety", "store")


class PassThrough:
    """A safety filter that allows everything at no cost: isolates the service's own work."""

    def check_prompt(self, text):
        from nanobanana.safety import Verdict

        return Verdict.allow()

    def check_image(self, image):
        from nanobanana.safety import Verdict

        return Verdict.allow()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("service-overhead", help="service overhead per request vs the model's time")
    parser.add_argument("--model", default=None, help="model reference (default: the configured one)")
    parser.add_argument("-n", "--repeats", type=int, default=20, help="requests per side (default 20)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--images", type=int, default=1, help="images per request (default 1)")
    parser.add_argument("--prompt", default="a red circle on a blue background")
    parser.add_argument("--real-safety", action="store_true", help="run the real SafetyChecker (time subtracted)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary data folder")
    parser.add_argument("--out", type=Path, default=Path("results/overhead"))
    parser.set_defaults(func=run)


def measure(generator: Generator, studio, repeats: int, request: GenerationRequest) -> dict:
    from nanobanana.service.accounts import OAuthProfileData

    account = studio.sign_in(OAuthProfileData("local", "overhead-bench", "overhead-bench"))
    studio.services.ledger.grant(account.id, 10**9, "benchmark")
    studio.generate(request, account.identity)  # warm-up: first calls pay one-off allocations
    generator.generate(request)

    rows: list[dict] = []
    for _ in range(repeats):
        started = time.perf_counter()
        plain = generator.generate(request)
        generator_s = time.perf_counter() - started
        started = time.perf_counter()
        result = studio.generate(request, account.identity)
        studio_s = time.perf_counter() - started
        t = result.timings
        pipeline = t["pipeline"]
        safety = t.get("prompt_safety", 0.0) + t.get("image_safety", 0.0)
        rows.append({
            "generator_s": generator_s,
            "generator_pipeline_s": plain.timings.text_encoding + plain.timings.denoising + plain.timings.decoding,
            "studio_s": studio_s,
            "pipeline_s": pipeline,
            "safety_s": safety,
            "overhead_s": studio_s - pipeline - safety,
            **{f"{stage}_s": t.get(stage, 0.0) for stage in STAGES},
        })
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    share = statistics.median(r["overhead_s"] / r["studio_s"] for r in rows)
    paired = statistics.median(
        (r["studio_s"] - r["safety_s"]) / r["generator_s"] - 1 for r in rows
    )
    settings = generator.plan(request).settings
    return {
        "model": generator.model_id,
        "width": settings.width,
        "height": settings.height,
        "steps": settings.steps,
        "images": settings.num_images,
        "repeats": repeats,
        "median_s": median,
        "overhead_share": share,
        "studio_vs_generator": paired,
        "database": studio.services.db.engine.dialect.name,
    }


def run(args: argparse.Namespace) -> int:
    from nanobanana.service.build import build_studio
    from nanobanana.service.config import load_service_config

    config = load_generation_config()
    if args.model:
        config = config.model_copy(update={"model": model_config_from_reference(args.model)})
    generator = Generator(config)
    generator.load()
    request = GenerationRequest(prompt=args.prompt, seed=0, steps=args.steps, num_images=args.images)
    with tempfile.TemporaryDirectory(prefix="nanobanana-overhead-") as data_dir:
        service = load_service_config().model_copy(update={"data_dir": Path(data_dir),
                                                           "database_url": args.database_url})
        service = service.model_copy(update={"storage": service.storage.model_copy(
            update={"account_max_images": 10**6, "account_max_bytes": 10**12})})
        studio = build_studio(generator=generator, safety=None if args.real_safety else PassThrough(),
                              config=service, start_sweeper=False)
        try:
            report = measure(generator, studio, args.repeats, request)
        finally:
            studio.close()
    report["safety"] = "SafetyChecker (subtracted)" if args.real_safety else "pass-through"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "service_overhead.json").write_text(json.dumps(report, indent=2))

    m = report["median_s"]
    print(
        f"model {report['model']} {report['width']}×{report['height']}, {report['steps']} steps, "
        f"{report['images']} image(s), {report['repeats']} interleaved requests per side, "
        f"{report['database']}, safety: {report['safety']}"
    )
    print(f"  {'median ms':28} {'':>9}")
    print(f"  {'Generator.generate':28} {m['generator_s'] * 1000:9.2f}")
    print(f"  {'Studio.generate':28} {m['studio_s'] * 1000:9.2f}")
    print(f"  {'  of which pipeline call':28} {m['pipeline_s'] * 1000:9.2f}")
    print(f"  {'  of which safety models':28} {m['safety_s'] * 1000:9.2f}")
    print(f"  {'  service overhead':28} {m['overhead_s'] * 1000:9.2f}")
    for stage in ("validate", "reserve", "store"):
        print(f"  {'    ' + stage:28} {m[stage + '_s'] * 1000:9.2f}")
    print(
        f"  service overhead share of the request: {report['overhead_share'] * 100:.2f}% (target ≤ 3%); "
        f"studio vs generator alone: {report['studio_vs_generator'] * 100:+.2f}%"
    )
    return 0
