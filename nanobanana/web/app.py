"""The web app: the page (`page.py`) mounted on FastAPI with our routes and guards, and `serve`.

    app = create_app(build_studio())        # a FastAPI app: Gradio at /, /files, /metrics, /privacy, sign-in
    serve(app, load_ui_config())            # uvicorn, as `python app.py` does
"""

import logging
import os
from collections.abc import Mapping

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from nanobanana.api import mount_api
from nanobanana.service.studio import Studio
from nanobanana.web import auth, middleware
from nanobanana.web.config import UIConfig, load_ui_config
from nanobanana.web.gradio_files import file_routes
from nanobanana.web.handlers import GENERIC_ERROR
from nanobanana.web.page import PAGE_HEAD, StudioUI
from nanobanana.web.routes import mcp_available, render_policy_page, safe_target

log = logging.getLogger(__name__)

__all__ = ["GENERIC_ERROR", "StudioUI", "create_app", "serve"]


# -- the web app --------------------------------------------------------------------------------------
def create_app(studio: Studio, config: UIConfig | None = None,
               environ: Mapping[str, str] | None = None) -> FastAPI:
    """Gradio at `/`, plus `/files/...`, `/metrics`, `/privacy`, `/logout`, the Google/GitHub sign-in
    routes and the API (`/v1`, `/mcp`), behind the guards of `nanobanana.web.middleware`."""
    environ = os.environ if environ is None else environ
    config = config or load_ui_config(environ)
    # One key for every replica (sign-ins and visitors' cookies are valid whichever one answers).
    secret = auth.session_secret(config, environ, shared=lambda: studio.services.db.instance_secret("session-cookie"))
    auth.install_gradio_session(secret, config.dev_login, environ)
    ui = StudioUI(studio, config, environ)
    demo = ui.build()
    demo.queue(default_concurrency_limit=config.queue.concurrency_limit, max_size=config.queue.max_size)
    # Requests waiting in the job queue each hold a thread: Gradio's default of 40 would let Gradio's
    # first-come order decide again past 40 waiting people (what `launch(max_threads=...)` sets).
    demo.max_threads = config.queue.max_threads
    demo._queue.max_thread_count = config.queue.max_threads

    on_space = auth.on_space(environ)
    session_seconds = int(studio.sign_in_hours * 3600)
    session_key = auth.middleware_key(secret)  # the key Gradio's own session layer signs with too
    app = FastAPI(title=config.title, docs_url=None, redoc_url=None, openapi_url=None)
    same_site = "none" if on_space else "lax"  # on a Space the page is an iframe on huggingface.co
    # Each add_middleware wraps the ones before it: a request meets them from the last added to the first.
    app.add_middleware(SessionMiddleware, secret_key=session_key, max_age=session_seconds,
                       same_site=same_site, https_only=True)
    app.add_middleware(middleware.VisitorCookie, same_site=same_site)
    app.add_middleware(middleware.InputGuard, blocks=demo)
    app.add_middleware(middleware.SessionGuard, sessions=studio.sign_in_sessions, who=auth.session_person,
                       codec=middleware.SessionCodec(session_key, session_seconds),
                       same_site=same_site)
    app.add_middleware(middleware.SameOriginOnly, allowed_origins=config.allowed_origins(environ))
    app.add_middleware(middleware.SecurityHeaders, frame_ancestors=["https://huggingface.co"] if on_space else [])

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(studio.metrics_text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/privacy")
    def privacy() -> HTMLResponse:
        return HTMLResponse(render_policy_page(config.title, studio.policy_markdown()))

    @app.get("/logout")
    def logout(request: Request) -> RedirectResponse:
        request.session.pop("oauth_info", None)  # the session guard then closes the server-side session
        return RedirectResponse(safe_target(request.query_params.get("_target_url")), status_code=302)

    file_routes(app, studio)
    mount_api(app, studio)  # /v1 and /mcp, before Gradio takes /
    providers = auth.add_provider_routes(app, config, studio)
    if providers:
        log.info("Sign-in with %s enabled.", ", ".join(providers))
    if not on_space and config.dev_login.enabled:
        log.warning("Local development sign-in is on: 'Sign in with Hugging Face' signs in as %r. "
                    "Set NANOBANANA_UI__DEV_LOGIN__ENABLED=false on a shared server.",
                    config.dev_login.username)
    mcp = config.mcp_server and mcp_available()
    if config.mcp_server and not mcp:
        log.warning("mcp_server is on but gradio's MCP extra is not installed "
                    '(pip install "gradio[mcp]"); serving without MCP.')
    return gr.mount_gradio_app(
        app, demo, path="/", mcp_server=mcp, show_error=False, app_kwargs={"openapi_url": None},
        # Gradio's run history keeps prompts and results in the browser; our history has a retention.
        run_history=False,
        # Gradio refuses larger uploads at the door, before writing them anywhere.
        max_file_size=ui.info.limits.max_upload_bytes,
        footer_links=["api", "settings"], theme=gr.themes.Soft(primary_hue="yellow"), head=PAGE_HEAD,
    )


def serve(app: FastAPI, config: UIConfig, environ: Mapping[str, str] | None = None) -> None:
    import uvicorn

    environ = os.environ if environ is None else environ
    host, port = config.host(environ), config.port(environ)
    proxies = config.proxies(environ)
    log.info("Nanobanana on http://%s:%d (%s)", host, port,
             f"trusting forwarded headers from {', '.join(proxies)}" if proxies else "no trusted proxy")
    # Client addresses (the anonymous allowance) and the scheme come from X-Forwarded-* only when the
    # direct peer is a listed proxy; anyone else could write any address there.
    uvicorn.run(app, host=host, port=port, proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
                log_level="info",
                # The policy promises client addresses are never written anywhere: no access log.
                access_log=False)
