"""`python -m eval provenance`: what the two AI marks survive, how often the watermark is seen where there is
none, and what marking costs per image.

Images are marked on the service's own path (`Provenance.mark`: watermark, PNG, signed C2PA manifest, as
`ImageStore.write_files` does) with this checkout's configuration and a throw-away local CA, then each file
goes through the transforms people apply (PNG→JPEG at quality 90/75/50, resize ×0.5 and ×2, a 10 % crop,
WebP, a screenshot-like rescale ×1.25) and `Provenance.verify` reads it back, as `python -m nanobanana
verify` does. Per transform: the watermark's detection rate (95% Wilson CI), its bit accuracy over the 64
payload bits (0.5 is chance), and the share of files whose C2PA manifest is still present and valid
(re-encoding drops it: expected, and reported).

Bit accuracy counts a file too small to read after the transform as chance (0.5), and it is a miss for
detection; the tables say how many there were. Which images (all at least 256 px: smaller ones cannot
carry the watermark, and the report says how big the configured model's images are):
- `shapes`: the bundled model's world drawn by `nanobanana.bundled.shapes.render` at 256 px: flat colours,
  white and black backgrounds: the watermark's hardest case;
- `photos`: the realistic photos that ship in installed packages and drawn landscapes (`eval.image_fp`),
  centre-cropped to 512 px: what a photographic model makes;
- `model`: the configured model's own text-to-image outputs, when they are at least 256×256.
False positives: the same kinds of image never marked, and the safety eval's procedural images, each
read after every transform. Time: marking vs a plain PNG encode at 256, 512 and 1024 px (median of 7
runs, 3 with `--small`), and one `verify`.

Writes `rows.csv`, `fp.csv`, `timing.csv`, `summary.json` and `provenance_report.md` under `--out`.
"""

from __future__ import annotations

import argparse
import io
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from eval.common import RESULTS, apply_threads, command_line, environment, wilson, write_csv, write_json
from nanobanana.provenance import MIN_PIXELS, Origin, Provenance, load_provenance_config
from nanobanana.provenance.watermark import Watermark, payload_for

SMALL = {"shapes": 6, "photos": 3, "model": 2, "fp_shapes": 6, "fp_procedural": 6, "repeats": 3}
FULL = {"shapes": 40, "photos": 12, "model": 8, "fp_shapes": 40, "fp_procedural": 40, "repeats": 7}


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _resized(data: bytes, factor: float, resample=Image.Resampling.BICUBIC) -> bytes:
    image = _decoded(data)
    return _encode(image.resize((round(image.width * factor), round(image.height * factor)), resample), "PNG")


def _cropped(data: bytes) -> bytes:
    image = _decoded(data)
    dx, dy = round(image.width * 0.05), round(image.height * 0.05)  # 10 % off each dimension, centred
    return _encode(image.crop((dx, dy, image.width - dx, image.height - dy)), "PNG")


TRANSFORMS: dict[str, Callable[[bytes], bytes]] = {
    "none (the signed file)": lambda data: data,
    "PNG→JPEG q90": lambda data: _encode(_decoded(data), "JPEG", quality=90),
    "PNG→JPEG q75": lambda data: _encode(_decoded(data), "JPEG", quality=75),
    "PNG→JPEG q50": lambda data: _encode(_decoded(data), "JPEG", quality=50),
    "resize ×0.5": lambda data: _resized(data, 0.5),
    "resize ×2": lambda data: _resized(data, 2.0),
    "crop 10 %": _cropped,
    "WebP q80": lambda data: _encode(_decoded(data), "WEBP", quality=80),
    "screenshot ×1.25": lambda data: _resized(data, 1.25, Image.Resampling.BILINEAR),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "provenance", help="the AI marks: watermark detection and bit accuracy after transforms, false "
                           "positives, C2PA validity, time per image",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=None, help="model reference (default: the configured one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--small", action="store_true", help="CI sizes (about a minute)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images of each kind (tests)")
    parser.add_argument("--out", type=Path, default=RESULTS / "provenance", help="output folder")
    parser.set_defaults(func=run)


