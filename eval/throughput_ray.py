"""`python -m eval throughput --worker ray`: the local worker against one and two Ray Serve replicas.

Three setups on this machine, each on PostgreSQL and SeaweedFS (S3), so that only where generation runs
differs: (a) `app.py` with `jobs.worker: local` (the worker thread in the web process); (b) `app.py`
with `jobs.worker: ray` and the worker deployment on a local Ray head (`ray start --head`) with one
replica; (c) the same with two replicas (redeployed between phases). Closed-loop clients (`gradio_client`
on the page's API, single-image requests one after another) run for a fixed time per phase, in the order
local, ray×1, ray×2, ray×2, ray×1, local, so drift hits every setup alike. Per-stage times (queue,
generate, image safety, store) come from each setup's usage rows.

Writes `ray_phases.csv`, `ray_summary.json` and `ray_report.md` under `--out`.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from eval.common import command_line, default_size, environment, generation_config, write_csv, write_json
from eval.throughput import App, Caller, _free_port, _wait_until_up, closed_loop, summarise
from nanobanana.config import REPO_ROOT


def _database(admin_url: str, name: str) -> str:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _environ(base: dict[str, str], database_url: str, prefix: str, worker: str, replicas: int = 1) -> dict[str, str]:
    return {
        **base, "NANOBANANA_DATABASE_URL": database_url,
        "NANOBANANA_SERVICE__STORAGE__LOCATION": f"s3://nanobanana/{prefix}",
        "NANOBANANA_SERVICE__JOBS__WORKER": worker,
        "NANOBANANA_SERVICE__JOBS__RAY__DEPLOYMENT__NUM_REPLICAS": str(replicas),
        "NANOBANANA_SERVICE__JOBS__RAY__DISPATCHERS": "2",
    }


def _start_app(name: str, env: dict[str, str], root: Path) -> App:
    port = _free_port()
    data_dir = root / name
    env = {**env, "NANOBANANA_DATA_DIR": str(data_dir), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_TEMP_DIR": str(data_dir / "gradio")}
    log = root / f"{name}.log"
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    app = App("ours", f"http://127.0.0.1:{port}", process, data_dir)
    return _wait_until_up(app, log)


def _deploy(env: dict[str, str], replicas: int, root: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "nanobanana", "worker", "--ray"], cwd=REPO_ROOT,
                            env={**env, "NANOBANANA_SERVICE__JOBS__RAY__DEPLOYMENT__NUM_REPLICAS": str(replicas)},
                            capture_output=True, text=True, timeout=600)
    (root / f"deploy-{replicas}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"deploying {replicas} replica(s) failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def _stage_seconds(database_url: str) -> dict[str, float]:
    """Mean seconds per request of each stage, from the usage rows (successful requests)."""
    engine = sa.create_engine(database_url)
    with engine.connect() as c:
        rows = c.exec_driver_sql("SELECT timings FROM usage WHERE outcome = 'ok'").scalars().all()
    engine.dispose()
    stages: dict[str, list[float]] = {}
    for timings in rows:
        for stage, seconds in (timings or {}).items():
            stages.setdefault(stage, []).append(float(seconds))
    return {stage: statistics.fmean(values) for stage, values in sorted(stages.items())}


def run(args: argparse.Namespace) -> int:
    from tests.ray_cluster import RayHead
    from tests.seaweedfs import SeaweedFS

    rng = random.Random(args.seed)
    clients = (args.clients or [4 if args.small else 8])[0]
    seconds = args.seconds or (8.0 if args.small else 20.0)
    config = generation_config(args.model)
    steps = args.steps or config.model.defaults.steps
    guidance = config.model.defaults.guidance
    size = default_size(config)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"environment": environment(), "command": command_line(
        "throughput", args, "clients", "seconds", "steps", "worker"), "clients": clients, "steps": steps,
        "seconds_per_phase": seconds}
    phases: list[dict] = []

    with tempfile.TemporaryDirectory(prefix="nb-ray-", dir="/tmp") as tmp:
        root = Path(tmp)
        started = subprocess.run(["bash", str(REPO_ROOT / ".ci/start-postgres.sh")], capture_output=True, text=True,
                                 check=True)
        pg_stop = next(line.rsplit(" ", 1)[1] for line in started.stderr.splitlines() if "stop it with" in line)
        admin_url = started.stdout.strip()
        apps: dict[str, App] = {}
        try:
            with SeaweedFS(root / "seaweedfs") as s3, RayHead(root / "ray") as head:
                base = {**os.environ, **s3.env, **head.env, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                        "NANOBANANA_SESSION_SECRET": secrets.token_hex(16),
                        "NANOBANANA_SERVICE__ALLOWANCE__ANONYMOUS_IMAGES_PER_DAY": "100000000",
                        "NANOBANANA_SERVICE__STORAGE__S3_ENDPOINT": s3.endpoint,
                        "NANOBANANA_SERVICE__JOBS__RAY__ADDRESS": head.address,
                        "NANOBANANA_SERVICE__API__RATE_LIMIT__BURST": "100000"}
                if args.model:
                    base["NANOBANANA_MODEL"] = args.model
                databases = {name: _database(admin_url, f"nb_tp_{name}") for name in ("local", "ray")}
                local_env = _environ(base, databases["local"], "local", "local")
                ray_env = _environ(base, databases["ray"], "ray", "ray")
                summary["deploy_seconds"] = {"1 replica (first)": _deploy(ray_env, 1, root)}
                apps["local"] = _start_app("local", local_env, root)
                apps["ray"] = _start_app("ray", ray_env, root)
                callers = {name: [Caller(app, steps, guidance, size) for _ in range(clients)]
                           for name, app in apps.items()}
                for name in apps:  # first calls pay one-off costs
                    callers[name][0].call("a red circle")
                replicas_now = 1
                for label in ["local", "ray×1", "ray×2", "ray×2", "ray×1", "local"]:
                    app = "local" if label == "local" else "ray"
                    wanted = 2 if label == "ray×2" else 1
                    if app == "ray" and wanted != replicas_now:
                        summary["deploy_seconds"][f"to {wanted} replica(s)"] = _deploy(ray_env, wanted, root)
                        replicas_now = wanted
                        callers["ray"][0].call("a red circle")
                    print(f"phase {label}: {clients} clients for {seconds:g} s", flush=True)
                    rows = closed_loop(callers[app], seconds, rng, {"setup": label})
                    phases.append({"setup": label, **summarise(rows, seconds)})
                summary["stage_seconds"] = {name: _stage_seconds(url) for name, url in databases.items()}
        finally:
            for app in apps.values():
                app.stop()
            subprocess.run(["bash", pg_stop], capture_output=True)

    by_setup: dict[str, list[float]] = {}
    for phase in phases:
        by_setup.setdefault(phase["setup"], []).append(phase["images_per_minute"])
    summary["images_per_minute"] = {k: statistics.fmean(v) for k, v in by_setup.items()}
    local = summary["images_per_minute"]["local"] or float("nan")
    summary["ratio_to_local"] = {k: v / local for k, v in summary["images_per_minute"].items()}
    summary["phases"] = phases
    write_csv(args.out / "ray_phases.csv", phases)
    write_json(args.out / "ray_summary.json", summary)
    (args.out / "ray_report.md").write_text(report(summary), encoding="utf-8")
    print(report(summary))
    return 0


def report(summary: dict) -> str:
    lines = ["# Throughput: local worker vs Ray Serve replicas", "",
             f"{summary['clients']} closed-loop clients, single images, {summary['steps']} steps, "
             f"{summary['seconds_per_phase']:g} s per phase, order local, ray×1, ray×2, ray×2, ray×1, local · "
             f"{summary['environment'].get('cpu', '')}", "",
             "| setup | images/min (each phase) | mean | ratio to local | p50 s | p95 s |", "|---|---|---|---|---|---|"]
    for setup, mean in summary["images_per_minute"].items():
        mine = [p for p in summary["phases"] if p["setup"] == setup]
        each = " / ".join(f"{p['images_per_minute']:.0f}" for p in mine)
        p50 = statistics.fmean(p["p50"] for p in mine if p["p50"] is not None)
        p95 = statistics.fmean(p["p95"] for p in mine if p["p95"] is not None)
        ratio = summary["ratio_to_local"][setup]
        lines.append(f"| {setup} | {each} | {mean:.0f} | {ratio:.2f} | {p50:.2f} | {p95:.2f} |")
    lines += ["", "Mean seconds per request by stage (usage rows):", "",
              "| stage | local | ray |", "|---|---|---|"]
    stages = sorted(set(summary["stage_seconds"]["local"]) | set(summary["stage_seconds"]["ray"]))
    for stage in stages:
        lines.append(f"| {stage} | {summary['stage_seconds']['local'].get(stage, float('nan')):.3f} | "
                     f"{summary['stage_seconds']['ray'].get(stage, float('nan')):.3f} |")
    lines += ["", "Deploy times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["deploy_seconds"].items())]
    return "\n".join(lines) + "\n"
