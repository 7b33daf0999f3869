"""`python -m nanobanana worker`: a job worker on its own, for an app whose replicas only submit.

Point it at the app's database and data folder (`NANOBANANA_DATABASE_URL`, `NANOBANANA_DATA_DIR`) and
start the web replicas with `NANOBANANA_SERVICE__JOBS__WORKER=none`; start as many workers as there are
model copies to run. They share the queue through the database: each job is claimed by exactly one, in
fair turns, and a worker that dies has its jobs recovered by the others when its lease runs out.

`--ray` instead deploys the worker as a Ray Serve application on the cluster of `jobs.ray.address`
(replicas, resources and autoscaling from `jobs.ray.deployment`) and exits; start the web replicas with
`NANOBANANA_SERVICE__JOBS__WORKER=ray`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from nanobanana.service.build import build_studio


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.ray:
        return deploy_on_ray()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    studio = build_studio(start_worker=True)
    try:
        studio.warm_up()
        worker = studio.worker
        print(f"worker {worker.id} is taking jobs (model {studio.services.generator.model_id}); "
              "Ctrl-C or SIGTERM to stop", flush=True)
        stop.wait()
    finally:
        studio.close()
    return 0


def deploy_on_ray() -> int:
    """Deploy (or update) the Serve worker application on the cluster of `jobs.ray`, then return: the
    replicas live on in the cluster; web replicas started with `jobs.worker: ray` hand them batches."""
    from nanobanana.service.config import load_service_config
    from nanobanana.service.ray_worker import deploy

    config = load_service_config()
    deploy(config)
    ray = config.jobs.ray
    print(f"Serve application {ray.app_name!r} is deployed on {ray.address} "
          f"({ray.deployment.options()})", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker", help="run queued generation jobs (for apps started with jobs.worker: none)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ray", action="store_true",
                        help="deploy the worker as a Ray Serve application on the cluster of jobs.ray, then exit")
    parser.set_defaults(func=run)
