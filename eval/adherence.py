"""`python -m eval adherence`: does the image show what the prompt asked? A GenEval-style test of the
bundled shapes model, scored by the deterministic analyser `nanobanana.bundled.shapes` (no second model).

Tasks, each scored on the one thing it tests (GenEval's idea): `colour` (the main object's colour),
`shape`, `count` (1-3 objects), `position` (left/right/top/bottom/center), and `two_objects` ("a red circle
and a blue square": both must be found). Prompts come from the training world's own vocabulary, in three
splits reported separately: `seen` (training phrasings, combinations seen in training), `new_phrasing`
(`HELD_OUT_TEMPLATES`, never seen in training), `held_out_combo` (colour/shape/background triples from
`held_out_combos()`, never seen in training). `two_objects` is one cell (`seen`): the 64 px model never saw
such captions, the 256 px one did.

`--baseline MODEL` runs a second model on the very same prompts and seeds (the old 64 px bundled model, say)
and writes `compare.csv`: both accuracies with their 95% intervals side by side, per task and split; and
`timing.csv`: seconds per one-image request of each, the two models taking turns in the same run.
`edge_px` (per image) is how soft the main object's outline is (`shapes.analyser.edge_width`): pixels of
blur across it at a 256 px display.

Each prompt is generated with several seeds (one request, `num_images` = seeds). Accuracy per task and
split with a 95% interval: the wider of a Wilson interval over images (sound at 0% and 100%) and a
bootstrap over prompts (the seeds of one prompt are not independent).
`reference` is the analyser's accuracy on pictures drawn by `render` for the same prompts: the ceiling
the scorer allows. Uses the bundled model when `models/nanobanana-shapes` exists, else the configured one
(random weights: the scores then only prove that the pipeline runs).

Writes `samples.csv`, `table.csv` (a `model` column tells the models apart), `summary.json`,
`adherence.png` and `samples.png` (and with `--baseline`, `compare.csv`) under `--out` (default
`results/adherence`).
"""

from __future__ import annotations

import argparse
import random
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.common import (
    BUNDLED,
    add_common_arguments,
    apply_threads,
    bundled_model_ready,
    command_line,
    environment,
    generation_config,
    wilson,
    write_csv,
    write_json,
)
from nanobanana.bundled.shapes import (
    BACKGROUNDS,
    COUNTS,
    HELD_OUT_TEMPLATES,
    POSITIONS,
    SHAPE_COLOURS,
    SHAPES,
    TRAIN_TEMPLATES,
    PromptSpec,
    analyse,
    caption,
    held_out_combos,
    parse_prompt,
    render,
    score,
)
from nanobanana.bundled.shapes.analyser import edge_width

TASKS = ("colour", "shape", "count", "position", "two_objects")
SPLITS = ("seen", "new_phrasing", "held_out_combo")
RANDOM_WEIGHTS_NOTE = (
    "This ran on {model}, which has random weights (the trained bundled model, models/nanobanana-shapes, "
    "is not here): its scores are meaningless and only show that the evaluation runs end to end."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "adherence", help="GenEval-style prompt adherence of the bundled model, scored by the shapes analyser",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser, "adherence")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per task and split (default 10; small 2)")
    parser.add_argument("--seeds", type=int, default=None, help="images (seeds) per prompt (default 4; small 2)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument(
        "--baseline", default=None,
        help="a second model reference run on the same prompts and seeds, reported side by side",
    )
    parser.add_argument(
        "--timing-runs", type=int, default=None,
        help="with --baseline: one-image requests per model timed alternately (default 20; small 4)",
    )
    parser.set_defaults(func=run)


# -- prompts ------------------------------------------------------------------------------------------
def _single_spec(task: str, split: str, rng: random.Random, held_out: list[tuple[str, str, str]]) -> PromptSpec:
    held = set(held_out)
    while True:
        if split == "held_out_combo":
            colour, shape, background = rng.choice(held_out)
        else:
            colour, shape = rng.choice(SHAPE_COLOURS), rng.choice(SHAPES)
            background = rng.choice(BACKGROUNDS)
            if background == colour or (colour, shape, background) in held:
                continue
        count = rng.choice(COUNTS) if task == "count" else 1
        position = rng.choice(POSITIONS) if task == "position" else None
        return PromptSpec(colour, shape, background, position, count).filled()


