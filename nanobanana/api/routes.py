"""The REST API for scripts and agents, a FastAPI app mounted at `/v1` (schema at `/v1/openapi.json`).

Every route resolves its caller through `Callers` and calls one `Studio` method, the same ones the page
uses; errors leave as `application/problem+json` (`problems.py`).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which use local aliases.

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.routing import Match

from nanobanana.api.callers import Callers
from nanobanana.api.problems import MEDIA_TYPE, error_response, problem, problem_response
from nanobanana.api.schemas import (
    AccountOut,
    Deleted,
    ImageRequestBase,
    JobOut,
    LedgerEntryOut,
    decode_base64_images,
    job_out,
    ledger_out,
    request_model,
)
from nanobanana.errors import (
    ApiKeyRequired,
    InvalidRequest,
    NanobananaError,
    RequestTooLarge,
    ServiceError,
    UnsupportedContentType,
)
from nanobanana.generation import Mode, load_images
from nanobanana.service.config import ApiConfig
from nanobanana.service.studio import ApiCaller, Studio

log = logging.getLogger(__name__)

PRIVATE = {"Cache-Control": "private, no-store"}
ACCOUNT_ONLY = {"get_ledger", "delete_account"}  # anonymous calls are refused here whatever the configuration
NULLABLE_FORM_FIELDS = {"aspect_ratio", "steps", "guidance", "seed", "scheduler", "webhook_url"}
REPLAYED_HEADER = "Idempotent-Replayed"
DESCRIPTION = """Make and edit images from scripts and agents.

Send an API key (made in the Account tab) as `Authorization: Bearer nb_...`. Without one a call uses the
anonymous free allowance, where the operator allows it. `POST /images` queues a job and answers `202`
with it, or waits up to `?wait=` seconds and answers `200` with the result; poll `GET /jobs/{id}`,
cancel with `DELETE /jobs/{id}`, download with `GET /images/{id}`. Errors are
`application/problem+json`: `detail` is a message for a person, `outcome` our code for it.
"""


# What a submitted job's id is for (OpenAPI links: clients and fuzzers follow them).
JOB_LINKS = {
    "GetJob": {"operationId": "get_job", "parameters": {"job_id": "$response.body#/id"}},
    "CancelJob": {"operationId": "cancel_job", "parameters": {"job_id": "$response.body#/id"}},
}


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Response docs for these error statuses (and 422, which every route may answer), problem+json only."""
    problem_json = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {status: {"content": problem_json, "description": "A problem (RFC 9457)."}
            for status in sorted({*statuses, 422})}


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{where or 'the request'}: {error.get('msg', 'is not valid')}")
    return "The request is not valid — " + "; ".join(parts) + "."


