"""`python -m eval report`: one dated Markdown + HTML report of every eval result, with its plots beside it.

Reads what `speed`, `errors`, `adherence`, `safety`, `provenance` and `overhead` wrote under the results
folder (a missing one is listed with the command that makes it). `--run-all` runs speed, errors, adherence,
safety and provenance first (with `--small`: CI sizes, about three minutes here). The header states the machine (CPU,
cores, RAM), the versions (python, torch, diffusers, transformers, gradio) and the configuration (model
config, app limits) the numbers came from.

Writes `report.md`, `report.html` and the PNGs under `--out` (default `results/report`).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from eval.common import RESULTS, environment

RUN_ALL_SMALL = {
    "speed": ["--small"],
    "errors": ["--small"],
    "adherence": ["--small"],
    "safety": ["--sample", "40", "--bootstrap", "200", "--latency-samples", "5"],
    "provenance": ["--small"],
}
RUN_ALL_FULL = {"speed": [], "errors": [], "adherence": [], "safety": [], "provenance": []}

Block = tuple[str, Any]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="one Markdown + HTML report of every eval result, with plots",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the commands wrote (default results)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default <results>/report)")
    parser.add_argument("--run-all", action="store_true",
                        help="run speed, errors, adherence, safety and provenance first")
    parser.add_argument("--small", action="store_true", help="with --run-all: CI sizes")
    parser.add_argument("--model", default=None, help="with --run-all: model reference for every command")
    parser.add_argument("--seed", type=int, default=0, help="with --run-all: seed for every command")
    parser.set_defaults(func=run)


# -- reading results ----------------------------------------------------------------------------------
def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # a step that was skipped (e.g. `--cold-starts 0`)
        return None


def _missing(command: str) -> list[Block]:
    return [("p", f"*Not run yet.* Make it with `python -m eval {command}` (or `python -m eval report --run-all`).")]


def _ci(value: Any) -> str:
    if not isinstance(value, dict) or value.get("value") is None:
        return "n/a"
    low, high = value.get("ci95") or [None, None]
    if low is None:
        return f"{value['value']:.3f}"
    return f"{value['value']:.3f} [{low:.3f}, {high:.3f}]"


def _plots(folder: Path, summary: dict | None, names: list[str]) -> list[Block]:
    listed = (summary or {}).get("plots") or names
    return [("img", folder / name) for name in listed if (folder / name).is_file()]


def speed_section(folder: Path) -> list[Block]:
    summary = _json(folder / "summary.json")
    if summary is None:
        return _missing("speed")
    s = summary["settings"]
    blocks: list[Block] = [
        ("p", f"Model `{summary['model']}` at {s['width']}×{s['height']}, {s['steps']} steps, {s['scheduler']}, "
              f"guidance {s['guidance']}; safety filters {summary['safety']}; torch threads "
              f"{summary['environment'].get('torch_threads')}. Command: `{summary['command']}`."),
        ("h3", "Cold start (median of subprocesses, seconds)"),
    ]
    cold = _csv(folder / "cold_start.csv")
    if cold is not None and len(cold):
        table = cold.groupby("side", sort=False)[["import_s", "load_s", "ready_s", "process_wall_s"]].median()
        table.insert(0, "runs", cold.groupby("side", sort=False).size())
        blocks.append(("table", table.reset_index()))
    else:
        blocks.append(("p", "Cold start was not measured in this run (`--cold-starts 0`)."))
    blocks += [
        ("h3", f"Warm requests, per stage ({summary['requests']} requests per side, interleaved)"),
        ("p", "`ours` is one request through the service (`Studio.generate`: validate, reserve, prompt safety, "
              "generate, image safety, store); `bare` is the same pipeline call straight on diffusers. Text "
              "encoding, denoising and decoding are timed with the same hooks on both."),
        ("table", _csv(folder / "stages.csv")),
        ("h3", f"Throughput ({summary['concurrency']} requests at once through the service)"),
        ("table", _csv(folder / "throughput.csv")),
    ]
    return blocks + _plots(folder, summary, ["speed_stages.png", "speed_cold_throughput.png"])


def errors_section(folder: Path) -> list[Block]:
    summary = _json(folder / "summary.json")
    if summary is None:
        return _missing("errors")
    checks = _json(folder / "checks.json") or {}
    rows = [
        {"check": name, "result": "PASS" if c["ok"] else "FAIL",
         "details": ", ".join(f"{k} {v}" for k, v in c.items() if k != "ok" and not isinstance(v, list | dict))}
        for name, c in checks.items() if isinstance(c, dict)
    ]
    table = _csv(folder / "by_cause.csv")
    if table is not None:
        table = table.assign(ci95=[f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(table.ci_low, table.ci_high, strict=True)])
        table = table[["cause", "expected", "n", "errors", "error_rate", "ci95", "as_expected", "outcomes"]]
    return [
        ("p", f"{summary['requests']} requests on `{summary['model']}`; answered as expected: "
              f"{summary['as_expected']}/{summary['requests']}; error rate of valid requests: "
              f"{summary['error_rate_valid_requests']:.1%}. Command: `{summary['command']}`."),
        ("h3", "Error rate by cause (95% Wilson CI)"),
        ("table", table),
        ("h3", "Nothing lost: ledger, refunds, allowance, files"),
        ("table", pd.DataFrame(rows)),
        *_plots(folder, summary, ["errors_by_cause.png"]),
    ]


def adherence_section(folder: Path) -> list[Block]:
    summary = _json(folder / "summary.json")
    if summary is None:
        return _missing("adherence")
    table = _csv(folder / "table.csv")
    blocks: list[Block] = []
    if summary.get("note"):
        blocks.append(("p", f"**Warning:** {summary['note']}"))
    blocks.append(("p", f"Model `{summary['model']}`, {summary['steps']} steps; {summary['prompts_per_cell']} "
                        f"prompts per task and split × {summary['seeds_per_prompt']} seeds = {summary['images']} "
                        f"images, scored by `nanobanana.bundled.shapes.analyse`. `reference`: the analyser on pictures "
                        f"drawn by `render` for the same prompts (its ceiling). Command: `{summary['command']}`."))
    if table is not None:
        shown = table.assign(
            ci95=[("" if pd.isna(lo) else f"[{lo:.2f}, {hi:.2f}]") for lo, hi in zip(table.ci_low, table.ci_high,
                                                                                       strict=True)]
        )
        columns = ["task", "split", "prompts", "images", "accuracy", "ci95", "all_fields_accuracy",
                   "reference_accuracy"]
        shown = shown[(["model"] if "model" in shown else []) + columns]
        blocks += [("h3", "Accuracy per task and split (95% CI)"), ("table", shown)]
    compare = _csv(folder / "compare.csv")
    if compare is not None:
        blocks += [("h3", f"Side by side with the baseline `{summary.get('baseline')}` (same prompts and seeds)"),
                   ("table", compare)]
    blocks.append(("p", "`two_objects` (\"a red circle and a blue square\"): both requested colour-shape pairs "
                        "must be among the objects the analyser finds. The 64 px bundled model (`bundled-64`) never "
                        "saw such captions; the 256 px one was trained on them."))
    return blocks + _plots(folder, summary, ["adherence.png", "samples.png"])


def safety_section(folder: Path) -> list[Block]:
    summary = _json(folder / "summary.json")
    if summary is None:
        return _missing("safety")
    rows = []
    for split, metrics in (summary.get("prompts") or {}).items():
        if not isinstance(metrics, dict) or "binary" not in metrics:
            continue
        b = metrics["binary"]
        rows.append({"prompts": split, "n": b.get("n"), **{m: _ci(b.get(m)) for m in ("precision", "recall", "fpr")}})
    images = summary.get("images") or {}
    latency = summary.get("latency") or {}
    prompt_latency = (latency.get("prompt") or {}).get("single_call") or {}
    image_latency = (latency.get("image") or {}).get("per_image") or {}
    blocks: list[Block] = [
        ("p", f"From `eval/safety.py` (the safety engineer's command; full report: `safety_report.md` beside "
              f"this file). Run: `{summary['environment'].get('command')}`."),
        ("h3", "Prompt filter (unsafe = positive; 95% bootstrap CI)"),
        ("table", pd.DataFrame(rows)),
    ]
    if images:
        blocks.append(("p", f"Image filter: false-positive rate {_ci(images.get('fpr'))} on {images.get('n_safe')} "
                            f"safe images ({images.get('n_unsafe')} unsafe images available offline)."))
    blocks.append(("p", f"Latency: prompt check median {prompt_latency.get('median_ms', 'n/a')} ms, image check "
                        f"median {image_latency.get('median_ms', 'n/a')} ms."))
    return blocks + _plots(folder, None, ["prompt_pr.png", "image_fpr.png"])


def provenance_section(folder: Path) -> list[Block]:
    summary = _json(folder / "summary.json")
    if summary is None:
        return _missing("provenance")
    rows = [{"transform": name, "detection": _ci(m["detection"]), "exact payload": m["payload_exact"]["value"],
             "bit accuracy": m["bit_accuracy"], "C2PA valid": m["c2pa_valid"]["value"]}
            for name, m in summary["marked"]["all"].items()]
    fp = [{"unmarked images": kind, "false-positive rate": _ci(rate), "reads": rate["n"]}
          for kind, rate in summary["false_positives"].items()]
    return [
        ("p", f"Watermark: {summary['watermark']}; images: " + ", ".join(f"{n} {k}" for k, n in
                                                                       summary["images"].items() if n)
              + f". {summary['model_note']} Command: `{summary['command']}` (full tables: "
              "`results/provenance/provenance_report.md`)."),
        ("h3", "Watermark detection (95% CI), bit accuracy and C2PA validity after each transform"),
        ("table", pd.DataFrame(rows)),
        ("h3", "False positives on unmarked images (every transform)"),
        ("table", pd.DataFrame(fp)),
        ("h3", "Time added per image (median ms)"),
        ("table", pd.DataFrame(summary["timing"])),
    ]


def service_overhead_blocks(data: dict) -> list[Block]:
    medians = data.get("median_s") or {}
    share = data.get("overhead_share")
    return [
        ("h3", "Service overhead (`python -m eval service-overhead`)"),
        ("p", f"`{data.get('model')}`, {data.get('repeats')} interleaved requests per side, database "
              f"{data.get('database')}, safety {data.get('safety')}; the service's own share of a request: "
              + (f"{share:.2%}." if isinstance(share, int | float) else "n/a.")),
        ("table", pd.DataFrame([{"part": k.removesuffix("_s"), "median_ms": v * 1000} for k, v in medians.items()
                                if isinstance(v, int | float)])),
    ]


def overhead_section(folder: Path) -> list[Block]:
    data = _json(folder / "overhead.json")
    service = _json(folder / "service_overhead.json")
    if data is None:
        return service_overhead_blocks(service) if service else _missing("overhead")
    rows = [
        {"side": "bare diffusers", "wall_ms": data["bare_median_s"] * 1000, "cpu_ms": data["bare_cpu_median_s"] * 1000},
        {"side": "nanobanana generator", "wall_ms": data["ours_median_s"] * 1000,
         "cpu_ms": data["ours_cpu_median_s"] * 1000},
    ]
    return [
        ("p", f"`{data['model']}` {data['width']}×{data['height']}, {data['steps']} steps, {data['repeats']} "
              f"interleaved calls per side; overhead (median of paired ratios): wall "
              f"{data['overhead_wall']:+.2%}, CPU {data['overhead_cpu']:+.2%}."),
        ("table", pd.DataFrame(rows)),
        *(service_overhead_blocks(service) if service else []),
    ]


def header(results: Path) -> list[Block]:
    from nanobanana.generation import load_generation_config, model_config_from_reference

    env = environment()
    versions = env["versions"]
    config = load_generation_config()
    models_used = {}
    for command in ("speed", "errors", "adherence"):
        summary = _json(results / command / "summary.json")
        if summary:
            models_used.setdefault(summary["model"], []).append(command)
    model_rows = []
    for name, commands in models_used.items() or {config.model.name: []}.items():
        try:
            model = model_config_from_reference(name)
        except Exception:
            model = config.model
        model_rows.append({
            "model": name, "used by": ", ".join(commands), "source": model.source,
            "default steps": model.defaults.steps, "guidance": model.defaults.guidance,
            "schedulers": ", ".join(model.schedulers) or "(model's own)",
            "resolution": model.base_resolution, "device": model.device, "dtype": model.dtype,
        })
    limits = config.limits.model_dump()
    return [
        ("p", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python -m eval report`."),
        ("h2", "Machine, versions, configuration"),
        ("table", pd.DataFrame([
            {"item": "CPU", "value": env["cpu"]},
            {"item": "cores", "value": env["cores"]},
            {"item": "RAM", "value": f"{env['ram_gb']} GB"},
            {"item": "load average (1, 5, 15 min)", "value": ", ".join(map(str, env["load_average"]))},
            {"item": "OS", "value": env["os"]},
            {"item": "python", "value": env["python"]},
            *({"item": p, "value": versions.get(p)} for p in ("torch", "diffusers", "transformers", "gradio")),
            {"item": "git commit", "value": env["git_commit"]},
            {"item": "configured model (configs/generation.yaml)", "value": config.model.name},
        ])),
        ("h3", "Models the results ran on"),
        ("table", pd.DataFrame(model_rows)),
        ("h3", "Generation limits (configs/generation.yaml)"),
        ("table", pd.DataFrame([{"limit": k, "value": ", ".join(v) if isinstance(v, list) else v}
                                for k, v in limits.items()])),
        ("p", "Each section's own command line and the date and load it ran under are in its `summary.json`. "
              "The machine is shared (another job trains in the background), so timings are noisy: medians of "
              "interleaved runs are reported."),
    ]


# -- rendering ----------------------------------------------------------------------------------------
INTEGER_COLUMNS = {"runs", "n", "errors", "as_expected", "prompts", "images", "correct", "requests", "concurrency"}


def _cell(value: Any, column: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column in INTEGER_COLUMNS and isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown(title: str, blocks: list[Block]) -> str:
    lines = [f"# {title}", ""]
    for kind, value in blocks:
        if kind in ("h2", "h3"):
            lines += [("## " if kind == "h2" else "### ") + value, ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "table" and value is not None and len(value):
            columns = [str(c) for c in value.columns]
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "|".join("---" for _ in columns) + "|")
            for row in value.itertuples(index=False):
                cells = (_cell(v, c).replace("|", "\\|") for v, c in zip(row, columns, strict=True))
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        elif kind == "img":
            lines += [f"![{value.stem}]({value.name})", ""]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def to_html(title: str, blocks: list[Block]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:13px}",
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}",
        "img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f5f5f5;padding:0 3px}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for kind, value in blocks:
        if kind in ("h2", "h3"):
            parts.append(f"<{kind}>{html.escape(value)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(value)}</p>")
        elif kind == "table" and value is not None and len(value):
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in value.columns)
            body = "".join(
                "<tr>" + "".join(
                    f"<td>{html.escape(_cell(v, str(c)))}</td>" for v, c in zip(row, value.columns, strict=True)
                ) + "</tr>"
                for row in value.itertuples(index=False)
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            parts.append(f"<img src='{html.escape(value.name)}' alt='{html.escape(value.stem)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build(results: Path, out: Path) -> dict[str, Any]:
    """Write report.md, report.html and the plots into `out`; returns what was included."""
    sections = [
        ("Speed", speed_section(results / "speed")),
        ("Errors and credits", errors_section(results / "errors")),
        ("Prompt adherence", adherence_section(results / "adherence")),
        ("Safety filters", safety_section(results / "safety")),
        ("AI marks (C2PA and watermark)", provenance_section(results / "provenance")),
        ("Generation module overhead", overhead_section(results / "overhead")),
    ]
    blocks = header(results)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for name, section in sections:
        blocks.append(("h2", name))
        for kind, value in section:
            if kind == "img":
                target = out / f"{value.parent.name}_{value.name}"
                shutil.copyfile(value, target)
                value = target
                images.append(target.name)
            blocks.append((kind, value))
    safety_md = results / "safety" / "safety_report.md"
    if safety_md.is_file():
        shutil.copyfile(safety_md, out / "safety_report.md")
    title = f"Nanobanana evaluation report, {time.strftime('%Y-%m-%d')}"
    (out / "report.md").write_text(markdown(title, blocks), encoding="utf-8")
    (out / "report.html").write_text(to_html(title, blocks), encoding="utf-8")
    included = [name for name, section in sections if not (len(section) == 1 and "Not run yet" in section[0][1])]
    return {"sections": included, "images": images}


def run_all(args: argparse.Namespace) -> None:
    from eval.__main__ import main

    plan = RUN_ALL_SMALL if args.small else RUN_ALL_FULL
    for command, extra in plan.items():
        argv = [command, *extra, "--out", str(args.results / command)]
        if command != "safety":
            argv += ["--seed", str(args.seed)] + (["--model", args.model] if args.model else [])
        print(f"== python -m eval {' '.join(argv)}", flush=True)
        code = main(argv)
        if code:
            print(f"   (exit {code}: see its results)")


def run(args: argparse.Namespace) -> int:
    if args.run_all:
        run_all(args)
    out = args.out or args.results / "report"
    included = build(args.results, out)
    print(f"sections with results: {', '.join(included['sections']) or 'none'}; {len(included['images'])} plots")
    print(f"wrote {out}/report.md and {out}/report.html")
    return 0