def task_prompts(task: str, split: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    """`n` prompts for one task and split: text, what it asks for (`spec`) and the scored field."""
    if task == "two_objects":
        rows = []
        for _ in range(n):
            (c1, c2), (s1, s2) = rng.sample(SHAPE_COLOURS, 2), rng.sample(SHAPES, 2)
            background = rng.choice([b for b in BACKGROUNDS if b not in (c1, c2)])
            text = f"a {c1} {s1} and a {c2} {s2} on a {background} background"
            spec = parse_prompt(text).filled()
            rows.append({"prompt": text, "spec": spec, "pair": ((c1, s1), (c2, s2)), "background": background})
        return rows
    held_out = sorted(held_out_combos())
    templates = HELD_OUT_TEMPLATES if split == "new_phrasing" else TRAIN_TEMPLATES
    rows = []
    for _ in range(n):
        spec = _single_spec(task, split, rng, held_out)
        text = caption(spec, rng.choice(templates))
        said = parse_prompt(text).filled()
        if said != spec:  # the prompt must say exactly what is scored
            raise AssertionError(f"{text!r} reads as {said}, not {spec}")
        rows.append({"prompt": text, "spec": spec, "pair": None, "background": spec.background})
    return rows


# -- scoring ------------------------------------------------------------------------------------------
def score_image(task: str, image: Any, item: dict[str, Any]) -> dict[str, Any]:
    """Analyse one image and score the task's field (plus what was seen, for the CSV)."""
    analysis = analyse(image)
    main = analysis.main
    seen = {
        "seen_background": analysis.background,
        "seen_count": analysis.count,
        "seen_colour": main.colour if main else "",
        "seen_shape": main.shape if main else "",
        "seen_position": main.position if main else "",
        "seen_objects": "; ".join(f"{o.colour} {o.shape} {o.position}" for o in analysis.objects[:4]),
    }
    if task == "two_objects":
        found = {(o.colour, o.shape) for o in analysis.objects}
        correct = all(pair in found for pair in item["pair"])
        exact = correct and analysis.count == 2 and analysis.background == item["background"]
        return {"correct": correct, "all_fields": exact, **seen}
    checks = score(analysis, item["spec"])
    field = "colour" if task == "colour" else task
    return {"correct": checks[field], "all_fields": all(checks.values()), **seen}


def bootstrap_ci(per_prompt: list[list[bool]], resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% interval of the image accuracy, resampling prompts (their seeds move together)."""
    if not per_prompt:
        return (float("nan"), float("nan"))
    correct = np.array([sum(p) for p in per_prompt], dtype=float)
    sizes = np.array([len(p) for p in per_prompt], dtype=float)
    picks = rng.integers(0, len(per_prompt), size=(resamples, len(per_prompt)))
    accuracy = correct[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    low, high = np.quantile(accuracy, [0.025, 0.975])
    return float(low), float(high)


def summarise(samples: list[dict[str, Any]], resamples: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    table = []
    cells = list(dict.fromkeys((s["task"], s["split"]) for s in samples))
    for task, split in cells:
        cell = [s for s in samples if s["task"] == task and s["split"] == split]
        prompts = list(dict.fromkeys(s["prompt_index"] for s in cell))
        per_prompt = [[s["correct"] for s in cell if s["prompt_index"] == p] for p in prompts]
        boot_low, boot_high = bootstrap_ci(per_prompt, resamples, rng)
        correct = sum(s["correct"] for s in cell)
        wilson_low, wilson_high = wilson(correct, len(cell))
        references = [s["reference_correct"] for s in cell if s["reference_correct"] != ""]
        table.append({
            "task": task, "split": split, "prompts": len(prompts), "images": len(cell),
            "correct": correct, "accuracy": correct / len(cell),
            # The wider of both: Wilson stays honest at 0% and 100%, the bootstrap at few prompts.
            "ci_low": min(wilson_low, boot_low), "ci_high": max(wilson_high, boot_high),
            "wilson_low": wilson_low, "wilson_high": wilson_high,
            "bootstrap_low": boot_low, "bootstrap_high": boot_high,
            "all_fields_accuracy": sum(s["all_fields"] for s in cell) / len(cell),
            "reference_accuracy": sum(references) / len(references) if references else None,
        })
    seen = [t["accuracy"] for t in table if t["split"] == "seen"]
    if seen:
        table.append({"task": "overall (mean of tasks)", "split": "seen", "prompts": None, "images": None,
                      "correct": None, "accuracy": sum(seen) / len(seen), "ci_low": None, "ci_high": None,
                      "all_fields_accuracy": None, "reference_accuracy": None})
    return table


# -- plots --------------------------------------------------------------------------------------------
def plot(out: Path, table: list[dict[str, Any]], model: str, trained: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [t for t in table if t["images"]]
    fig, ax = plt.subplots(figsize=(10, 4))
    splits = list(SPLITS)
    width = 0.8 / len(SPLITS)
    for j, split in enumerate(splits):
        for i, task in enumerate(TASKS):
            cell = next((t for t in rows if t["task"] == task and t["split"] == split), None)
            if cell is None:
                continue
            offset = (j - 1) * width
            x = i + offset
            err = [[cell["accuracy"] - cell["ci_low"]], [cell["ci_high"] - cell["accuracy"]]]
            ax.bar(x, cell["accuracy"], width, color=f"C{j}", yerr=err, capsize=3,
                   label=split if i == 0 else None)
            if cell["reference_accuracy"] is not None:
                ax.plot([x - width / 2, x + width / 2], [cell["reference_accuracy"]] * 2, color="black", lw=1)
    ax.set_xticks(range(len(TASKS)), TASKS)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (images)")
    ax.set_title(f"Prompt adherence of {model} (95% CI; black line: analyser on drawn references)"
                 + ("" if trained else "\nRANDOM WEIGHTS: these scores are meaningless"),
                 color="black" if trained else "darkred")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "adherence.png", dpi=110)
    plt.close(fig)
    return "adherence.png"


def plot_samples(out: Path, shown: list[tuple[Any, dict[str, Any]]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 6
    rows = max(1, (len(shown) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.1, rows * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, sample) in zip(axes.flat, shown, strict=False):
        ax.imshow(image)
        mark = "✓" if sample["correct"] else "✗"
        words = "\n".join(textwrap.wrap(sample["prompt"], 32)[:3])
        ax.set_title(f"{mark} [{sample['task']}, {sample['split']}]\n{words}", fontsize=6.5,
                     color="green" if sample["correct"] else "red")
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=110)
    plt.close(fig)
    return "samples.png"


def measure(generator: Any, args: argparse.Namespace, n_prompts: int, n_seeds: int,
            role: str = "model") -> tuple[list, list]:
    """Every cell's prompts through one model; the prompts and seeds depend only on `--seed`, so two models
    measured with the same arguments see the same ones."""
    from nanobanana.generation import GenerationRequest

    rng = random.Random(args.seed)
    per_call = generator.config.limits.max_images
    samples: list[dict[str, Any]] = []
    shown: list[tuple[Any, dict[str, Any]]] = []
    started = time.perf_counter()
    cells = [(t, s) for t in TASKS if t != "two_objects" for s in SPLITS] + [("two_objects", "seen")]
    for task, split in cells:
        for p, item in enumerate(task_prompts(task, split, n_prompts, rng)):
            base_seed = args.seed * 1_000_003 + len(samples) * 7
            images, seeds = [], []
            for first in range(0, n_seeds, per_call):
                result = generator.generate(GenerationRequest(
                    item["prompt"], seed=base_seed + first, num_images=min(per_call, n_seeds - first),
                    steps=args.steps,
                ))
                images += result.images
                seeds += result.seeds
            for image, seed in zip(images, seeds, strict=True):
                drawn = render(item["spec"], size=image.width, seed=seed)
                sample = {
                    "role": role, "model": generator.config.model.name, "task": task, "split": split,
                    "prompt_index": p,
                    "prompt": item["prompt"], "seed": seed, "width": image.width, "height": image.height,
                    **score_image(task, image, item),
                    "reference_correct": score_image(task, drawn, item)["correct"],
                    "edge_px": edge_width(image),
                }
                samples.append(sample)
            if p == 0:
                shown += [(images[0], samples[-len(images)])]
        print(f"  {generator.config.model.name:18} {task:12} {split:15} done "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    return samples, shown


def compare(baseline: list[dict[str, Any]], table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Baseline and model side by side per task and split."""
    rows = []
    for new in (t for t in table if t["images"]):
        old = next(t for t in baseline if t["task"] == new["task"] and t["split"] == new["split"])
        rows.append({
            "task": new["task"], "split": new["split"], "images": new["images"],
            "baseline_accuracy": old["accuracy"], "baseline_ci_low": old["ci_low"], "baseline_ci_high": old["ci_high"],
            "accuracy": new["accuracy"], "ci_low": new["ci_low"], "ci_high": new["ci_high"],
        })
    return rows


def time_per_image(generators: list[Any], runs: int, prompt: str = "a red circle and a blue square on white") -> list:
    """Seconds per one-image request of each model at its default settings, through the app's Generator;
    the models take turns (ABBA) so machine noise hits them alike."""
    from nanobanana.generation import GenerationRequest

    times: list[list[float]] = [[] for _ in generators]
    sizes = [generator.generate(GenerationRequest(prompt, seed=0, num_images=1)).images[0].size  # warm-up
             for generator in generators]
    for run in range(runs):
        order = range(len(generators)) if run % 2 == 0 else reversed(range(len(generators)))
        for i in order:
            started = time.perf_counter()
            generators[i].generate(GenerationRequest(prompt, seed=run + 1, num_images=1))
            times[i].append(time.perf_counter() - started)
    return [
        {"model": generator.config.model.name, "size": f"{w}x{h}", "runs": runs,
         "median_s": float(np.median(seconds)), "p90_s": float(np.quantile(seconds, 0.9))}
        for generator, seconds, (w, h) in zip(generators, times, sizes, strict=True)
    ]


def _median_edge(samples: list[dict[str, Any]], role: str) -> float | None:
    widths = [s["edge_px"] for s in samples if s["role"] == role and s["edge_px"] is not None]
    return float(np.median(widths)) if widths else None


def _load(reference: str | None) -> tuple[Any, bool, str | None]:
    from nanobanana.generation import Generator

    config = generation_config(reference)
    generator = Generator(config)
    generator.load()
    # Random weights: the test model, or an architecture built by model_builder and never trained.
    trained = config.model.name != "tiny-random" and "untrained" not in config.model.name
    return generator, trained, None if trained else RANDOM_WEIGHTS_NOTE.format(model=config.model.name)


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    n_prompts = args.prompts or (2 if args.small else 10)
    n_seeds = args.seeds or (2 if args.small else 4)
    model_ref = args.model or (BUNDLED if bundled_model_ready() else None)
    generator, trained, note = _load(model_ref)
    config = generator.config
    if note:
        print("NOTE: " + note, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    samples, shown = measure(generator, args, n_prompts, n_seeds)
    seconds = time.perf_counter() - started
    table = [{"role": "model", "model": config.model.name, **t}
             for t in summarise(samples, args.bootstrap, args.seed)]
    side_by_side = timing = None
    if args.baseline:
        base_generator, _, _ = _load(args.baseline)
        base_samples, _ = measure(base_generator, args, n_prompts, n_seeds, role="baseline")
        timing = time_per_image([base_generator, generator], args.timing_runs or (4 if args.small else 20))
        write_csv(args.out / "timing.csv", timing)
        base_name = base_generator.config.model.name
        base_table = [{"role": "baseline", "model": base_name, **t}
                      for t in summarise(base_samples, args.bootstrap, args.seed)]
        side_by_side = compare(base_table, table)
        write_csv(args.out / "compare.csv", side_by_side)
        samples, table = samples + base_samples, table + base_table
    write_csv(args.out / "samples.csv", samples)
    write_csv(args.out / "table.csv", table)
    summary = {
        "command": command_line("adherence", args, "prompts", "seeds", "steps", "baseline"),
        "environment": environment(),
        "model": config.model.name,
        "baseline": args.baseline,
        "seconds_per_image": timing,
        "edge_px_median": {role: _median_edge(samples, role) for role in ("model", "baseline") if args.baseline
                           or role == "model"},
        "trained_model": trained,
        "note": note,
        "steps": args.steps or config.model.defaults.steps,
        "prompts_per_cell": n_prompts,
        "seeds_per_prompt": n_seeds,
        "images": sum(s["role"] == "model" for s in samples),
        "seconds": seconds,
        "plots": [plot(args.out, [t for t in table if t["role"] == "model"], config.model.name, trained),
                  plot_samples(args.out, shown)],
    }
    write_json(args.out / "summary.json", summary)

    print(f"model {config.model.name}: {summary['images']} images in {summary['seconds']:.0f} s")
    if side_by_side:
        print(f"  {'task':12} {'split':15} {'baseline':>8}  95% CI          {'model':>8}  95% CI")
        for r in side_by_side:
            print(f"  {r['task']:12} {r['split']:15} {r['baseline_accuracy']:8.2f}  "
                  f"[{r['baseline_ci_low']:.2f}, {r['baseline_ci_high']:.2f}]  {r['accuracy']:8.2f}  "
                  f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
    else:
        print(f"  {'task':24} {'split':15} {'accuracy':>8}  95% CI         reference")
        for t in table:
            ci = f"[{t['ci_low']:.2f}, {t['ci_high']:.2f}]" if t["ci_low"] is not None else ""
            ref = f"{t['reference_accuracy']:.2f}" if t["reference_accuracy"] is not None else ""
            print(f"  {t['task']:24} {t['split']:15} {t['accuracy']:8.2f}  {ci:14} {ref}")
    print("  outline softness (edge_width, px at 256 px display; a drawn render ~0.9), median: "
          + ", ".join(f"{role} {value:.1f}" for role, value in summary["edge_px_median"].items() if value is not None))
    if timing:
        base, new = timing
        print(f"  one image, default settings (alternating, {base['runs']} each): {base['model']} {base['size']} "
              f"{base['median_s']:.3f} s, {new['model']} {new['size']} {new['median_s']:.3f} s "
              f"(median; ratio {new['median_s'] / base['median_s']:.2f})")
    if note:
        print("NOTE: " + note)
    print(f"wrote {args.out}/summary.json")
    return 0
