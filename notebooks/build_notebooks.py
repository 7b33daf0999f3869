"""Write the research notebooks (outputs stripped) from the cells below: `python notebooks/build_notebooks.py`.

Edit the cells here, not the .ipynb files, so the notebooks stay reviewable and output-free in git.
`--check` fails when a committed notebook differs from what this script writes or holds outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = '''\
# Parameters. Small settings (the default, and what CI runs) finish in well under two minutes on a CPU;
# set NANOBANANA_NOTEBOOK_SMALL=0 (or SMALL = False) for the bigger version.
import os

SMALL = os.environ.get("NANOBANANA_NOTEBOOK_SMALL", "1") != "0"
SEED = 7'''

SETUP = '''\
# Run from the repository root, offline, with one torch thread: on a shared CPU more threads mostly wait
# on each other (on this machine a call took ~15x longer with torch's default of two).
import sys
from pathlib import Path

ROOT = Path.cwd().resolve()
while not (ROOT / "nanobanana").is_dir() and ROOT != ROOT.parent:
    ROOT = ROOT.parent
os.chdir(ROOT)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import diffusers
import torch
import transformers

diffusers.utils.logging.disable_progress_bar()
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(1)'''

MODEL_FOLDER = '''\
from nanobanana.generation import load_generation_config
from nanobanana.bundled.builder import build_from_config


def ensure_model_folder(config):
    """The random-weights test model is built from its config when its folder is missing (as CI does).
    Only that one: the bundled model's folder comes from training, never from here."""
    folder = config.model.local_path
    if config.model.name == "tiny-random" and folder is not None and not (folder / "model_index.json").is_file():
        build_from_config(ROOT / "configs/models" / f"{config.model.name}.yaml", folder, seed=0)
    return config'''

QUICKSTART = [
    new_markdown_cell("""\
# Quickstart: generate, reproduce, edit

Everything here calls the same functions as the app: `nanobanana.generation.Generator` (one typed
`GenerationRequest` in, one `GenerationResult` out) and the service `nanobanana.service.studio` (the app's request
path: credits, safety filters, storage). The model is the configured default (`configs/generation.yaml`, or
`NANOBANANA_MODEL`). With `tiny-random` (random weights) the pictures are noise: this notebook then shows
the mechanics, not quality."""),
    new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
    new_code_cell(SETUP),
    new_markdown_cell("## Load the configured model"),
    new_code_cell(MODEL_FOLDER + '''

from nanobanana.generation import GenerationRequest, Generator, Mode, load_image

config = ensure_model_folder(load_generation_config())
generator = Generator(config)
model = generator.load()
print(f"model {config.model.name} from {config.model.source} on {model.device} ({model.dtype}), "
      f"loaded in {model.load_seconds:.1f} s")
print("modes:", [m.value for m in generator.modes()])
print("schedulers:", generator.schedulers())
print("sizes:", ", ".join(size.label for size in generator.sizes()[:5]), "...")
print("defaults:", config.model.defaults)'''),
    new_markdown_cell("## Generate\nA request names only what differs from the model's defaults."),
    new_code_cell('''\
import matplotlib.pyplot as plt

prompt = "a red circle on a blue background"
result = generator.generate(GenerationRequest(prompt, seed=SEED, num_images=2))
print(result.settings)
print({k: round(v, 3) for k, v in result.timings.to_dict().items()}, "seconds")

fig, axes = plt.subplots(1, len(result.images), figsize=(2.5 * len(result.images), 2.8))
for ax, image, seed in zip(axes, result.images, result.seeds):
    ax.imshow(image)
    ax.set_title(f"seed {seed}", fontsize=9)
    ax.axis("off")
plt.show()'''),
    new_markdown_cell("""\
## Reproduce by seed
Image *i* of a request uses seed `seed + i` with its own torch generator, so any single image can be
made again alone from its seed (shown in the app's history). The same request twice gives identical
pixels; an image made alone instead of in a batch can differ by one intensity level on a few pixels
(floating-point sums run in another order for another batch size)."""),
    new_code_cell('''\
import numpy as np


def pixels(image):
    return np.asarray(image).astype(int)


