"""The whole multi-machine layout on loopback, as deploy/local-cluster.sh starts it: PostgreSQL, SeaweedFS,
a Ray head with the worker deployment, and two web replicas (`app.py` processes, `jobs.worker: ray`).

A mixed load goes through both replicas (accounts with API keys and anonymous visitors, one and two images,
a refused request); then: every balance equals its ledger sum, every image is served to its owner by
either replica and to nobody else, the anonymous allowance reads the same on both, and deleting an
account leaves no row and no object of it. Faults: the object store down (a clear 503, nothing charged,
no rows), PostgreSQL restarted under load (requests after it succeed), a web replica killed while its
job runs on the cluster (it finishes; the owner sees it from the other replica).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from nanobanana.config import REPO_ROOT
from nanobanana.service.accounts import OAuthProfileData
from nanobanana.service.db import accounts, api_keys, generations, images, jobs, ledger
from tests.helpers import free_port, make_studio

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ALLOWANCE = 12  # every visitor here comes from 127.0.0.1: the per-address count is shared
GRANT = 40


class WebReplica:
    def __init__(self, name: str, env: dict[str, str], folder: Path) -> None:
        self.name, self.env, self.folder = name, env, folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> WebReplica:
        env = {**self.env, "GRADIO_SERVER_PORT": str(self.port), "NANOBANANA_DATA_DIR": str(self.folder / "data")}
        log = (self.folder / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / f"{self.name}.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/privacy", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{self.name} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def layout(ray_head, s3_server, tiny_model_dir, tmp_path_factory):
    from tests.service.conftest import fresh_postgres_database

    with fresh_postgres_database("nb_cluster") as url:
        yield from _started(url, ray_head, s3_server, tiny_model_dir, tmp_path_factory)


def _started(url, ray_head, s3_server, tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    prefix = f"c{secrets.token_hex(4)}"
    app_name = f"nb-cluster-{secrets.token_hex(3)}"
    env = {
        **os.environ, **s3_server.env,
        "NANOBANANA_DATABASE_URL": url, "NANOBANANA_MODEL": str(tiny_model_dir), "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1",
        "NANOBANANA_SERVICE__STORAGE__LOCATION": f"s3://{s3_server.bucket}/{prefix}",
        "NANOBANANA_SERVICE__STORAGE__S3_ENDPOINT": s3_server.endpoint,
        "NANOBANANA_SERVICE__STORAGE__SWEEP_INTERVAL_SECONDS": "0",
        "NANOBANANA_SERVICE__JOBS__WORKER": "ray", "NANOBANANA_SERVICE__JOBS__RAY__ADDRESS": ray_head.address,
        "NANOBANANA_SERVICE__JOBS__RAY__APP_NAME": app_name,
        "NANOBANANA_SERVICE__JOBS__RAY__DEPLOYMENT__GRACEFUL_SHUTDOWN_TIMEOUT_S": "5",
        "NANOBANANA_SERVICE__JOBS__LEASE_SECONDS": "5", "NANOBANANA_SERVICE__JOBS__POLL_SECONDS": "0.1",
        "NANOBANANA_SERVICE__JOBS__MAX_OPEN_PER_PERSON": "20",
        "NANOBANANA_SERVICE__ALLOWANCE__ANONYMOUS_IMAGES_PER_DAY": str(ALLOWANCE),
        "NANOBANANA_SERVICE__CREDITS__SIGNUP_GRANT": str(GRANT),
        "NANOBANANA_SERVICE__API__RATE_LIMIT__BURST": "200",
        "NANOBANANA_SERVICE__API__RATE_LIMIT__REQUESTS_PER_MINUTE": "600",
        "NANOBANANA_SAFETY__PROMPT__SEMANTIC__ENABLED": "false", "NANOBANANA_SAFETY__IMAGE__ENABLED": "false",
        "NANOBANANA_SESSION_SECRET": secrets.token_hex(32),
    }
    deploy = subprocess.run([sys.executable, "-m", "nanobanana", "worker", "--ray"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-3000:]
    replicas = [WebReplica(n, env, folder) for n in ("web1", "web2")]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(WebReplica.start, replicas))
    # The operator's view: accounts are made by a first sign-in, keys in the Account tab (same database).
    from nanobanana.generation import Generator

    saved = {k: os.environ.get(k) for k in s3_server.env}
    os.environ.update(s3_server.env)
    operator = make_studio(folder / "operator", Generator(), database_url=url, start_worker=False,
                           storage={"location": f"s3://{s3_server.bucket}/{prefix}", "s3_endpoint": s3_server.endpoint},
                           jobs={"worker": "none"}, credits={"signup_grant": GRANT})
    try:
        yield {"replicas": replicas, "operator": operator, "prefix": prefix, "s3": s3_server, "url": url}
    finally:
        operator.close()
        for replica in replicas:
            replica.stop()
        delete = (f"import ray; from ray import serve; ray.init(address='{ray_head.address}', "
                  f"namespace='nanobanana', log_to_driver=False); serve.delete('{app_name}')")
        subprocess.run([sys.executable, "-c", delete], env=env, capture_output=True, timeout=120)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


class Actor:
    """One person: an account with an API key, or an anonymous visitor (a visitor cookie)."""

    def __init__(self, name: str, key: str | None = None, cookie: str | None = None, account_id: str | None = None):
        self.name, self.key, self.cookie, self.account_id = name, key, cookie, account_id
        self.images: list[str] = []

    def headers(self) -> dict[str, str]:
        if self.key:
            return {"Authorization": f"Bearer {self.key}"}
        return {"Cookie": f"nb_visitor={self.cookie}"} if self.cookie else {}

    def client(self, replica: WebReplica) -> httpx.Client:
        return httpx.Client(base_url=replica.url, headers=self.headers(), timeout=120)


def make_people(layout, accounts_n: int = 3, visitors_n: int = 2) -> list[Actor]:
    operator = layout["operator"]
    people = []
    for i in range(accounts_n):
        tag = secrets.token_hex(4)
        account = operator.sign_in(OAuthProfileData("local", f"user-{tag}", f"user{i}-{tag}"))
        people.append(Actor(f"account{i}", key=operator.create_api_key(account.identity, "load").key,
                            account_id=account.id))
    for i in range(visitors_n):
        first = httpx.get(f"{layout['replicas'][i % 2].url}/v1/account", timeout=30)
        people.append(Actor(f"visitor{i}", cookie=first.cookies["nb_visitor"]))
    return people


def submit(actor: Actor, replica: WebReplica, n: int, **body) -> httpx.Response:
    with actor.client(replica) as c:
        response = c.post("/v1/images", params={"wait": 60},
                          json={"prompt": "a blue circle", "steps": 2, "num_images": n, **body})
    if response.status_code == 200 and response.json()["state"] == "succeeded":
        actor.images += [i["id"] for i in response.json()["result"]["images"]]
    return response


def ledger_sum(engine, account_id: str) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.select(sa.func.coalesce(sa.func.sum(ledger.c.delta), 0))
                             .where(ledger.c.account_id == account_id)).scalar_one())


def test_a_mixed_load_through_two_replicas_keeps_every_account_right(layout):
    web1, web2 = layout["replicas"]
    engine = layout["operator"].services.db.engine
    people = make_people(layout)
    plan = [(p, (web1, web2)[(i + j) % 2], 1 + (j % 2)) for i, p in enumerate(people) for j in range(3)]
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda item: submit(*item), plan))
        refused = list(pool.map(lambda p: submit(p, web2, 1, steps=999), people))  # invalid: nothing charged
    assert all(r.status_code == 200 and r.json()["state"] == "succeeded" for r in responses), \
        [r.text[:300] for r in responses if r.status_code != 200]
    assert all(r.status_code == 422 for r in refused)

    for person in people:
        views = []
        for replica in (web1, web2):
            with person.client(replica) as c:
                views.append(c.get("/v1/account").json())
        assert views[0] == views[1]  # the same on both replicas
        if person.account_id:
            assert views[0]["balance"] == ledger_sum(engine, person.account_id) == GRANT - len(person.images)
        else:  # the address count binds: all visitors share 127.0.0.1, whichever replica they used
            used = sum(len(p.images) for p in people if not p.account_id)
            assert views[0]["allowance_left"] == ALLOWANCE - used

    for person in people:
        for image_id in person.images:
            bodies = set()
            for replica in (web1, web2):
                with person.client(replica) as c:
                    response = c.get(f"/v1/images/{image_id}")
                assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
                bodies.add(response.content)
                for other in people:
                    if other is not person:
                        with other.client(replica) as c:
                            assert c.get(f"/v1/images/{image_id}").status_code == 404
            assert len(bodies) == 1


def test_deleting_an_account_on_one_replica_leaves_no_row_and_no_object(layout):
    web1, web2 = layout["replicas"]
    s3, prefix = layout["s3"], layout["prefix"]
    engine = layout["operator"].services.db.engine
    person, other = make_people(layout, accounts_n=2, visitors_n=0)
    for replica in (web1, web2):
        assert submit(person, replica, 2).status_code == 200
    assert submit(other, web1, 1).status_code == 200
    with person.client(web2) as c:
        assert c.get("/v1/account/export").status_code == 200
        assert c.delete("/v1/account", params={"confirm": "DELETE"}).status_code == 200
    with engine.connect() as c:
        assert c.execute(sa.select(accounts).where(accounts.c.id == person.account_id)).first() is None
        for table, column in ((ledger, ledger.c.account_id), (generations, generations.c.account_id),
                              (api_keys, api_keys.c.account_id), (images, images.c.owner_key),
                              (jobs, jobs.c.owner_key)):
            assert c.execute(sa.select(table).where(column == person.account_id)).first() is None, table.name
    keys = s3.keys(prefix + "/")
    assert not [k for k in keys if any(i in k for i in person.images)]
    assert not [k for k in keys if "/exports/" in k]
    assert all(any(i in k for k in keys) for i in other.images)
    with other.client(web2) as c:
        assert c.get(f"/v1/images/{other.images[0]}").status_code == 200


def test_a_web_replica_killed_while_its_job_runs_on_the_cluster(layout):
    web1, web2 = layout["replicas"]
    engine = layout["operator"].services.db.engine
    (person,) = make_people(layout, accounts_n=1, visitors_n=0)
    with person.client(web1) as c:
        job = c.post("/v1/images", json={"prompt": "a blue circle", "steps": 40, "num_images": 4}).json()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as c:
            if c.execute(sa.select(jobs.c.state).where(jobs.c.id == job["id"])).scalar() == "running":
                break
        time.sleep(0.05)
    web1.kill()
    try:
        with person.client(web2) as c:
            done = c.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
            assert done["state"] == "succeeded" and len(done["result"]["images"]) == 4
            assert c.get(done["result"]["images"][0]["url"]).status_code == 200
            assert c.get("/v1/account").json()["balance"] == ledger_sum(engine, person.account_id)
    finally:
        web1.start()


def test_postgres_restarted_under_load_then_requests_succeed(layout):
    web1, web2 = layout["replicas"]
    engine = layout["operator"].services.db.engine
    pg_data = _postgres_data_dir()
    if pg_data is None:
        pytest.skip("the test PostgreSQL was not started by .ci/start-postgres.sh (its data folder is unknown)")
    (person,) = make_people(layout, accounts_n=1, visitors_n=0)
    with ThreadPoolExecutor(4) as pool:
        during = [pool.submit(submit, person, (web1, web2)[i % 2], 1) for i in range(6)]
        _restart_postgres(pg_data)
        statuses = [f.result().status_code for f in during]
    # During the restart a request may fail, with a message and without a charge; none is lost half-way.
    after = [submit(person, (web1, web2)[i % 2], 1) for i in range(4)]
    assert all(r.status_code == 200 and r.json()["state"] == "succeeded" for r in after), [r.text[:200] for r in after]
    assert all(s in (200, 500, 503) for s in statuses)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # requests cut off by the restart are recovered by lease
        with engine.connect() as c:
            open_jobs = c.execute(sa.select(sa.func.count()).select_from(jobs).where(
                jobs.c.owner_key == person.account_id, jobs.c.state.in_(("queued", "running")))).scalar_one()
        if not open_jobs:
            break
        time.sleep(0.5)
    with person.client(web2) as c:
        assert c.get("/v1/account").json()["balance"] == ledger_sum(engine, person.account_id)


def _postgres_data_dir() -> Path | None:
    """The data folder of the cluster .ci/start-postgres.sh started for NANOBANANA_TEST_POSTGRES_URL."""
    from tests.service.conftest import POSTGRES_URL

    port = str(sa.make_url(POSTGRES_URL).port)
    for folder in Path("/tmp").glob("nanobanana-pg.*"):
        pid_file = folder / "data" / "postmaster.pid"
        lines = pid_file.read_text().splitlines() if pid_file.is_file() else []
        if len(lines) > 3 and lines[3].strip() == port:
            return folder / "data"
    return None


def _restart_postgres(data: Path) -> None:
    """`pg_ctl restart` (fast: open connections are cut), with the options it was started with."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # The server's output goes to its log file, not to a pipe of ours: the restarted server keeps it open.
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(data.parent / "server.log"),
                    "-m", "fast", "-w", "restart"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)


