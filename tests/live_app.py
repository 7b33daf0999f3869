"""`python app.py` as a real process on 127.0.0.1, and raw Gradio queue calls to it over HTTP.

The security tests attack it; the crash tests kill it with SIGKILL and start it again on the same data.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from nanobanana.config import REPO_ROOT
from tests.helpers import free_port


@dataclass
class Live:
    url: str
    process: subprocess.Popen
    log: Path
    data_dir: Path
    gradio_dir: Path
    fns: dict[str, int]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def files_in_gradio_dir(self) -> set[Path]:
        return {p for p in self.gradio_dir.rglob("*") if p.is_file()}


def start_app(root: Path, env: Mapping[str, str], *, port: int | None = None, timeout: float = 240) -> Live:
    """Start `python app.py` with `env` on top of this process's environment, data under `root`; returns
    once it answers."""
    data_dir, gradio_dir, log = root / "data", root / "gradio", root / "app.log"
    gradio_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    full = {
        **os.environ,
        "NANOBANANA_DATA_DIR": str(data_dir),
        "GRADIO_TEMP_DIR": str(gradio_dir),
        "GRADIO_SERVER_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        **env,
    }
    full.pop("FORWARDED_ALLOW_IPS", None)
    with log.open("a") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=full, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            config = httpx.get(url + "/config", timeout=5)
            if config.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError("app.py did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.5)
    fns = {d["api_name"]: d["id"] for d in config.json()["dependencies"] if d.get("api_name")}
    return Live(url, process, log, data_dir, gradio_dir, fns)


def stop_app(live: Live) -> None:
    live.process.terminate()
    try:
        live.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        live.process.kill()


# -- raw Gradio calls -----------------------------------------------------------------------------------
def new_visitor(live: Live) -> httpx.Client:
    """A browser-like client: it keeps the visitor cookie the app hands out."""
    c = httpx.Client(base_url=live.url, timeout=60)
    c.get("/config")
    return c


def set_session(c: httpx.Client, value: str) -> None:
    c.cookies.delete("session")
    c.cookies.set("session", value)


def session_of(c: httpx.Client) -> str:
    return next(cookie.value for cookie in c.cookies.jar if cookie.name == "session")


def signed_in(live: Live) -> httpx.Client:
    """A client that went through the sign-in routes; the Secure session cookie is carried explicitly."""
    c = new_visitor(live)
    response = c.get("/login/huggingface")
    while True:
        for raw in response.headers.get_list("set-cookie"):
            if raw.startswith("session="):
                set_session(c, raw.split(";")[0].split("=", 1)[1])
        if response.status_code not in (302, 303, 307):
            break
        response = c.get(response.headers["location"].removeprefix(live.url))
    assert session_of(c), "sign-in gave no session cookie"
    return c


def join(c: httpx.Client, live: Live, api_name: str, data: list, **extra) -> httpx.Response:
    body = {"data": data, "fn_index": live.fns[api_name], "session_hash": secrets.token_hex(8),
            "event_data": None, "trigger_id": None, **extra}
    return c.post("/gradio_api/queue/join", json=body)


def call(c: httpx.Client, live: Live, api_name: str, data: list, timeout: float = 120) -> dict:
    """Join the queue and read its event stream to the end; returns the completion message."""
    session_hash = secrets.token_hex(8)
    body = {"data": data, "fn_index": live.fns[api_name], "session_hash": session_hash,
            "event_data": None, "trigger_id": None}
    joined = c.post("/gradio_api/queue/join", content=json.dumps(body), headers={"content-type": "application/json"})
    assert joined.status_code == 200, joined.text
    with c.stream("GET", "/gradio_api/queue/data", params={"session_hash": session_hash},
                  timeout=timeout) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed":
                return message
    raise AssertionError("the event stream ended without completion")