twice = generator.generate(GenerationRequest(prompt, seed=SEED, num_images=2))
alone = generator.generate(GenerationRequest(prompt, seed=result.seeds[1]))
other = generator.generate(GenerationRequest(prompt, seed=result.seeds[1] + 100))
same_request = all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(twice.images, result.images))
alone_diff = np.abs(pixels(alone.images[0]) - pixels(result.images[1]))
other_diff = np.abs(pixels(other.images[0]) - pixels(result.images[1]))
print(f"same request again: identical pixels: {same_request}")
print(f"image 2 made alone from seed {result.seeds[1]}: max difference {alone_diff.max()} levels "
      f"on {100 * (alone_diff > 0).mean():.3f}% of pixels")
print(f"another seed: mean difference {other_diff.mean():.1f} levels")
assert same_request and alone_diff.max() <= 2 and other_diff.mean() > alone_diff.mean()'''),
    new_markdown_cell("""\
## Image-to-image
Uploads go through `load_image` (format, size and pixel limits, as the app checks them). The input here
is a drawn picture from the shapes world (`nanobanana.bundled.shapes.render`); `strength` says how much to change."""),
    new_code_cell('''\
from nanobanana.bundled.shapes import PromptSpec, analyse, render

picture = render(PromptSpec("blue", "square", "yellow"), size=128, seed=1)
upload = load_image(picture, config.limits)
edited = generator.generate(GenerationRequest(
    "a red circle on a yellow background", mode=Mode.IMAGE_TO_IMAGE, images=[upload], strength=0.6, seed=SEED,
))
s = edited.settings
print(f"{s.pipeline}: {s.width}x{s.height}, strength {s.strength}, {s.steps} steps")
fig, axes = plt.subplots(1, 2, figsize=(5, 2.8))
for ax, image, title in zip(axes, [upload, edited.images[0]], ["input", "image-to-image"]):
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.show()
print("the analyser reads the input as:", analyse(upload).main)'''),
    new_markdown_cell("""\
## The same request through the service
This is what the app does with it: validate, reserve the allowance, prompt safety filter, generate, image
safety filter, store, record usage. The studio's own timings show where the time goes."""),
    new_code_cell('''\
import tempfile

from nanobanana.service.accounts import Identity
from nanobanana.service.build import build_studio

studio = build_studio(generator=generator, data_dir=Path(tempfile.mkdtemp()), start_sweeper=False)
answer = studio.generate(GenerationRequest(prompt, seed=SEED), Identity.anonymous("notebook"))
print(f"stored {len(answer.images)} image(s), withheld {answer.blocked}; allowance left {answer.allowance_left}")
print({k: round(v, 3) for k, v in answer.timings.items()}, "seconds")
studio.close()'''),
]

SWEEP = [
    new_markdown_cell("""\
# Settings sweep: steps × guidance × scheduler (and aspect ratio)

Generation time and prompt adherence for each combination, in one pandas table. Adherence is scored by
the deterministic shapes analyser (`nanobanana.bundled.shapes`: `parse_prompt` says what the prompt asks,
`analyse` reads the picture, `score` compares) — no second model. It is meaningful on the bundled shapes
model; on the random-weights test model the numbers only show the sweep runs. Every call goes through
`Generator.generate`, as the app's do."""),
    new_code_cell(PARAMETERS + '''