# -- the images ------------------------------------------------------------------------------------------
def _square(image: Image.Image, side: int) -> Image.Image:
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    return image.crop((left, top, left + short, top + short)).resize((side, side), Image.Resampling.LANCZOS)


def shapes_images(n: int, seed: int) -> list[Image.Image]:
    from nanobanana.bundled.shapes import random_spec, render

    rng = random.Random(seed)
    return [render(random_spec(rng), size=256, seed=seed + i).convert("RGB") for i in range(n)]


def photo_images(n: int, seed: int) -> list[Image.Image]:
    from eval.image_fp import photo_uploads

    return [_square(upload.image, 512) for upload in photo_uploads(seed)[:n]]


def procedural_images(n: int, seed: int) -> list[Image.Image]:
    from eval.safety import procedural_images as drawings

    out = []
    for _, image in drawings(seed)[:n]:
        image = image.convert("RGB")
        if image.width * image.height < MIN_PIXELS:
            factor = (MIN_PIXELS / (image.width * image.height)) ** 0.5
            image = image.resize((round(image.width * factor) + 1, round(image.height * factor) + 1))
        out.append(image)
    return out


def model_images(model: str | None, n: int, seed: int) -> tuple[list[Image.Image], str, tuple[int, int]]:
    """The configured model's own outputs when they can carry the watermark (else none, and its size)."""
    from eval.common import generation_config
    from nanobanana.generation import GenerationRequest, Generator

    generator = Generator(generation_config(model))
    plan = generator.plan(GenerationRequest("a red circle on a white background", num_images=1, seed=seed))
    size = (plan.settings.width, plan.settings.height)
    if size[0] * size[1] < MIN_PIXELS:
        return [], generator.model_id, size
    from nanobanana.bundled.shapes import TRAIN_TEMPLATES, random_spec
    from nanobanana.bundled.shapes.prompts import caption

    rng = random.Random(seed)
    images: list[Image.Image] = []
    while len(images) < n:
        prompt = caption(random_spec(rng), TRAIN_TEMPLATES[0])  # "a red circle on a white background"
        result = generator.generate(GenerationRequest(prompt, num_images=1, seed=seed + len(images)))
        images += result.images
    return images[:n], generator.model_id, size


# -- measuring -------------------------------------------------------------------------------------------
def measure_marked(provenance: Provenance, kind: str, images: list[Image.Image], model_id: str) -> list[dict]:
    rows = []
    tag = provenance.config.watermark.tag
    for index, image in enumerate(images):
        image_id = secrets.token_urlsafe(24)
        signed, embedding = provenance.mark(image, image_id, Origin("text-to-image", model_id))
        expected = payload_for(tag, image_id)
        for name, transform in TRANSFORMS.items():
            data = transform(signed)
            verdict = provenance.verify(data)
            rows.append({
                "kind": kind, "image": index, "width": image.width, "height": image.height, "transform": name,
                "embedded": embedding.status, "checked": verdict.watermark.checked,
                "found": verdict.watermark.found,
                "payload_exact": verdict.watermark.found and verdict.watermark.payload == f"{tag}:{expected[4:].hex()}",
                "bit_accuracy": Watermark.bit_accuracy(verdict.watermark.bits, expected),
                "manifest_present": verdict.manifest.present, "manifest_valid": verdict.manifest.valid,
                "status": verdict.status,
            })
    return rows


def measure_unmarked(provenance: Provenance, kind: str, images: list[Image.Image]) -> list[dict]:
    rows = []
    for index, image in enumerate(images):
        plain = _encode(image, "PNG")
        for name, transform in TRANSFORMS.items():
            verdict = provenance.verify(transform(plain))
            rows.append({"kind": kind, "image": index, "transform": name, "checked": verdict.watermark.checked,
                         "found": verdict.watermark.found, "status": verdict.status})
    return rows


