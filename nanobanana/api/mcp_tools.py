"""MCP tools for agents at `/mcp` (the MCP streamable HTTP transport, stateless, JSON answers).

`generate_image`, `edit_image`, `get_job` and `account_balance` call the same `Studio` methods as the REST
routes and answer with the same job documents. Every HTTP request to `/mcp` needs an account's API key
(`Authorization: Bearer nb_...`), checked and rate-limited like a REST call before the MCP layer sees it.
Built on the `mcp` SDK directly: Gradio's own MCP server needs an older pydantic than ours.
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations, which use local values.

import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field
from starlette.requests import Request

from nanobanana.api.callers import Callers
from nanobanana.api.problems import error_response
from nanobanana.api.schemas import job_out
from nanobanana.errors import NanobananaError
from nanobanana.generation import GenerationRequest, Mode, load_images
from nanobanana.service.studio import ApiCaller, Studio

CALLER = "nanobanana.caller"
MAX_WAIT = 60.0


def _caller(ctx: Context) -> ApiCaller:
    request = ctx.request_context.request
    caller = request.scope.get(CALLER) if isinstance(request, Request) else None
    if caller is None:  # the HTTP guard below always sets it; nothing reaches a tool without it
        raise ToolError("This needs an API key.")
    return caller


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the studio; our errors reach the agent as their message (a tool error), never a traceback."""
    try:
        return fn(*args, **kwargs)
    except NanobananaError as exc:
        raise ToolError(str(exc)) from None


class McpApp:
    """The MCP server, the ASGI app that guards it, and its lifespan (run by the web app's)."""

    def __init__(self, studio: Studio, callers: Callers) -> None:
        self.studio = studio
        self.callers = callers
        self.server = self._server()
        # Stateless: any replica answers any call. The web app's guards check Origin; keys, not cookies,
        # are the credentials, so the SDK's Host allow-list (DNS rebinding) is not needed here.
        self.server.streamable_http_app(
            streamable_http_path="/mcp", json_response=True, stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.handler = self.server.session_manager.handle_request

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            scope[CALLER] = self.callers.resolve(request, key_required=True)
        except Exception as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.handler(scope, receive, send)

    def _server(self) -> MCPServer:
        studio = self.studio
        info = studio.info()
        limits = info.limits
        max_side = max(max(size.width, size.height) for size in info.sizes)
        root = logging.getLogger()
        guard = logging.NullHandler()  # the SDK sets up logging when nothing has: it must not take over ours
        root.addHandler(guard)
        try:
            server = MCPServer("nanobanana", title="Nanobanana", instructions=(
                "Make and edit images. generate_image and edit_image queue a job and wait up to wait_seconds for "
                "it; get_job follows it. Images are at /v1/images/<id> with the same API key."))
        finally:
            root.removeHandler(guard)
        wait_field = Field(20.0, ge=0, le=MAX_WAIT, description="Seconds to wait for the job to end.")

        def submitted(ctx: Context, request: GenerationRequest, wait: float) -> dict:
            caller = _caller(ctx)
            job = _run(studio.submit_job, request, caller.identity)
            return job_out(_run(studio.await_job, caller.identity, job.job_id, wait)).model_dump(mode="json")

        @server.tool(description="Make images from a text prompt. Returns the job; when it succeeded, its "
                                 "images' ids and URLs.")
        def generate_image(
            ctx: Context,
            prompt: Annotated[str, Field(min_length=1, max_length=limits.max_prompt_chars)],
            aspect_ratio: Annotated[str, Field(description="One of: " + ", ".join(s.ratio for s in info.sizes))]
            = "1:1",
            num_images: Annotated[int, Field(ge=1, le=limits.max_images)] = 1,
            negative_prompt: str = "",
            steps: Annotated[int | None, Field(ge=1, le=info.max_steps)] = None,
            seed: Annotated[int | None, Field(ge=0, le=2**32 - 1)] = None,
            wait_seconds: Annotated[float, wait_field] = 20.0,
        ) -> dict:
            request = GenerationRequest(prompt=prompt, aspect_ratio=aspect_ratio, num_images=num_images,
                                        negative_prompt=negative_prompt, steps=steps, seed=seed)
            return submitted(ctx, request, wait_seconds)

        @server.tool(description="Edit an image by an instruction: give the image as base64 (PNG, JPEG or WebP) "
                                 "or the id of one of your stored images. Returns the job.")
        def edit_image(
            ctx: Context,
            instruction: Annotated[str, Field(min_length=1, max_length=limits.max_prompt_chars)],
            image_base64: str | None = None,
            image_id: str | None = None,
            strength: Annotated[float, Field(ge=0.05, le=1.0)] = 0.6,
            steps: Annotated[int | None, Field(ge=1, le=info.max_steps)] = None,
            seed: Annotated[int | None, Field(ge=0, le=2**32 - 1)] = None,
            wait_seconds: Annotated[float, wait_field] = 20.0,
        ) -> dict:
            caller = _caller(ctx)
            if (image_base64 is None) == (image_id is None):
                raise ToolError("Give exactly one of image_base64 and image_id.")
            try:
                if image_id is not None:
                    pictures = [_run(studio.image_picture, caller.identity, image_id)]
                else:
                    try:
                        data = base64.b64decode(image_base64 or "", validate=True)
                    except (binascii.Error, ValueError):
                        raise ToolError("image_base64 is not valid base64.") from None
                    pictures = _run(load_images, [data], limits, max_side=max_side)
            except ToolError as exc:
                studio.record_refusal(Mode.EDIT, exc)  # refused before the studio saw it: counted once, here
                raise
            request = GenerationRequest(prompt=instruction, mode=Mode.EDIT, aspect_ratio="auto", images=pictures,
                                        strength=strength, steps=steps, seed=seed)
            return submitted(ctx, request, wait_seconds)

        @server.tool(description="Where one of your jobs stands (place in line, progress) and, once ended, its "
                                 "images or its error.")
        def get_job(ctx: Context, job_id: Annotated[str, Field(max_length=64)],
                    wait_seconds: Annotated[float, Field(ge=0, le=MAX_WAIT)] = 0.0) -> dict:
            caller = _caller(ctx)
            return job_out(_run(studio.await_job, caller.identity, job_id, wait_seconds)).model_dump(mode="json")

        @server.tool(description="Your credit balance.")
        def account_balance(ctx: Context) -> dict:
            caller = _caller(ctx)
            summary = _run(studio.account_summary, caller.identity)
            return {"username": summary.username, "balance": summary.balance}

        return server