STEPS = [1, 2, 4] if SMALL else [2, 4, 6, 10, 20]
GUIDANCE = [1.0, 4.0] if SMALL else [1.0, 2.0, 4.0, 7.5]
SCHEDULERS = None  # None: every scheduler the model config offers
ASPECTS = ["1:1", "16:9", "9:16"] if SMALL else ["1:1", "4:3", "3:4", "16:9", "9:16", "21:9"]
PROMPTS = 2 if SMALL else 8  # prompts per combination
SEEDS = 2 if SMALL else 4  # images per prompt''', metadata={"tags": ["parameters"]}),
    new_code_cell(SETUP),
    new_code_cell(MODEL_FOLDER + '''

from nanobanana.generation import GenerationRequest, Generator, model_config_from_reference

config = load_generation_config()
bundled = model_config_from_reference("bundled")
if bundled.local_path is not None and (bundled.local_path / "model_index.json").is_file():
    config = config.model_copy(update={"model": bundled})
config = ensure_model_folder(config)
MEANINGFUL = config.model.name == "nanobanana-shapes"
generator = Generator(config)
generator.load()
schedulers = SCHEDULERS or generator.schedulers()
print(f"model {config.model.name}; schedulers {schedulers}")
if not MEANINGFUL:
    print("NOTE: the bundled shapes model is not built here; this runs on random weights, so the adherence "
          "scores below are meaningless (the timings are real).")'''),
    new_markdown_cell(
        "## Prompts\nCaptions from the shapes world, in its training phrasings; `parse_prompt` recovers what each asks."
    ),
    new_code_cell('''\
import random

from nanobanana.bundled.shapes import TRAIN_TEMPLATES, analyse, caption, parse_prompt, random_spec, score

rng = random.Random(SEED)
prompts = [caption(random_spec(rng), rng.choice(TRAIN_TEMPLATES)) for _ in range(PROMPTS)]
for p in prompts:
    print(f"{p!r:60} -> {parse_prompt(p).filled()}")'''),
    new_code_cell('''\
import itertools
import time

import pandas as pd


def run(steps, guidance, scheduler, aspect="1:1"):
    """One combination: every prompt with SEEDS images; time per image and share of fields right."""
    rows = []
    for i, prompt in enumerate(prompts):
        request = GenerationRequest(prompt, steps=steps, guidance=guidance, scheduler=scheduler,
                                    aspect_ratio=aspect, seed=SEED * 1000 + i, num_images=SEEDS)
        result = generator.generate(request)
        spec = parse_prompt(prompt).filled()
        for image in result.images:
            checks = score(analyse(image), spec)
            rows.append({
                "steps": steps, "guidance": guidance, "scheduler": scheduler, "aspect": aspect,
                "size": f"{result.settings.width}x{result.settings.height}",
                "seconds_per_image": result.timings.total / len(result.images),
                "denoising_per_image": result.timings.denoising / len(result.images),
                "all_fields": all(checks.values()), "colour_shape": checks["colour_shape"],
                "fields_right": sum(checks.values()) / len(checks),
            })
    return rows


started = time.perf_counter()
rows = []
for steps, guidance, scheduler in itertools.product(STEPS, GUIDANCE, schedulers):
    rows += run(steps, guidance, scheduler)
middle = STEPS[len(STEPS) // 2]
for aspect in ASPECTS:
    rows += run(middle, GUIDANCE[-1], schedulers[0], aspect)
df = pd.DataFrame(rows)
print(f"{len(df)} images in {time.perf_counter() - started:.0f} s")
df.head()'''),
    new_markdown_cell("## Time and adherence per combination"),
    new_code_cell('''\
square = df[df.aspect == "1:1"]
table = (square.groupby(["steps", "guidance", "scheduler"])
         .agg(seconds_per_image=("seconds_per_image", "median"), fields_right=("fields_right", "mean"),
              all_fields=("all_fields", "mean"), images=("all_fields", "size"))
         .round(3))
table'''),
    new_code_cell('''\
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for scheduler, group in square.groupby("scheduler"):
    per_steps = group.groupby("steps")
    axes[0].plot(per_steps.seconds_per_image.median() * 1000, marker="o", label=scheduler)
    axes[1].plot(per_steps.fields_right.mean(), marker="o", label=scheduler)
axes[0].set(xlabel="steps", ylabel="ms per image (median)", title="Generation time")
axes[1].set(xlabel="steps", ylabel="share of prompt fields right", title="Adherence", ylim=(0, 1.05))
axes[0].legend(fontsize=7)
heat = square.pivot_table(index="guidance", columns="steps", values="fields_right", aggfunc="mean")
im = axes[2].imshow(heat.values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
axes[2].set_xticks(range(len(heat.columns)), heat.columns)
axes[2].set_yticks(range(len(heat.index)), heat.index)
axes[2].set(xlabel="steps", ylabel="guidance", title="Adherence: guidance × steps")
fig.colorbar(im, ax=axes[2])
if not MEANINGFUL:
    fig.suptitle("random weights: adherence is meaningless here", color="red")
fig.tight_layout()
plt.show()'''),
    new_markdown_cell(
        "## Aspect ratio\nSame settings, other presets. A preset keeps about the base pixel count but never a "
        "short side under `min_short_side`, so where that floor bites (the widest and tallest presets of a small "
        "model) they hold more pixels and take longer."
    ),
    new_code_cell('''\
aspects = (df[df.steps.eq(middle) & df.guidance.eq(GUIDANCE[-1]) & df.scheduler.eq(schedulers[0])]
           .groupby(["aspect", "size"], sort=False)
           .agg(ms_per_image=("seconds_per_image", lambda s: 1000 * s.median()),
                fields_right=("fields_right", "mean"))
           .round(3))
ax = aspects.plot.bar(y="ms_per_image", legend=False, figsize=(6, 3), title="Time per aspect ratio", rot=0)
ax.set_ylabel("ms per image")
plt.show()
aspects'''),
    new_markdown_cell("""\
## What to tweak first
Steps set the time almost linearly (denoising dominates); guidance is free in time but moves adherence;
the scheduler changes how many steps are needed for the same quality. Start with steps: find the fewest
steps whose adherence is within noise of the best, then tune guidance at that step count."""),
    new_code_cell('''\
best = table.fields_right.max()
cheapest = table[table.fields_right >= best - 0.05].sort_values("seconds_per_image").head(3)
print(f"best share of fields right {best:.2f}; cheapest settings within 0.05 of it:")
cheapest'''),
]