def measure_time(provenance: Provenance, repeats: int, seed: int) -> list[dict]:
    photo = photo_images(1, seed)
    source = photo[0] if photo else shapes_images(1, seed)[0]
    rows = []
    for side in (256, 512, 1024):
        image = _square(source, side)
        plain, watermark, sign, verify, library = [], [], [], [], []
        for _ in range(repeats):
            library.append(_library_seconds(image))
            t = time.perf_counter()
            data = _encode(image, "PNG", compress_level=1)
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            marked, _ = provenance.embed(image, secrets.token_urlsafe(24))
            watermark.append(time.perf_counter() - t)
            data = _encode(marked, "PNG", compress_level=1)
            t = time.perf_counter()
            signed = provenance.sign(data, Origin("text-to-image", "eval"))
            sign.append(time.perf_counter() - t)
            t = time.perf_counter()
            provenance.verify(signed)
            verify.append(time.perf_counter() - t)
        med = {name: statistics.median(values) * 1000 for name, values in
               (("png_ms", plain), ("watermark_ms", watermark), ("sign_ms", sign), ("verify_ms", verify))}
        rows.append({"size": f"{side}×{side}", **{k: round(v, 1) for k, v in med.items()},
                     "added_ms": round(med["watermark_ms"] + med["sign_ms"], 1),
                     "added_vs_png": round((med["watermark_ms"] + med["sign_ms"]) / med["png_ms"], 1),
                     "library_watermark_ms": round(statistics.median(library) * 1000, 1) if library[0] else None})
    return rows


def _library_seconds(image: Image.Image) -> float | None:
    """invisible-watermark's own DWT-DCT-SVD encoder on the same image (its Python loop over blocks), for
    the side-by-side figure; None where the library is not installed (it is a test dependency)."""
    try:
        import numpy as np
        from imwatermark import WatermarkEncoder
    except ImportError:
        return None
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", b"NBAI1234")
    bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    t = time.perf_counter()
    encoder.encode(bgr, "dwtDctSvd")
    return time.perf_counter() - t


def _rate(hits: int, n: int) -> dict:
    low, high = wilson(hits, n) if n else (None, None)
    return {"value": hits / n if n else None, "ci95": [low, high], "n": n}


def summarise(marked: list[dict], unmarked: list[dict]) -> dict:
    per = {}
    for kind in ["all", *sorted({r["kind"] for r in marked})]:
        rows = [r for r in marked if kind in ("all", r["kind"])]
        per[kind] = {}
        for name in TRANSFORMS:
            these = [r for r in rows if r["transform"] == name]  # too small to read counts as a miss
            per[kind][name] = {
                "too_small_to_read": sum(not r["checked"] for r in these),
                "detection": _rate(sum(r["found"] for r in these), len(these)),
                "payload_exact": _rate(sum(r["payload_exact"] for r in these), len(these)),
                "bit_accuracy": statistics.mean(r["bit_accuracy"] if r["checked"] else 0.5 for r in these)
                if these else None,
                "c2pa_valid": _rate(sum(r["manifest_valid"] for r in these), len(these)),
            }
    fp = {}
    for kind in ["all", *sorted({r["kind"] for r in unmarked})]:
        rows = [r for r in unmarked if kind in ("all", r["kind"]) and r["checked"]]
        fp[kind] = _rate(sum(r["found"] for r in rows), len(rows))
    return {"marked": per, "false_positives": fp}