class CatchAll:
    """The innermost guard of the API app: anything unexpected becomes a generic 500 problem (logged with
    its traceback, never shown), and every answer is marked uncacheable."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_private(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message["headers"] = [*headers, (b"cache-control", PRIVATE["Cache-Control"].encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_private)
        except Exception as exc:
            if started:
                raise
            await error_response(exc)(scope, receive, send_private)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"The request is larger than {limit / 1e6:.0f} MB.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"The request is larger than {limit / 1e6:.0f} MB.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def create_api(studio: Studio, config: ApiConfig) -> FastAPI:
    """The `/v1` app for this studio."""
    info = studio.info()
    limits = info.limits
    ImageRequest = request_model(info)
    callers = Callers(studio, config)
    body_limit = limits.max_input_images * (limits.max_upload_bytes * 4 // 3 + 1024) + 64_000
    max_side = max(max(size.width, size.height) for size in info.sizes)

    api = FastAPI(
        title="Nanobanana API", version="1", description=DESCRIPTION, openapi_url="/openapi.json",
        docs_url=None, redoc_url=None, servers=[{"url": "/v1"}],
    )
    api.add_middleware(CatchAll)
    api.state.callers = callers

    @api.exception_handler(NanobananaError)
    async def our_error(request: Request, exc: NanobananaError) -> JSONResponse:
        return error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(problem(422, _validation_message(exc), outcome="invalid_request",
                                        error="InvalidRequest"))

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = {404: "There is no such API route; see /v1/openapi.json.",
                  405: "This route does not take that method; see /v1/openapi.json."}.get(exc.status_code,
                                                                                          str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path: GET and DELETE of one path are two routes
            methods = {m for route in api.router.routes if route.matches(request.scope)[0] != Match.NONE
                       for m in getattr(route, "methods", None) or ()}
            headers["Allow"] = ", ".join(sorted(methods))
        return problem_response(problem(exc.status_code, detail), headers=headers)

    bearer = HTTPBearer(auto_error=False, description="An API key: `nb_...` (Account tab → API keys).")

    def caller(request: Request, _: Annotated[Any, Depends(bearer)] = None) -> ApiCaller:
        return callers.resolve(request)

    def account_caller(request: Request, _: Annotated[Any, Depends(bearer)] = None) -> ApiCaller:
        return callers.account_only(callers.resolve(request))

    Caller = Annotated[ApiCaller, Depends(caller)]
    AccountCaller = Annotated[ApiCaller, Depends(account_caller)]
    JobId = Annotated[str, Path(max_length=64, description="A job id, as `POST /images` returned it.")]
    Wait = Annotated[float, Query(ge=0, le=config.max_wait_seconds, description="Seconds to wait for the job to "
                                  f"end (at most {config.max_wait_seconds:g}).")]

    # -- images -----------------------------------------------------------------------------------
    async def parse_request(request: Request) -> tuple[ImageRequestBase, list[bytes]]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await _read_body(request, body_limit)
        if kind == "application/json" or kind.endswith("+json"):
            try:
                data = json.loads(body)
            except ValueError:
                raise InvalidRequest("The request body is not valid JSON.") from None
            parsed = _validated(data)
            return parsed, _decoded(parsed.images)
        if kind == "multipart/form-data":
            parser = MultiPartParser(request.headers, _once(body), max_files=limits.max_input_images,
                                     max_fields=32, max_part_size=max(1_048_576, limits.max_prompt_chars * 8))
            try:
                form = await parser.parse()
            except MultiPartException as exc:
                raise InvalidRequest(f"The multipart body could not be read: {exc.message}") from None
            fields: dict[str, Any] = {}
            files: list[bytes] = []
            try:
                for name, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        if name != "images":
                            raise InvalidRequest(f"Only `images` may be a file part, not `{name}`.")
                        files.append(await value.read())
                    elif name == "images":
                        fields.setdefault("images", []).append(value)
                    elif value != "" and not (value == "null" and name in NULLABLE_FORM_FIELDS):
                        fields[name] = value  # a form has no null: "" or "null" leaves an optional field unset
            finally:
                await form.close()
            parsed = _validated(fields)
            return parsed, files + _decoded(parsed.images)
        raise UnsupportedContentType("Send the request as application/json (images in base64) or "
                                     "multipart/form-data (images as `images` file parts).")

    def _decoded(images: Any) -> list[bytes]:
        try:
            return decode_base64_images(images, limits.max_upload_bytes)
        except Exception as exc:
            studio.record_refusal(Mode.EDIT, exc)  # an edit refused before the studio saw it: counted here
            raise

    def _validated(data: Any) -> ImageRequestBase:
        if not isinstance(data, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        try:
            return ImageRequest.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(_validation_message(exc)) from None

    body_schema = ImageRequest.model_json_schema()
    multipart_schema = {
        "type": "object", "required": ["prompt"],
        "properties": {**{k: v for k, v in body_schema["properties"].items() if k != "images"},
                       "images": {"type": "array", "maxItems": limits.max_input_images,
                                  "items": {"type": "string", "format": "binary"},
                                  "description": "Images to edit, as file parts."}},
    }
    submit_docs = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": body_schema, "examples": {
            "text-to-image": {"value": {"prompt": "a red triangle on a white background", "num_images": 1,
                                        "seed": 7}},
            "edit": {"value": {"prompt": "a blue circle", "images": [body_schema["properties"]["images"]
                                                                     ["examples"][0][0]], "strength": 0.6}}}},
        "multipart/form-data": {"schema": multipart_schema},
    }}}

    @api.post(
        "/images", operation_id="submit_images", response_model=JobOut, status_code=202,
        openapi_extra=submit_docs,
        summary="Make or edit images (a job)",
        responses={200: {"model": JobOut, "description": "The job ended within `wait`.", "links": JOB_LINKS},
                   202: {"model": JobOut, "description": "The job is queued or running; poll `Location`.",
                         "links": JOB_LINKS},
                   **_problems(401, 402, 409, 413, 415, 422, 429)},
    )
    async def submit(
        request: Request, who: Caller, wait: Wait = 0,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255,
                                                      description="Retries with the same key get the same job "
                                                      f"(charged once) for {config.idempotency_hours:g} h.")] = None,
    ) -> Response:
        parsed, image_bytes = await parse_request(request)
        webhook_url = parsed.webhook_url or (who.key.webhook_url if who.key is not None else None)
        if parsed.webhook_url and who.key is None:
            raise ApiKeyRequired("Webhooks need an API key: their signatures use the key's webhook secret.")
        try:
            pictures = await run_in_threadpool(load_images, image_bytes, limits, max_side) if image_bytes else []
        except Exception as exc:
            studio.record_refusal(Mode.EDIT, exc)  # an unreadable image: refused before the studio saw it
            raise
        gen_request = parsed.generation_request(pictures)
        submitted = await run_in_threadpool(
            studio.submit_job, gen_request, who.identity, idempotency_key=idempotency_key,
            fingerprint=parsed.fingerprint(image_bytes),
            webhook=(who.key, webhook_url) if who.key is not None and webhook_url else None,
        )
        view = await run_in_threadpool(studio.await_job, who.identity, submitted.job_id, wait)
        job = job_out(view)
        headers = {"Location": f"/v1/jobs/{job.id}"}
        if submitted.replayed:
            headers[REPLAYED_HEADER] = "true"
        return JSONResponse(job.model_dump(mode="json"), status_code=202 if view.status.state in
                            ("queued", "running") else 200, headers=headers)

    @api.get("/images/{image_id}", operation_id="get_image", summary="Download one of my images",
             response_class=Response, responses={200: {"content": {"image/png": {}},
                                                       "description": "The stored file, byte for byte."},
                                                 **_problems(401, 404, 429)})
    def image(image_id: Annotated[str, Path(max_length=64)], who: Caller) -> Response:
        data = studio.image_bytes(who.identity, image_id)  # ImageNotFound for anyone else's: 404
        return Response(data, media_type="image/png", headers=PRIVATE)

    # -- jobs -------------------------------------------------------------------------------------
    @api.get("/jobs", operation_id="list_jobs", response_model=list[JobOut], summary="My recent jobs",
             responses=_problems(401, 422, 429))
    def my_jobs(who: Caller, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[JobOut]:
        return [job_out(studio.describe_job(job, who.identity)) for job in studio.jobs(who.identity, limit=limit)]

    @api.get("/jobs/{job_id}", operation_id="get_job", response_model=JobOut,
             summary="One job: state, place in line, progress, result",
             responses=_problems(401, 404, 422, 429))
    def job(job_id: JobId, who: Caller, wait: Wait = 0) -> JobOut:
        return job_out(studio.await_job(who.identity, job_id, wait))

    @api.delete("/jobs/{job_id}", response_model=JobOut, operation_id="cancel_job",
                summary="Cancel a job (nothing is charged)",
                responses=_problems(401, 404, 422, 429))
    def cancel(job_id: JobId, who: Caller) -> JobOut:
        studio.cancel(who.identity, job_id)
        return job_out(studio.job_view(who.identity, job_id))

    # -- the account ------------------------------------------------------------------------------
    @api.get("/account", operation_id="get_account", response_model=AccountOut, summary="Balance and allowance",
             responses=_problems(401, 429))
    def account(who: Caller) -> AccountOut:
        summary = studio.account_summary(who.identity)
        if summary is None:
            return AccountOut(kind="anonymous", allowance_left=studio.allowance_left(who.identity),
                              allowance_per_day=info.anonymous_images_per_day)
        return AccountOut(kind="account", username=summary.username, balance=summary.balance)

    @api.get("/account/ledger", operation_id="get_ledger", response_model=list[LedgerEntryOut],
             summary="My credit history, newest first",
             responses=_problems(401, 422, 429))
    def ledger(who: AccountCaller, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[LedgerEntryOut]:
        entries = studio.ledger(who.identity)
        return [ledger_out(e) for e in reversed(entries[-limit:])]

    @api.get("/account/export", operation_id="export_account", response_class=Response,
             summary="Everything stored about me, as one zip",
             responses={200: {"content": {"application/zip": {}}, "description": "The privacy export."},
                        **_problems(401, 429)})
    def export(who: Caller) -> Response:
        export = studio.export(who.identity)
        found = studio.export_download(who.identity, export.name)
        if found is None:
            raise ServiceError("The export could not be read back; try again.")
        return StreamingResponse(found[1], media_type="application/zip", headers={
            **PRIVATE, "Content-Length": str(export.size),
            "Content-Disposition": 'attachment; filename="nanobanana-my-data.zip"'},
            background=BackgroundTask(studio.forget_export, who.identity, export.name))

    @api.delete("/account", operation_id="delete_account", response_model=Deleted,
                summary="Delete my account and everything tied to it",
                responses=_problems(401, 422, 429))
    def delete_account(who: AccountCaller, confirm: Annotated[str, Query(
            pattern="^DELETE$", description="Must be DELETE: this removes the account, its credits, images, "
                                            "history and API keys for good.")]) -> Deleted:
        studio.delete_account(who.identity)
        return Deleted()

    if config.anonymous == "allowance":
        _anonymous_allowed_in_schema(api)
    return api


def _anonymous_allowed_in_schema(api: FastAPI) -> None:
    """Say in the schema that the key is optional (`security: [{bearer}, {}]`), which FastAPI cannot."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI's, cached by it
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                security = operation.get("security") if isinstance(operation, dict) else None
                if security and {} not in security and operation.get("operationId") not in ACCOUNT_ONLY:
                    operation["security"] = [*security, {}]
        return schema

    api.openapi = openapi  # type: ignore[method-assign]