REPORT = [
    new_markdown_cell("""\
# Eval report

Reads what `python -m eval speed|errors|adherence|safety` wrote under `results/` and shows the same tables
and plots as `python -m eval report` (it uses that module's section functions). Results that are missing
are made first by calling the eval commands' Python entry point on a small sample."""),
    new_code_cell(PARAMETERS + '''
RESULTS = os.environ.get("NANOBANANA_RESULTS", "results")
RUN_MISSING = True  # make missing results first (small sample)''', metadata={"tags": ["parameters"]}),
    new_code_cell(SETUP),
    new_code_cell(MODEL_FOLDER + '''

from eval.__main__ import main as eval_main

ensure_model_folder(load_generation_config())
results = Path(RESULTS)
small = {
    "speed": ["--small", "--cold-starts", "0" if SMALL else "1", "--safety", "off" if SMALL else "on"],
    "errors": ["--small", "--safety", "off" if SMALL else "on"],
    "adherence": ["--prompts", "1" if SMALL else "2", "--seeds", "2"],
    "safety": ["--sample", "20", "--bootstrap", "100", "--latency-samples", "3", "--no-images"],
}
for command, argv in small.items():
    if (results / command / "summary.json").is_file():
        print(f"{command}: found {results / command}")
    elif RUN_MISSING:
        print(f"{command}: missing, running python -m eval {command} {' '.join(argv)}")
        eval_main([command, *argv, "--out", str(results / command)])'''),
    new_code_cell('''\
from IPython.display import Image, Markdown, display

from eval import report


def show(blocks):
    for kind, value in blocks:
        if kind in ("h2", "h3"):
            display(Markdown(("## " if kind == "h2" else "### ") + value))
        elif kind == "p":
            display(Markdown(value))
        elif kind == "table" and value is not None:
            display(value)
        elif kind == "img":
            display(Image(filename=str(value)))


show(report.header(results))'''),
    new_markdown_cell("## Speed"),
    new_code_cell("show(report.speed_section(results / 'speed'))"),
    new_markdown_cell("## Errors and credits"),
    new_code_cell("show(report.errors_section(results / 'errors'))"),
    new_markdown_cell("## Prompt adherence"),
    new_code_cell("show(report.adherence_section(results / 'adherence'))"),
    new_markdown_cell("Per-image detail, for digging: which fields the analyser saw wrong."),
    new_code_cell('''\
import pandas as pd

samples = pd.read_csv(results / "adherence" / "samples.csv")
samples.pivot_table(index="task", columns="split", values="correct", aggfunc="mean").round(2)'''),
    new_markdown_cell("## Safety filters"),
    new_code_cell("show(report.safety_section(results / 'safety'))"),
    new_markdown_cell(
        "## Write the report files\n`results/report/report.md` and `report.html`, with the plots beside them."
    ),
    new_code_cell('''\
written = report.build(results, results / "report")
print(written)'''),
]

NOTEBOOKS = {"01_quickstart.ipynb": QUICKSTART, "02_settings_sweep.ipynb": SWEEP, "03_eval_report.ipynb": REPORT}


def notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: rewriting gives the same file
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a notebook is stale or holds outputs")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(notebook(cells)) + "\n"
        path = HERE / name
        if args.check:
            current = nbformat.read(path, as_version=4) if path.is_file() else None
            has_output = current is not None and any(
                c.get("outputs") or c.get("execution_count") for c in current.cells if c.cell_type == "code"
            )
            if not path.is_file() or path.read_text() != text or has_output:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale or with outputs (run python notebooks/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
