"""The API for scripts and agents: REST under `/v1` (`routes.py`) and MCP tools at `/mcp` (`mcp_tools.py`),
on the same FastAPI app as the page, calling the same `Studio` methods."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route

from nanobanana.service.studio import Studio


def mount_api(app: FastAPI, studio: Studio) -> None:
    """Mount `/v1` (and `/mcp` unless `api.mcp` is off) on `app`, and run the webhook sender (and the MCP
    session manager) with the app's lifespan. Call before Gradio is mounted at `/`."""
    from nanobanana.api.mcp_tools import McpApp
    from nanobanana.api.routes import create_api
    from nanobanana.api.schemas import job_out

    config = studio.services.config.api
    if not config.enabled:
        return
    api = create_api(studio, config)
    app.mount("/v1", api)
    mcp = McpApp(studio, api.state.callers) if config.mcp else None
    if mcp is not None:
        app.router.routes.append(Route("/mcp", endpoint=mcp, name="mcp"))

    def payload(job: Any) -> dict:
        return job_out(studio.describe_job(job)).model_dump(mode="json")

    outer = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with outer(app_) as state, contextlib.AsyncExitStack() as stack:
            if mcp is not None:
                await stack.enter_async_context(mcp.lifespan())
            studio.services.webhooks.start(payload)
            try:
                yield state
            finally:
                studio.services.webhooks.stop()

    app.router.lifespan_context = lifespan
