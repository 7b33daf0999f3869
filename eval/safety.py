"""`python -m eval safety`: how well the prompt and image safety filters work, and how fast they are.

Prompts: the labelled set `eval/data/safety_prompts.csv` (see its datasheet, `safety_prompts.md`), reported
per split: `test` is the headline (nothing was tuned on it), `dev` is what the thresholds and term lists were
tuned on. Precision, recall, F1, false-positive rate (unsafe = positive, blocked = predicted positive), a
confusion matrix, per-category and per-subset results, each with a 95% bootstrap interval. The bootstrap
resamples *base prompts* (a prompt and its disguised variant move together), since they are not independent.
A sweep shifts every semantic threshold by the same offset and draws precision-recall curves.

Images: any labelled folder (`safe/` and `unsafe/` subfolders, or a CSV `path,label`) via `--images`, plus
(by default) safe images available offline: matplotlib's and scikit-learn's sample photos and procedurally
drawn pictures. Without unsafe images only the false-positive rate can be measured; the report says so.

Writes CSV/JSON, `prompt_pr.png`, `image_fpr.png` and `safety_report.md` under `--out` (default
`results/safety`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from nanobanana.safety import CATEGORIES, ImageFilter, PromptFilter, SafetyConfig, load_safety_config
from nanobanana.safety.prompt_filter import PromptAnalysis

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "data" / "safety_prompts.csv"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
LABELS = ("safe", *CATEGORIES)
PREDICTIONS = ("allowed", *CATEGORIES)
SWEEP_OFFSETS = [round(x, 3) for x in np.arange(-0.35, 0.4501, 0.025)]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "safety",
        help="accuracy and latency of the prompt and image safety filters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="labelled prompt CSV")
    parser.add_argument("--sample", type=int, default=None, help="evaluate a stratified sample of N prompts")
    parser.add_argument(
        "--images",
        type=Path,
        action="append",
        default=[],
        help="labelled images: a folder with safe/ and unsafe/ subfolders, or a CSV path,label (repeatable)",
    )
    parser.add_argument(
        "--no-builtin-images",
        dest="builtin_images",
        action="store_false",
        help="skip the safe images made or found offline (package sample photos, drawn pictures)",
    )
    parser.add_argument("--no-images", action="store_true", help="skip the image filter entirely")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--latency-samples", type=int, default=50, help="single calls timed per filter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/safety"), help="output folder")
    parser.set_defaults(func=run)


# -- metrics --------------------------------------------------------------------------------------------


def binary_counts(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """TP/FP/TN/FN (unsafe = positive, blocked = predicted positive); `weights` is B x n for bootstraps."""
    y_true, y_pred = y_true.astype(float), y_pred.astype(float)
    w = np.ones((1, len(y_true))) if weights is None else weights
    tp = w @ (y_true * y_pred)
    fp = w @ ((1 - y_true) * y_pred)
    tn = w @ ((1 - y_true) * (1 - y_pred))
    fn = w @ (y_true * (1 - y_pred))
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def rates(c: dict) -> dict[str, np.ndarray]:
    precision = _ratio(c["tp"], c["tp"] + c["fp"])
    recall = _ratio(c["tp"], c["tp"] + c["fn"])
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"]),
        "fpr": _ratio(c["fp"], c["fp"] + c["tn"]),
        "accuracy": _ratio(c["tp"] + c["tn"], c["tp"] + c["tn"] + c["fp"] + c["fn"]),
    }


def bootstrap_weights(groups: list[str], n_boot: int, seed: int) -> np.ndarray:
    """B x n row weights from resampling whole groups with replacement (cluster bootstrap)."""
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    row_group = np.array([index[g] for g in groups])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=n_boot)
    return counts[:, row_group].astype(float)


def _ci(samples: np.ndarray) -> list[float | None]:
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return [None, None]
    return [round(float(np.percentile(samples, 2.5)), 4), round(float(np.percentile(samples, 97.5)), 4)]


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def binary_report(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> dict:
    point = binary_counts(y_true, y_pred)
    point_rates = {k: float(v[0]) for k, v in rates(point).items()}
    boot_rates = rates(binary_counts(y_true, y_pred, weights))
    out = {k: int(v[0]) for k, v in point.items()}
    out["n"] = len(y_true)
    for name, value in point_rates.items():
        out[name] = {"value": _num(value), "ci95": _ci(boot_rates[name])}
    return out


def proportion_report(hits: np.ndarray, mask: np.ndarray, weights: np.ndarray) -> dict:
    """hits/mask as a rate with a bootstrap interval (e.g. recall within one category)."""
    n = int(mask.sum())
    value = float(hits[mask].mean()) if n else float("nan")
    boot = _ratio(weights @ (hits & mask).astype(float), weights @ mask.astype(float))
    return {"n": n, "value": _num(value), "ci95": _ci(boot)}


# -- prompts --------------------------------------------------------------------------------------------


def load_prompts(path: Path, allow_classical_nudity: bool) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["label"] not in LABELS:
            raise ValueError(f"{path}: unknown label {row['label']!r} for prompt {row['prompt']!r}")
        row.setdefault("split", "test")
        row["split"] = row.get("split") or "test"
        row["note"] = row.get("note") or ""
        row["group"] = row.get("group") or row["prompt"]
        # Classical nudity is a policy choice: with it off, those prompts are expected to be blocked.
        row["expected"] = row["label"]
        if "classical_nudity" in row["note"] and not allow_classical_nudity:
            row["expected"] = "sexual"
    return rows


def stratified_sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    """About n rows, keeping the share of each (split, label); whole groups, original order."""
    rng = random.Random(seed)
    by_stratum: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        groups = by_stratum.setdefault((row["split"], row["expected"]), [])
        if row["group"] not in groups:
            groups.append(row["group"])
    total_groups = sum(len(g) for g in by_stratum.values())
    keep: set[str] = set()
    for groups in by_stratum.values():
        k = max(1, round(n * len(groups) / total_groups))
        keep.update(rng.sample(groups, min(k, len(groups))))
    return [row for row in rows if row["group"] in keep]


def _subset(note: str) -> str:
    parts = note.split(";")
    if len(parts) > 1 and parts[1].startswith("obfuscated:"):
        return "obfuscated"
    return parts[0] or "plain"


def prompt_metrics(rows: list[dict], blocked: np.ndarray, predicted: list[str], n_boot: int, seed: int) -> dict:
    y_true = np.array([r["expected"] != "safe" for r in rows])
    weights = bootstrap_weights([r["group"] for r in rows], n_boot, seed)
    out = {"binary": binary_report(y_true, blocked, weights)}

    confusion = {label: dict.fromkeys(PREDICTIONS, 0) for label in LABELS}
    for row, pred in zip(rows, predicted, strict=True):
        confusion[row["expected"]][pred] += 1
    out["confusion"] = {label: counts for label, counts in confusion.items() if any(counts.values())}

    per_category = {}
    pred_arr = np.array(predicted)
    expected = np.array([r["expected"] for r in rows])
    safe = expected == "safe"
    for category in CATEGORIES:
        mask = expected == category
        as_category = pred_arr == category
        per_category[category] = {
            "recall": proportion_report(blocked, mask, weights),  # blocked at all
            "category_accuracy": proportion_report(as_category, mask, weights),  # blocked as this category
            "precision": proportion_report(mask, as_category, weights),  # of those blocked as it
            "false_positives": int((as_category & safe).sum()),  # safe prompts blocked as this category
        }
    out["per_category"] = per_category

    subsets = {}
    for name in sorted({_subset(r["note"]) for r in rows}):
        mask = np.array([_subset(r["note"]) == name for r in rows])
        unsafe_mask, safe_mask = mask & y_true, mask & ~y_true
        entry = {}
        if unsafe_mask.any():
            entry["recall"] = proportion_report(blocked, unsafe_mask, weights)
        if safe_mask.any():
            entry["fpr"] = proportion_report(blocked, safe_mask, weights)
        subsets[name] = entry
    out["per_subset"] = subsets
    tricks = {}
    for trick in sorted({r["note"].split("obfuscated:")[1] for r in rows if "obfuscated:" in r["note"]}):
        mask = np.array([f"obfuscated:{trick}" in r["note"] for r in rows])
        entry = {}
        if (mask & y_true).any():
            entry["recall"] = proportion_report(blocked, mask & y_true, weights)
        if (mask & ~y_true).any():
            entry["fpr"] = proportion_report(blocked, mask & ~y_true, weights)
        tricks[trick] = entry
    out["per_obfuscation"] = tricks
    return out


def semantic_only(analysis: PromptAnalysis) -> PromptAnalysis:
    """The analysis as if the term lists had found nothing but context (minors, art) words."""
    context = {k: v for k, v in analysis.terms.items() if k in ("minors", "art_context")}
    return replace(analysis, terms=context)


def sweep(pf: PromptFilter, analyses: list[PromptAnalysis], rows: list[dict]) -> list[dict]:
    y_true = np.array([r["expected"] != "safe" for r in rows])
    splits = sorted({r["split"] for r in rows})
    out = []
    for layer in ("combined", "semantic_only"):
        items = analyses if layer == "combined" else [semantic_only(a) for a in analyses]
        for offset in SWEEP_OFFSETS:
            blocked = np.array([not pf.decide(a, offset).allowed for a in items])
            for split in [*splits, "all"]:
                mask = np.array([split in ("all", r["split"]) for r in rows])
                c = binary_counts(y_true[mask], blocked[mask])
                r = {k: _num(float(v[0])) for k, v in rates(c).items()}
                out.append({"layer": layer, "split": split, "offset": offset, **r})
    return out


def plot_sweep(points: list[dict], path: Path, thresholds: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    styles = {"test": "-", "dev": "--", "all": ":"}
    for split in ("test", "dev"):
        for layer, color in (("combined", "tab:blue"), ("semantic_only", "tab:orange")):
            pts = [p for p in points if p["split"] == split and p["layer"] == layer and p["recall"] is not None]
            if not pts:
                continue
            label = f"{layer.replace('_', ' ')} ({split})"
            recall = [p["recall"] for p in pts]
            precision = [p["precision"] if p["precision"] is not None else 1.0 for p in pts]
            fpr = [p["fpr"] for p in pts]
            axes[0].plot(recall, precision, styles[split], color=color, label=label, marker=".", markersize=3)
            axes[1].plot(fpr, recall, styles[split], color=color, label=label, marker=".", markersize=3)
            chosen = [p for p in pts if p["offset"] == 0.0]
            if chosen:
                axes[0].plot(chosen[0]["recall"], chosen[0]["precision"], "o", color=color, markersize=8)
                axes[1].plot(chosen[0]["fpr"], chosen[0]["recall"], "o", color=color, markersize=8)
    axes[0].set(xlabel="recall (unsafe prompts blocked)", ylabel="precision", title="Precision-recall")
    axes[1].set(xlabel="false-positive rate (safe prompts blocked)", ylabel="recall", title="Recall vs FPR")
    axes[1].axvline(0.05, color="grey", lw=0.8, ls=":")
    axes[1].axhline(0.95, color="grey", lw=0.8, ls=":")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(
        "Prompt filter: semantic thresholds shifted together "
        f"(offset {SWEEP_OFFSETS[0]}..{SWEEP_OFFSETS[-1]}); "
        f"dots = configured {sorted(set(thresholds.values()))}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def time_calls(fn, items: list, repeats: int) -> dict:
    """Per-call wall time in ms over `repeats` single calls (after one warm-up call)."""
    if not items:
        return {}
    fn(items[0])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(items[i % len(items)])
        times.append((time.perf_counter() - start) * 1000)
    return _summary_ms(times)


def _summary_ms(times: list[float]) -> dict:
    times = sorted(times)
    return {
        "n": len(times),
        "mean_ms": round(statistics.fmean(times), 2),
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)], 2),
        "max_ms": round(times[-1], 2),
    }


def evaluate_prompts(config: SafetyConfig, args: argparse.Namespace) -> dict:
    rows = load_prompts(args.prompts, config.prompt.allow_classical_nudity)
    if args.sample:
        rows = stratified_sample(rows, args.sample, args.seed)
    pf = PromptFilter(config.prompt)

    start = time.perf_counter()
    pf.warm_up()
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    analyses = pf.analyze_many([r["prompt"] for r in rows])
    batch_s = time.perf_counter() - start

    blocked = np.array([not a.verdict.allowed for a in analyses])
    predicted = [a.verdict.category or "allowed" for a in analyses]
    per_prompt = []
    for row, analysis in zip(rows, analyses, strict=True):
        v = analysis.verdict
        per_prompt.append(
            {
                "prompt": row["prompt"],
                "label": row["label"],
                "expected": row["expected"],
                "split": row["split"],
                "note": row["note"],
                "group": row["group"],
                "allowed": v.allowed,
                "category": v.category or "",
                "score": v.score,
                "term_category": analysis.term_category or "",
                "terms": json.dumps(analysis.terms, ensure_ascii=False),
                **{f"sim_{c}": round(analysis.semantic.get(c, 0.0), 4) for c in CATEGORIES},
                "sim_safe": round(analysis.safe_similarity, 4),
            }
        )

    metrics = {}
    for split in [*sorted({r["split"] for r in rows}), "all"]:
        idx = [i for i, r in enumerate(rows) if split in ("all", r["split"])]
        metrics[split] = prompt_metrics(
            [rows[i] for i in idx], blocked[idx], [predicted[i] for i in idx], args.bootstrap, args.seed
        )

    points = sweep(pf, analyses, rows)
    plot_sweep(points, args.out / "prompt_pr.png", config.prompt.semantic.thresholds)

    texts = [r["prompt"] for r in rows]
    latency = {
        "model_load_and_examples_s": round(load_s, 2),
        "batched": {
            "n": len(rows),
            "total_s": round(batch_s, 2),
            "per_prompt_ms": round(1000 * batch_s / len(rows), 2),
        },
        "single_call": time_calls(pf.check, texts, args.latency_samples),
    }
    terms_only = SafetyConfig.model_validate(config.model_dump())
    terms_only.prompt.semantic.enabled = False
    latency["single_call_terms_only"] = time_calls(PromptFilter(terms_only.prompt).check, texts, args.latency_samples)

    return {"rows": per_prompt, "metrics": metrics, "sweep": points, "latency": latency}


# -- images ---------------------------------------------------------------------------------------------


def labelled_images(source: Path) -> list[dict]:
    """Images and labels from a folder with safe/ and unsafe/ subfolders, or a CSV with path,label."""
    items = []
    if source.is_file():
        with source.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                path = Path(row["path"])
                path = path if path.is_absolute() else source.parent / path
                label = row["label"].strip().lower()
                items.append({"source": str(source), "name": str(path), "path": path, "label": _image_label(label)})
        return items
    for sub in sorted(p for p in source.iterdir() if p.is_dir()):
        for path in sorted(sub.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append({"source": str(source), "name": str(path), "path": path, "label": _image_label(sub.name)})
    if not items:
        raise ValueError(f"{source}: no images found (expected safe/ and unsafe/ subfolders or a CSV path,label)")
    return items


def _image_label(label: str) -> str:
    label = label.lower()
    if label in ("safe", "sfw", "0", "false", "allowed"):
        return "safe"
    if label in ("unsafe", "nsfw", "1", "true", "blocked", *CATEGORIES):
        return "unsafe"
    raise ValueError(f"unknown image label {label!r} (use safe or unsafe)")


def builtin_safe_images(seed: int) -> list[dict]:
    """Safe images available offline: package sample photos and procedurally drawn pictures."""
    from PIL import Image

    items = []
    import matplotlib

    sample_dir = Path(matplotlib.get_data_path()) / "sample_data"
    for path in sorted(sample_dir.rglob("*")):
        if path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
            items.append({"source": "matplotlib", "name": path.name, "path": path, "label": "safe"})
    try:
        from sklearn.datasets import load_sample_image

        for name in ("china.jpg", "flower.jpg"):
            items.append(
                {
                    "source": "scikit-learn",
                    "name": name,
                    "image": Image.fromarray(load_sample_image(name)),
                    "label": "safe",
                }
            )
    except ImportError:
        pass
    try:
        import skimage.data

        for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat", "hubble_deep_field"):
            if hasattr(skimage.data, name):
                image = Image.fromarray(getattr(skimage.data, name)())
                items.append({"source": "scikit-image", "name": name, "image": image, "label": "safe"})
    except ImportError:
        pass
    for name, image in procedural_images(seed):
        source = "shapes-world" if name.startswith("shapes_world") else "procedural"
        items.append({"source": source, "name": name, "image": image, "label": "safe"})
    return items


SKIN_TONES = [(255, 224, 196), (241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 57, 38)]


def procedural_images(seed: int) -> list[tuple[str, object]]:
    """Deterministic drawings: gradients, shapes, noise, text, charts, landscapes, clothed cartoon figures,
    renders of the bundled model's shapes world, and skin-coloured blobs (a hard case for nudity models)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)

    def colour() -> tuple[int, int, int]:
        return tuple(int(x) for x in rng.integers(0, 256, 3))  # type: ignore[return-value]

    out = []
    for i in range(16):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, 384)[None, :, None]
        grad = (a * (1 - t) + b * t).repeat(384, axis=0).astype(np.uint8)
        out.append((f"gradient_{i}", Image.fromarray(grad)))
    for i in range(24):
        img = Image.new("RGB", (384, 384), colour())
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = (int(v) for v in rng.integers(0, 300, 2))
            x1, y1 = x0 + int(rng.integers(20, 150)), y0 + int(rng.integers(20, 150))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([x0, y0, x1, y1], fill=colour())
        out.append((f"shapes_{i}", img))
    for i in range(12):
        noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        img = Image.fromarray(noise).filter(ImageFilter.GaussianBlur(radius=int(rng.integers(0, 6))))
        out.append((f"noise_{i}", img))
    for i in range(24):  # skin-coloured round shapes: what a nudity detector could mistake for a body
        tone = SKIN_TONES[i % len(SKIN_TONES)]
        img = Image.new("RGB", (384, 384), colour())
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            cx, cy = (int(v) for v in rng.integers(60, 324, 2))
            rx, ry = (int(v) for v in rng.integers(30, 110, 2))
            shade = tuple(int(np.clip(c + rng.integers(-20, 20), 0, 255)) for c in tone)
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=shade)
        out.append((f"skin_blobs_{i}", img.filter(ImageFilter.GaussianBlur(radius=3))))
    for i in range(16):  # a sky, a sun, mountains, a field
        img = Image.new("RGB", (512, 384), colour())
        draw = ImageDraw.Draw(img)
        sky = (int(rng.integers(80, 180)), int(rng.integers(140, 220)), 255)
        draw.rectangle([0, 0, 512, 240], fill=sky)
        sx, sy = int(rng.integers(40, 470)), int(rng.integers(30, 120))
        draw.ellipse([sx - 30, sy - 30, sx + 30, sy + 30], fill=(255, 220, 80))
        for _ in range(3):
            peak = int(rng.integers(0, 512))
            grey = int(rng.integers(60, 140))
            draw.polygon([(peak - 200, 260), (peak, int(rng.integers(80, 200))), (peak + 200, 260)], fill=(grey,) * 3)
        draw.rectangle([0, 250, 512, 384], fill=(int(rng.integers(20, 90)), int(rng.integers(110, 190)), 40))
        out.append((f"landscape_{i}", img.filter(ImageFilter.GaussianBlur(radius=1))))
    for i in range(16):  # a clothed cartoon person: skin-coloured face and hands, clothes, a background
        tone = SKIN_TONES[i % len(SKIN_TONES)]
        img = Image.new("RGB", (384, 512), colour())
        draw = ImageDraw.Draw(img)
        shirt, trousers = colour(), colour()
        draw.rectangle([122, 200, 262, 360], fill=shirt)  # body
        draw.rectangle([92, 210, 122, 330], fill=shirt)  # arms
        draw.rectangle([262, 210, 292, 330], fill=shirt)
        draw.ellipse([88, 325, 126, 360], fill=tone)  # hands
        draw.ellipse([258, 325, 296, 360], fill=tone)
        draw.rectangle([130, 360, 185, 500], fill=trousers)
        draw.rectangle([200, 360, 255, 500], fill=trousers)
        draw.ellipse([137, 70, 247, 200], fill=tone)  # head
        draw.ellipse([165, 115, 180, 130], fill=(30, 30, 30))
        draw.ellipse([205, 115, 220, 130], fill=(30, 30, 30))
        draw.arc([170, 140, 215, 175], 20, 160, fill=(120, 30, 30), width=4)
        out.append((f"figure_{i}", img.filter(ImageFilter.GaussianBlur(radius=1))))
    for i, text in enumerate(["Nanobanana", "Hello, world", "SALE 50%", "Lorem ipsum dolor", "Open 9-5",
                              "Meeting notes", "Happy birthday!", "404 not found"]):  # fmt: skip
        img = Image.new("RGB", (384, 192), "white")
        ImageDraw.Draw(img).text((20, 80), text, fill="black")
        out.append((f"text_{i}", img.resize((768, 384))))
    for i in range(6):
        check = ((np.indices((384, 384)) // (8 * (i + 1))).sum(axis=0) % 2 * 255).astype(np.uint8)
        out.append((f"checker_{i}", Image.fromarray(check).convert("RGB")))
    out += [(f"chart_{i}", image) for i, image in enumerate(_charts(rng))]
    out += _shapes_world(seed)
    return out


def _shapes_world(seed: int, count: int = 24) -> list[tuple[str, object]]:
    """Renders of the bundled model's world of coloured shapes (what the offline model draws)."""
    try:
        from nanobanana.bundled.shapes import random_spec, render
    except ImportError:
        return []
    rng = random.Random(seed)
    out = []
    for i in range(count):
        spec = random_spec(rng)
        out.append((f"shapes_world_{i}", render(spec, size=256, seed=seed + i)))
    return out


def _charts(rng: np.random.Generator) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    charts = []
    for kind in ("line", "bar", "scatter", "pie") * 2:
        fig, ax = plt.subplots(figsize=(4, 3))
        data = rng.random(8)
        if kind == "line":
            ax.plot(data)
        elif kind == "bar":
            ax.bar(range(8), data)
        elif kind == "scatter":
            ax.scatter(range(8), data)
        else:
            ax.pie(data)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        buf.seek(0)
        charts.append(Image.open(buf).convert("RGB"))
    return charts


def evaluate_images(config: SafetyConfig, args: argparse.Namespace) -> dict:
    from PIL import Image

    items = []
    for source in args.images:
        items += labelled_images(source)
    if args.builtin_images:
        items += builtin_safe_images(args.seed)
    if not items:
        return {}
    image_filter = ImageFilter(config.image)
    start = time.perf_counter()
    image_filter.check(Image.new("RGB", (64, 64), "white"))  # loads the models
    load_s = time.perf_counter() - start

    rows, times = [], []
    for item in items:
        image = item.get("image")
        if image is None:
            with Image.open(item["path"]) as opened:
                image = opened.convert("RGB")
        start = time.perf_counter()
        analysis = image_filter.analyze(image)
        times.append((time.perf_counter() - start) * 1000)
        v = analysis.verdict
        rows.append(
            {
                "source": item["source"],
                "name": item["name"],
                "label": item["label"],
                "width": image.width,
                "height": image.height,
                "allowed": v.allowed,
                "category": v.category or "",
                "score": v.score,
                "nudenet_score": round(analysis.nudenet_score, 4),
                "nudenet_label": analysis.nudenet_label or "",
                "nudenet_all": ";".join(f"{d['class']}:{d['score']:.2f}" for d in analysis.detections),
                "opennsfw_score": round(analysis.opennsfw_score, 4),
                "latency_ms": round(times[-1], 2),
            }
        )

    y_true = np.array([r["label"] == "unsafe" for r in rows])
    blocked = np.array([not r["allowed"] for r in rows])
    weights = bootstrap_weights([r["name"] for r in rows], args.bootstrap, args.seed)
    metrics: dict = {"n_safe": int((~y_true).sum()), "n_unsafe": int(y_true.sum())}
    metrics["binary"] = binary_report(y_true, blocked, weights)
    metrics["fpr"] = proportion_report(blocked, ~y_true, weights)
    nudenet = np.array([r["nudenet_score"] for r in rows])
    has_label = np.array([bool(r["nudenet_label"]) for r in rows])
    opennsfw = np.array([r["opennsfw_score"] for r in rows])
    metrics["fpr_nudenet_alone"] = proportion_report(
        has_label & (nudenet >= config.image.nudenet.threshold), ~y_true, weights
    )
    metrics["fpr_opennsfw_alone"] = proportion_report(opennsfw >= config.image.opennsfw.threshold, ~y_true, weights)
    metrics["per_source"] = {
        source: {
            "n": sum(r["source"] == source for r in rows),
            "blocked": sum(r["source"] == source and not r["allowed"] for r in rows),
        }
        for source in sorted({r["source"] for r in rows})
    }
    grid = [round(x, 2) for x in np.arange(0.05, 1.0001, 0.05)]
    safe = ~y_true
    metrics["sweep"] = [
        {
            "threshold": t,
            "fpr_nudenet": _num(float((has_label & (nudenet >= t))[safe].mean())) if safe.any() else None,
            "fpr_opennsfw": _num(float((opennsfw >= t)[safe].mean())) if safe.any() else None,
            "recall_nudenet": _num(float((has_label & (nudenet >= t))[y_true].mean())) if y_true.any() else None,
            "recall_opennsfw": _num(float((opennsfw >= t)[y_true].mean())) if y_true.any() else None,
        }
        for t in grid
    ]
    plot_image_sweep(metrics["sweep"], args.out / "image_fpr.png", config)
    latency = {"model_load_s": round(load_s, 2), "per_image": _summary_ms(times)}
    return {"rows": rows, "metrics": metrics, "latency": latency}


def plot_image_sweep(points: list[dict], path: Path, config: SafetyConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    t = [p["threshold"] for p in points]
    for key, label in (("fpr_nudenet", "NudeNet (blocking labels)"), ("fpr_opennsfw", "open-nsfw")):
        if points and points[0][key] is not None:
            ax.plot(t, [p[key] for p in points], marker=".", label=f"FPR, {label}")
    for key, label in (("recall_nudenet", "NudeNet"), ("recall_opennsfw", "open-nsfw")):
        if points and points[0][key] is not None:
            ax.plot(t, [p[key] for p in points], ls="--", marker=".", label=f"recall, {label}")
    ax.axvline(config.image.nudenet.threshold, color="tab:blue", lw=0.8, ls=":")
    ax.axvline(config.image.opennsfw.threshold, color="tab:orange", lw=0.8, ls=":")
    ax.set(xlabel="threshold", ylabel="rate", title="Image filter on the labelled images", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- output ---------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _fmt(metric: dict | None) -> str:
    if not metric or metric.get("value") is None:
        return "n/a"
    lo, hi = metric["ci95"]
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
    return f"{metric['value']:.3f}{ci}"


def report_markdown(summary: dict) -> str:
    lines = ["# Safety filter evaluation", ""]
    env = summary["environment"]
    lines += [
        f"Run {env['date']} on {env['machine']} ({env['cpus']} CPUs, load average {env['load_average']}), "
        f"`{env['command']}`. Intervals are 95% bootstrap intervals ({env['bootstrap']} resamples of base "
        "prompts / images).",
        "",
    ]
    prompts = summary.get("prompts")
    if prompts:
        m = prompts["metrics"]
        lines += ["## Prompt filter", ""]
        lines += [
            "Positive = an unsafe prompt; predicted positive = blocked. `test` is the held-out split "
            "(nothing was tuned on it); `dev` is what the term lists, examples and thresholds were tuned on.",
            "",
            "| split | n (unsafe / safe) | recall | FPR | precision | F1 |",
            "|---|---|---|---|---|---|",
        ]
        for split, sm in m.items():
            b = sm["binary"]
            lines.append(
                f"| {split} | {b['n']} ({b['tp'] + b['fn']} / {b['tn'] + b['fp']}) | {_fmt(b['recall'])} | "
                f"{_fmt(b['fpr'])} | {_fmt(b['precision'])} | {_fmt(b['f1'])} |"
            )
        headline = m.get("test", m.get("all"))["binary"]
        target = headline["recall"]["value"] is not None and headline["recall"]["value"] >= 0.95
        target = target and headline["fpr"]["value"] is not None and headline["fpr"]["value"] <= 0.05
        lines += [
            "",
            f"Target (recall >= 0.95 with FPR <= 0.05): **{'met' if target else 'not met'}** on the "
            f"{'test' if 'test' in m else 'whole'} set (point estimates; see the intervals).",
            "",
        ]
        split = "test" if "test" in m else "all"
        lines += [
            f"### Per category ({split})",
            "",
            "| category | n | recall | blocked as this category | precision of the category "
            "| safe prompts blocked as it |",
            "|---|---|---|---|---|---|",
        ]
        for category, pc in m[split]["per_category"].items():
            lines.append(
                f"| {category} | {pc['recall']['n']} | {_fmt(pc['recall'])} | "
                f"{_fmt(pc['category_accuracy'])} | {_fmt(pc['precision'])} | {pc['false_positives']} |"
            )
        lines += [
            "",
            f"### Per subset ({split})",
            "",
            "| subset | recall (unsafe) | FPR (safe) |",
            "|---|---|---|",
        ]
        for name, entry in m[split]["per_subset"].items():
            lines.append(f"| {name} | {_fmt(entry.get('recall'))} | {_fmt(entry.get('fpr'))} |")
        lines += [
            "",
            f"### Disguised prompts by trick ({split})",
            "",
            "| trick | recall | FPR |",
            "|---|---|---|",
        ]
        for name, entry in m[split]["per_obfuscation"].items():
            lines.append(f"| {name} | {_fmt(entry.get('recall'))} | {_fmt(entry.get('fpr'))} |")
        lines += ["", f"### Confusion matrix ({split}; rows = label, columns = verdict)", ""]
        lines.append("| label \\ verdict | " + " | ".join(PREDICTIONS) + " |")
        lines.append("|---" * (len(PREDICTIONS) + 1) + "|")
        for label, counts in m[split]["confusion"].items():
            lines.append(f"| {label} | " + " | ".join(str(counts[p]) for p in PREDICTIONS) + " |")
        errors = [r for r in prompts["rows"] if r["split"] == split and (r["expected"] == "safe") != r["allowed"]]
        lines += ["", f"### Every error on {split}", ""]
        if errors:
            lines += ["| label | verdict | score | note | prompt |", "|---|---|---|---|---|"]
            for r in errors:
                text = r["prompt"].replace("|", "\\|")
                lines.append(
                    f"| {r['expected']} | {r['category'] or 'allowed'} | {r['score']} | {r['note']} | {text} |"
                )
        else:
            lines.append("None.")
        lines += [
            "",
            "### Threshold sweep",
            "",
            "![precision-recall](prompt_pr.png)",
            "",
            "Every semantic threshold (and the minors threshold) shifted by the same offset; "
            "`combined` = term lists + semantic layer (as deployed), `semantic only` = the embedding "
            "layer alone. Points: `prompt_sweep.csv`.",
            "",
        ]
        lat = prompts["latency"]
        lines += [
            "### Prompt filter latency (this CPU)",
            "",
            f"- Model load + example embeddings: {lat['model_load_and_examples_s']} s (once per process)",
            f"- Single call, both layers: median {lat['single_call']['median_ms']} ms, p95 "
            f"{lat['single_call']['p95_ms']} ms (n={lat['single_call']['n']})",
            f"- Single call, term lists only: median {lat['single_call_terms_only']['median_ms']} ms, p95 "
            f"{lat['single_call_terms_only']['p95_ms']} ms",
            f"- Batched (`check_many`, the CLI's `--file`): {lat['batched']['per_prompt_ms']} ms per prompt "
            f"({lat['batched']['n']} prompts in {lat['batched']['total_s']} s)",
            "",
        ]
    images = summary.get("images")
    if images:
        im = images["metrics"]
        lines += ["## Image filter", ""]
        if im["n_unsafe"] == 0:
            lines += [
                "**No unsafe images were available** (none can be obtained or made on this machine), so "
                "recall and precision of the image filter are not measured here. Only the false-positive "
                "rate on safe images is. Run `python -m eval safety --images DIR` with a labelled folder "
                "(`safe/`, `unsafe/`) to measure the rest.",
                "",
            ]
        b = im["binary"]
        lines += [
            f"- Images: {im['n_safe']} safe, {im['n_unsafe']} unsafe",
            f"- False-positive rate (combined rule): {_fmt(im['fpr'])} "
            f"({b['fp']} of {b['fp'] + b['tn']} safe images blocked)",
            f"- FPR of NudeNet alone: {_fmt(im['fpr_nudenet_alone'])}; of open-nsfw alone: "
            f"{_fmt(im['fpr_opennsfw_alone'])}",
        ]
        if im["n_unsafe"]:
            lines.append(f"- Recall {_fmt(b['recall'])}, precision {_fmt(b['precision'])}, F1 {_fmt(b['f1'])}")
        lines += ["", "| source | images | blocked |", "|---|---|---|"]
        for source, entry in im["per_source"].items():
            lines.append(f"| {source} | {entry['n']} | {entry['blocked']} |")
        blocked_rows = [r for r in images["rows"] if not r["allowed"] and r["label"] == "safe"]
        if blocked_rows:
            lines += [
                "",
                "Safe images blocked: " + ", ".join(f"{r['source']}/{r['name']}" for r in blocked_rows),
            ]
        top = sorted(images["rows"], key=lambda r: -r["score"])[:5]
        lines += ["", "Highest scores among the images: " + ", ".join(
            f"{r['source']}/{r['name']} ({r['score']})" for r in top)]  # fmt: skip
        lat = images["latency"]
        lines += [
            "",
            "![image sweep](image_fpr.png)",
            "",
            "### Image filter latency (this CPU)",
            "",
            f"- Model load: {lat['model_load_s']} s (once per process)",
            f"- Per image (NudeNet + open-nsfw): median {lat['per_image']['median_ms']} ms, p95 "
            f"{lat['per_image']['p95_ms']} ms (n={lat['per_image']['n']})",
            "",
        ]
    lines += [
        "## Caveats",
        "",
        "- The prompt set was written by the same author as the term lists and the example sentences, before "
        "them but with the same idea of what is unsafe; real traffic is more varied and more adversarial. "
        "The test split keeps the tuning honest, not the authorship. Expect lower recall and a higher "
        "false-positive rate on real prompts; log and review blocked prompts.",
        "- A disguised prompt shares its split with its base prompt; the bootstrap resamples base prompts.",
        "- The image models see nudity only: they estimate neither age nor violence, so sexual content "
        "involving minors in images rests on the prompt filter and on NudeNet/open-nsfw treating it as "
        "nudity.",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    config = load_safety_config()
    summary: dict = {
        "environment": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "bootstrap": args.bootstrap,
            "command": "python -m eval safety" + (f" --sample {args.sample}" if args.sample else ""),
        },
        "config": config.model_dump(),
    }
    prompts = evaluate_prompts(config, args)
    write_csv(args.out / "prompts.csv", prompts["rows"])
    write_csv(args.out / "prompt_sweep.csv", prompts["sweep"])
    (args.out / "prompt_metrics.json").write_text(json.dumps(prompts["metrics"], indent=2), encoding="utf-8")
    summary["prompts"] = prompts

    if not args.no_images:
        images = evaluate_images(config, args)
        if images:
            write_csv(args.out / "images.csv", images["rows"])
            (args.out / "image_metrics.json").write_text(json.dumps(images["metrics"], indent=2), encoding="utf-8")
            summary["images"] = images

    latency = {"prompt": prompts["latency"], "image": summary.get("images", {}).get("latency")}
    (args.out / "latency.json").write_text(json.dumps(latency, indent=2), encoding="utf-8")
    (args.out / "safety_report.md").write_text(report_markdown(summary), encoding="utf-8")
    compact = {
        "environment": summary["environment"],
        "config": summary["config"],
        "prompts": prompts["metrics"],
        "images": summary.get("images", {}).get("metrics"),
        "latency": latency,
    }
    (args.out / "summary.json").write_text(json.dumps(compact, indent=2, default=str), encoding="utf-8")

    headline = prompts["metrics"].get("test", prompts["metrics"]["all"])["binary"]
    print(
        f"prompts: recall {_fmt(headline['recall'])}, FPR {_fmt(headline['fpr'])} "
        f"({'test split' if 'test' in prompts['metrics'] else 'all'})"
    )
    if "images" in summary:
        image_metrics = summary["images"]["metrics"]
        print(f"images: FPR {_fmt(image_metrics['fpr'])} on {image_metrics['n_safe']} safe images")
    print(f"wrote {args.out}/safety_report.md")
    return 0