def report_markdown(summary: dict) -> str:
    lines = ["# Provenance: what the AI marks survive", "",
             f"Command: `{summary['command']}`. Watermark: {summary['watermark']}. Model: {summary['model_note']}",
             "", "## Watermark detection, bit accuracy and C2PA validity per transform (all marked images)", "",
             "| transform | detection [95% CI] | exact payload | bit accuracy | C2PA valid | too small to read |",
             "|---|---|---|---|---|---|"]
    for name, m in summary["marked"]["all"].items():
        d = m["detection"]
        lines.append(f"| {name} | {d['value']:.2f} [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}] (n={d['n']}) | "
                     f"{m['payload_exact']['value']:.2f} | {m['bit_accuracy']:.3f} | {m['c2pa_valid']['value']:.2f} | "
                     f"{m['too_small_to_read']} |")
    for kind, per in summary["marked"].items():
        if kind == "all":
            continue
        lines += ["", f"### {kind}", "", "| transform | detection | bit accuracy |", "|---|---|---|"]
        lines += [f"| {name} | {m['detection']['value']:.2f} (n={m['detection']['n']}) | {m['bit_accuracy']:.3f} |"
                  for name, m in per.items()]
    lines += ["", "## False positives (unmarked images, every transform)", "", "| images | rate [95% CI] | reads |",
              "|---|---|---|"]
    for kind, rate in summary["false_positives"].items():
        lines.append(f"| {kind} | {rate['value']:.4f} [{rate['ci95'][0]:.4f}, {rate['ci95'][1]:.4f}] | {rate['n']} |")
    lines += ["", "## Time added per image (median ms; this machine)", "",
              "| size | plain PNG | watermark | C2PA sign | added | added ÷ PNG | verify | the library's own "
              "watermark encoder |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['png_ms']} | {r['watermark_ms']} | {r['sign_ms']} | {r['added_ms']} | "
              f"×{r['added_vs_png']} | {r['verify_ms']} | {r['library_watermark_ms']} |" for r in summary["timing"]]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    sizes = dict(SMALL if args.small else FULL)
    if args.limit:
        sizes = {name: min(value, args.limit) for name, value in sizes.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as keys:  # a throw-away local CA: the eval never touches real keys
        provenance = Provenance(load_provenance_config(), Path(keys), {})
        if not provenance.config.watermark.enabled:
            provenance.config.watermark.enabled = True  # measured even where the operator turned it off
        images, model_id, model_size = model_images(args.model, sizes["model"], args.seed)
        model_note = (f"`{model_id}` makes {model_size[0]}×{model_size[1]} px images"
                      + (": measured below as `model`." if images else
                         f", too small for the watermark (it needs {MIN_PIXELS} pixels): its images carry the "
                         "C2PA manifest only, so `shapes` (its world at 256 px) stands in."))
        marked = measure_marked(provenance, "shapes", shapes_images(sizes["shapes"], args.seed), model_id)
        marked += measure_marked(provenance, "photos", photo_images(sizes["photos"], args.seed), model_id)
        if images:
            marked += measure_marked(provenance, "model", images, model_id)
        unmarked = measure_unmarked(provenance, "shapes", shapes_images(sizes["fp_shapes"], args.seed + 10_000))
        unmarked += measure_unmarked(provenance, "photos", photo_images(sizes["photos"], args.seed))
        unmarked += measure_unmarked(provenance, "procedural (safety eval)",
                                     procedural_images(sizes["fp_procedural"], args.seed))
        timing = measure_time(provenance, sizes["repeats"], args.seed)
    wm = provenance.config.watermark
    summary = {
        **summarise(marked, unmarked), "timing": timing, "model": model_id, "model_size": list(model_size),
        "model_note": model_note, "watermark": f"{wm.method} in U, strength {wm.strength:g}, tag {wm.tag!r}",
        "images": {kind: len({r["image"] for r in marked if r["kind"] == kind}) for kind in
                   ("shapes", "photos", "model")},
        "command": command_line("provenance", args), "environment": environment(),
    }
    write_csv(args.out / "rows.csv", marked)
    write_csv(args.out / "fp.csv", unmarked)
    write_csv(args.out / "timing.csv", timing)
    write_json(args.out / "summary.json", summary)
    (args.out / "provenance_report.md").write_text(report_markdown(summary), encoding="utf-8")
    print(report_markdown(summary))
    return 0