def test_a_gradio_event_is_only_known_to_the_replica_that_took_it(layout):
    """Why the balancer needs session affinity for the page (deploy/README.md): Gradio keeps a queued
    event in the memory of the replica that accepted it; the API and downloads need none."""
    web1, web2 = layout["replicas"]
    visitor = httpx.get(f"{web1.url}/v1/account", timeout=30).cookies["nb_visitor"]
    headers = {"Cookie": f"nb_visitor={visitor}"}
    args = ["a blue circle", "1:1", 1, "", 2, 1.0, 0, True, ""]  # the page's Generate, as eval/throughput sends it
    posted = httpx.post(f"{web1.url}/gradio_api/call/generate", json={"data": args}, headers=headers, timeout=30)
    assert posted.status_code == 200, posted.text
    event = posted.json()["event_id"]
    elsewhere = _events(f"{web2.url}/gradio_api/call/generate/{event}", headers)
    same = _events(f"{web1.url}/gradio_api/call/generate/{event}", headers)
    assert "event: complete" in same, same[-500:]
    assert "event: complete" not in elsewhere, elsewhere[-500:]


def _events(url: str, headers: dict[str, str]) -> str:
    """The server-sent events of one Gradio call, as far as the server sends them."""
    text = ""
    try:
        with httpx.stream("GET", url, headers=headers, timeout=120) as response:
            text = f"status {response.status_code}\n"
            for chunk in response.iter_text():
                text += chunk
    except httpx.RemoteProtocolError as exc:  # the stream was cut: what came is the answer
        text += f"\n(cut: {exc})"
    return text
