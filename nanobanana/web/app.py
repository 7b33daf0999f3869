"""The Gradio app: Create, Edit, History, Account, Stats and Privacy on top of `nanobanana.service.studio.Studio`.

    app = create_app(build_studio())        # a FastAPI app: Gradio at /, /metrics, /privacy, sign-in routes
    serve(app, load_ui_config())            # uvicorn, as `python app.py` does

Handlers only translate between widgets and the service: they work out who is asking, call one `Studio`
method and turn its result or its `NanobananaError` into what the page shows. They never touch the model,
the database or file paths themselves. Stored images and zips are handed out as links to `/files/...`, a
route that checks the owner on every request; none of them enters Gradio's public file cache.
"""

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import gradio as gr
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from nanobanana.errors import NanobananaError
from nanobanana.generation import GenerationRequest, Mode, load_images
from nanobanana.service.accounts import Identity
from nanobanana.service.studio import Studio
from nanobanana.web import auth
from nanobanana.web import middleware as web_guard
from nanobanana.web.config import UIConfig, load_ui_config
from nanobanana.web.gradio_files import file_routes, linked_file, site_root, uploaded_images
from nanobanana.web.pages import VisitorCookie, mcp_available, render_policy_page, safe_target, visitor_id

log = logging.getLogger(__name__)

GENERIC_ERROR = "Something went wrong on our side; nothing was charged. Please try again in a moment."
QUOTE_PROMPT = "quote"  # plan wants a prompt; the cost does not depend on it


def user_error(exc: BaseException) -> gr.Error:
    """A readable message for any failure: ours as written (logged as one line: its kind, never the prompt
    or the message), anything else generic (logged with its traceback). Gradio prints neither again."""
    if isinstance(exc, gr.Error):
        log.info("request refused: %s", type(exc).__name__)
        exc.print_exception = False
        return exc
    if isinstance(exc, NanobananaError):
        log.info("request refused: %s", type(exc).__name__)
        return gr.Error(str(exc), print_exception=False)
    log.error("unexpected error in a UI handler (%s)", type(exc).__name__, exc_info=exc)
    return gr.Error(GENERIC_ERROR, print_exception=False)


def _ago(when: datetime) -> str:
    now = datetime.now(UTC).replace(tzinfo=None) if when.tzinfo is None else datetime.now(UTC)
    seconds = int((when - now).total_seconds())
    if seconds <= 0:
        return "expiring now"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


class StudioUI:
    """The page and its handlers for one studio."""

    def __init__(self, studio: Studio, config: UIConfig, environ: Mapping[str, str] | None = None) -> None:
        self.studio = studio
        self.config = config
        self.environ = os.environ if environ is None else environ
        self.generator = studio.generator
        self.limits = studio.generator.config.limits
        self.model = studio.generator.config.model
        # Uploads are shrunk to the largest size the model makes as soon as they are decoded.
        self.max_input_side = max(max(size.width, size.height) for size in studio.generator.sizes())

    # -- who is asking ------------------------------------------------------------------------------
    def identity(self, profile: gr.OAuthProfile | None, request: gr.Request | None) -> Identity:
        if profile is not None:
            return self.studio.sign_in(auth.profile_data(profile)).identity
        session = visitor_id(request)
        if not session:
            raise gr.Error("Your browser session could not be identified; reload the page.")
        client = getattr(request, "client", None)
        return Identity.anonymous(session, getattr(client, "host", None))

    def header(self, identity: Identity) -> str:
        summary = self.studio.account_summary(identity)
        if summary is not None:
            return f"Signed in as **{summary.username}** · balance **{summary.balance}** credits"
        left = self.studio.allowance_left(identity)
        per_day = self.studio.config.allowance.anonymous_images_per_day
        return (f"Not signed in · **{left} of {per_day}** free images left today · "
                "sign in for credits and a 7-day history")

    # -- create -------------------------------------------------------------------------------------
    def _request(self, prompt, ratio, num_images, negative, steps, guidance, seed, randomize, scheduler,
                 mode=Mode.TEXT_TO_IMAGE, images=None, strength=None) -> GenerationRequest:
        return GenerationRequest(
            prompt=prompt or "",
            mode=mode,
            negative_prompt=negative or "",
            aspect_ratio=ratio or "1:1",
            num_images=int(num_images or 1),
            steps=int(steps) if steps else None,
            guidance=float(guidance) if guidance is not None else None,
            seed=None if randomize or seed is None else int(seed),
            scheduler=scheduler or None,
            strength=0.6 if strength is None else float(strength),
            images=images or [],
        )

    def quote(self, ratio, num_images, steps, profile: gr.OAuthProfile | None, request: gr.Request):
        """The Generate button's label (with the cost) and a note; disabled when it cannot be afforded."""
        try:
            identity = self.identity(profile, request)
            q = self.studio.quote(
                self._request(QUOTE_PROMPT, ratio, num_images, "", steps, None, None, True, None), identity
            )
        except Exception as exc:
            raise user_error(exc) from None
        if identity.is_account:
            label = f"Generate · {q.cost} credit{'s' if q.cost != 1 else ''}"
        else:
            label = f"Generate · free ({q.allowance_left} left today)"
        if not q.affordable:
            label = "Generate · not enough " + ("credits" if identity.is_account else "free images left")
        note = q.message if q.affordable else f"⚠️ {q.message}"
        return gr.update(value=label, interactive=q.affordable), note, self.header(identity)

    def generate(self, prompt, ratio, num_images, negative, steps, guidance, seed, randomize, scheduler,
                 profile: gr.OAuthProfile | None, request: gr.Request, progress=gr.Progress()):
        """Text to image. Returns the gallery, the seeds used, the seed box and the header."""
        try:
            identity = self.identity(profile, request)
            req = self._request(prompt, ratio, num_images, negative, steps, guidance, seed, randomize,
                                scheduler)
            result, gallery = self._run(req, identity, request, progress)
        except Exception as exc:
            raise user_error(exc) from None
        seeds = ", ".join(f"`{image.seed}`" for image in result.images)
        took = result.timings.get("total", 0.0)
        info = (f"Seeds: {seeds} · {took:.1f} s. To reproduce an image, untick *randomize* under "
                f"Advanced and enter its seed.")
        first = result.images[0].seed if result.images else seed
        return gallery, info, first, self.header(identity)

    def _run(self, req: GenerationRequest, identity: Identity, request: gr.Request, progress: gr.Progress):
        """One request through the studio with a progress bar; returns the result and its gallery."""
        progress(0, desc="Starting")
        result = self.studio.generate(
            req, identity, on_step=lambda step, total: progress((step, total), desc="Denoising")
        )
        gallery = self._gallery(request, result.images)
        for message in result.messages:
            gr.Warning(message)
        return result, gallery

    @staticmethod
    def _gallery(request: gr.Request, images) -> list[tuple[str, str]]:
        root = site_root(request)
        return [(f"{root}/files/images/{image.id}.png", f"seed {image.seed}") for image in images]

    # -- edit ---------------------------------------------------------------------------------------
    def edit(self, files, instruction, strength, steps, seed, randomize,
             profile: gr.OAuthProfile | None, request: gr.Request, progress=gr.Progress()):
        """Edit uploaded images. Returns the result gallery, a note and the header."""
        try:
            identity = self.identity(profile, request)
            paths = [getattr(f, "name", f) for f in (files or [])]
            if not paths:
                raise gr.Error("Upload at least one image to edit.")
            try:
                # Decoded in memory under the configured limits (count, bytes, pixels; headers before
                # pixels). Gradio wrote the raw uploads (with any EXIF metadata, e.g. GPS) to its upload
                # folder: remove them as soon as they are read.
                pictures = load_images([Path(p) for p in paths], self.limits, max_side=self.max_input_side)
            finally:
                for p in paths:
                    Path(p).unlink(missing_ok=True)
            req = self._request(instruction, "auto", 1, "", steps, None, seed, randomize, None,
                                mode=Mode.EDIT, images=pictures, strength=strength)
            result, gallery = self._run(req, identity, request, progress)
        except Exception as exc:
            raise user_error(exc) from None
        settings = result.generation.settings
        note = (f"Ran as **{settings.mode.value}** ({settings.pipeline}), strength {settings.strength}, "
                f"seed `{result.generation.seeds[0]}`.")
        if result.messages:
            note += " " + " ".join(result.messages)
        return gallery, note, self.header(identity)

    # -- history ------------------------------------------------------------------------------------
    def history(self, profile: gr.OAuthProfile | None, request: gr.Request):
        """My stored images: gallery, table and the choices for download/delete."""
        try:
            identity = self.identity(profile, request)
            images = self.studio.list_images(identity)
            gallery = self._gallery(request, images)
        except Exception as exc:
            raise user_error(exc) from None
        rows = [
            {
                "prompt": i.prompt,
                "size": f"{i.width}×{i.height}",
                "steps": i.settings.get("steps"),
                "guidance": i.settings.get("guidance"),
                "seed": i.seed,
                "created (UTC)": i.created_at.strftime("%Y-%m-%d %H:%M"),
                "expires in": _ago(i.expires_at),
                "id": i.id,
            }
            for i in images
        ]
        table = pd.DataFrame(rows, columns=["prompt", "size", "steps", "guidance", "seed", "created (UTC)",
                                            "expires in", "id"])
        choices = [(f"{i.prompt[:40]} · seed {i.seed} · {i.created_at:%H:%M:%S}", i.id) for i in images]
        storage = self.studio.config.storage
        note = (f"{len(images)} image(s). Results are kept {storage.anonymous_expiry_hours:g} h without an "
                f"account and {storage.account_expiry_hours / 24:g} days with one, then deleted.")
        return gallery, table, gr.update(choices=choices, value=choices[0][1] if choices else None), note

    def download_image(self, image_id, profile: gr.OAuthProfile | None, request: gr.Request):
        try:
            if not image_id:
                raise gr.Error("Choose an image first.")
            path = self.studio.image_path(self.identity(profile, request), image_id)  # mine, not expired
            return f"{site_root(request)}/files/images/{image_id}.png", path.stat().st_size
        except Exception as exc:
            raise user_error(exc) from None

    def download_all(self, profile: gr.OAuthProfile | None, request: gr.Request):
        try:
            identity = self.identity(profile, request)
            if not self.studio.list_images(identity):
                raise gr.Error("You have no stored images to download.")
            return self._export_link(request, self.studio.images_zip(identity))
        except Exception as exc:
            raise user_error(exc) from None

    @staticmethod
    def _export_link(request: gr.Request, path: Path) -> tuple[str, int]:
        return f"{site_root(request)}/files/exports/{path.name}", path.stat().st_size

    def delete_image(self, image_id, profile: gr.OAuthProfile | None, request: gr.Request):
        try:
            if not image_id:
                raise gr.Error("Choose an image first.")
            self.studio.delete_image(self.identity(profile, request), image_id)
        except Exception as exc:
            raise user_error(exc) from None
        gr.Info("Image deleted.")
        return self.history(profile, request)

    # -- account ------------------------------------------------------------------------------------
    def account(self, profile: gr.OAuthProfile | None, request: gr.Request):
        """Summary, ledger table, opt-in, announcements; and which of the two panels is visible."""
        try:
            identity = self.identity(profile, request)
            summary = self.studio.account_summary(identity)
            if summary is None:
                return ("Sign in to get credits, keep results for a week and see your account here.",
                        pd.DataFrame(), False, "", gr.update(visible=False))
            ledger = self.studio.ledger(identity)
            notes = self.studio.announcements(identity)
        except Exception as exc:
            raise user_error(exc) from None
        text = (f"**{summary.username}** · balance **{summary.balance}** credits · member since "
                f"{summary.created_at:%Y-%m-%d}" + (f" · {summary.email}" if summary.email else ""))
        table = pd.DataFrame(
            [{"time (UTC)": e.created_at.strftime("%Y-%m-%d %H:%M:%S"), "change": e.delta,
              "balance": e.balance_after, "what": e.reason} for e in ledger],
            columns=["time (UTC)", "change", "balance", "what"],
        )
        news = "\n\n".join(f"**{a.created_at:%Y-%m-%d}** — {a.text}" for a in notes) or (
            "No announcements." if summary.opt_in else "Opt in above to see service updates here."
        )
        return text, table, summary.opt_in, news, gr.update(visible=True)

    def set_opt_in(self, opt_in, profile: gr.OAuthProfile | None, request: gr.Request):
        try:
            identity = self.identity(profile, request)
            if identity.is_account:
                self.studio.set_updates_opt_in(identity, bool(opt_in))
        except Exception as exc:
            raise user_error(exc) from None
        return self.account(profile, request)[3]

    def export(self, profile: gr.OAuthProfile | None, request: gr.Request):
        try:
            return self._export_link(request, self.studio.export(self.identity(profile, request)))
        except Exception as exc:
            raise user_error(exc) from None

    def delete_account(self, confirm_text, profile: gr.OAuthProfile | None, request: gr.Request):
        try:
            if (confirm_text or "").strip().upper() != "DELETE":
                raise gr.Error('Type DELETE in the box to confirm.')
            identity = self.identity(profile, request)
            if not identity.is_account:
                raise gr.Error("Sign in first: there is no account to delete.")
            self.studio.delete_account(identity)
        except Exception as exc:
            raise user_error(exc) from None
        return "Your account and everything stored about it were deleted. Signing you out…"

    # -- stats --------------------------------------------------------------------------------------
    def stats(self):
        try:
            s = self.studio.stats()
        except Exception as exc:
            raise user_error(exc) from None
        if not s.requests:
            empty = pd.DataFrame({"day": [], "images": []})
            return ("No requests yet.", empty, pd.DataFrame({"measure": [], "seconds": []}),
                    pd.DataFrame({"cause": [], "requests": []}), pd.DataFrame())
        day = s.by_day.copy()
        day["day"] = day["day"].astype(str)
        total_images = int(day["images"].sum())
        errors = s.by_outcome[s.by_outcome["outcome"] != "ok"]
        error_rate = float(errors["requests"].sum()) / s.requests
        last = day.iloc[-1]
        measures = {"p50_generation_s": "generation p50", "p95_generation_s": "generation p95",
                    "p50_total_s": "whole request p50"}
        gen = pd.DataFrame([{"measure": label, "seconds": float(last[key] or 0.0)}
                            for key, label in measures.items()])
        causes = (s.by_outcome.groupby("outcome")["requests"].sum().reset_index()
                  .rename(columns={"outcome": "cause"}).sort_values("requests", ascending=False))
        popular = (s.by_setting.sort_values("requests", ascending=False)
                   [["mode", "aspect_ratio", "steps", "requests", "images", "error_rate"]].head(10))
        numbers = (
            f"**{s.requests}** requests · **{total_images}** images · error rate **{error_rate:.0%}** · "
            f"today p50 **{(last['p50_generation_s'] or 0):.2f} s**, p95 "
            f"**{(last['p95_generation_s'] or 0):.2f} s** generation time. Anonymous aggregates only."
        )
        return numbers, day[["day", "images"]], gen, causes, popular

    # -- layout -------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        config, model = self.config, self.model
        sizes = self.generator.sizes()
        ratio_choices = [(s.label, s.ratio) for s in sizes]
        schedulers = [("Model default", "")] + [(name, name) for name in self.generator.schedulers()]
        defaults = model.defaults
        providers = auth.enabled_providers(config)

        # Gradio keeps a copy of every file it serves; it may not outlive the shortest retention we promise.
        max_age = int(self.studio.config.storage.anonymous_expiry_hours * 3600)
        with gr.Blocks(title=config.title, delete_cache=(min(600, max_age), max_age)) as demo:
            with gr.Row():
                with gr.Column(scale=3):
                    gr.Markdown(f"# {config.title}\n{config.tagline}")
                    header = gr.Markdown(elem_id="nb-header")
                with gr.Column(scale=1, min_width=220):
                    if auth.hf_login_available(config, self.environ):
                        gr.LoginButton(size="md")
                    for name in providers:
                        gr.Button(f"Sign in with {name.capitalize()}", link=f"/login/{name}", size="md",
                                  variant="secondary")

            with gr.Tabs():
                with gr.Tab("Create", id="create"):
                    with gr.Row():
                        prompt = gr.Textbox(label="Prompt", placeholder="Describe the image; press Enter",
                                            lines=1, max_lines=4, scale=4, elem_id="nb-prompt",
                                            max_length=self.limits.max_prompt_chars)
                        run = gr.Button("Generate", variant="primary", scale=1, elem_id="nb-generate")
                    cost_note = gr.Markdown(elem_id="nb-cost")
                    with gr.Row():
                        ratio = gr.Dropdown(ratio_choices, value=defaults.aspect_ratio, label="Aspect ratio")
                        num_images = gr.Slider(1, self.limits.max_images, value=1, step=1,
                                               label="Number of images")
                    with gr.Accordion("Advanced", open=False):
                        negative = gr.Textbox(label="Negative prompt", placeholder="What to avoid",
                                              visible=model.supports_negative_prompt)
                        with gr.Row():
                            steps = gr.Slider(1, model.max_steps, value=defaults.steps, step=1,
                                              label="Steps")
                            guidance = gr.Slider(0.0, 20.0, value=defaults.guidance, step=0.5,
                                                 label="Guidance", visible=model.supports_guidance)
                        with gr.Row():
                            seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=2**32 - 1)
                            randomize = gr.Checkbox(True, label="Randomize seed")
                            scheduler = gr.Dropdown(schedulers, value="", label="Scheduler")
                    gallery = gr.Gallery(label="Results", columns=4, height=300, object_fit="contain",
                                         elem_id="nb-gallery", buttons=["download", "fullscreen"],
                                         format="png", fit_columns=False)
                    seeds = gr.Markdown(elem_id="nb-seeds")
                    gr.Examples(config.examples, inputs=[prompt], label="Examples")

                with gr.Tab("Edit", id="edit"):
                    gr.Markdown("Upload one or more images and say what to change. Uploads are read in "
                                "memory and not kept.")
                    with gr.Row():
                        with gr.Column():
                            uploads = uploaded_images(file_count="multiple", file_types=["image"],
                                                     label="Images to edit", elem_id="nb-uploads")
                            instruction = gr.Textbox(label="Instruction or prompt", elem_id="nb-instruction",
                                                     placeholder="e.g. make the background blue")
                            strength = gr.Slider(0.05, 1.0, value=defaults.strength, step=0.05,
                                                 label="Strength (how much may change)")
                            with gr.Accordion("Advanced", open=False):
                                edit_steps = gr.Slider(1, model.max_steps, value=defaults.steps, step=1,
                                                       label="Steps")
                                edit_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                                edit_randomize = gr.Checkbox(True, label="Randomize seed")
                            edit_run = gr.Button("Edit", variant="primary")
                        edit_result = gr.Gallery(label="Result", columns=2, height=300, object_fit="contain",
                                                 buttons=["download", "fullscreen"], elem_id="nb-edit-result")
                    edit_note = gr.Markdown(elem_id="nb-edit-note")

                with gr.Tab("History", id="history") as history_tab:
                    history_note = gr.Markdown()
                    history_gallery = gr.Gallery(label="My images", columns=6, height=260,
                                                 object_fit="contain", elem_id="nb-history", fit_columns=False)
                    history_table = gr.Dataframe(label="Details", interactive=False, wrap=True)
                    with gr.Row():
                        # Its choices change per person; ids are checked by the studio, not by Gradio.
                        chosen = gr.Dropdown([], label="Image", scale=3, elem_id="nb-history-choice",
                                             allow_custom_value=True)
                        download_one = gr.Button("Download image", scale=1)
                        delete_one = gr.Button("Delete image", variant="stop", scale=1)
                    with gr.Row():
                        download_zip = gr.Button("Download all (zip)")
                        refresh_history = gr.Button("Refresh")
                    history_file = linked_file(label="Your download", interactive=False,
                                              elem_id="nb-history-file")

                with gr.Tab("Account", id="account") as account_tab:
                    account_text = gr.Markdown(elem_id="nb-account")
                    with gr.Column(visible=False) as account_panel:
                        ledger = gr.Dataframe(label="Credit history", interactive=False)
                        opt_in = gr.Checkbox(label="Send me service updates (shown here; e-mailed if the "
                                                   "operator set up e-mail)")
                        news = gr.Markdown()
                        with gr.Row():
                            export_button = gr.Button("Download my data")
                            delete_button = gr.Button("Delete my account", variant="stop")
                        export_file = linked_file(label="Your data", interactive=False,
                                                 elem_id="nb-export-file")
                        with gr.Group(visible=False) as confirm_group:
                            gr.Markdown("**This deletes your account, credits, images and history** "
                                        "for good. Type DELETE and confirm.")
                            confirm_text = gr.Textbox(label="Type DELETE", elem_id="nb-confirm-text")
                            with gr.Row():
                                confirm_delete = gr.Button("Yes, delete everything", variant="stop")
                                cancel_delete = gr.Button("Cancel")
                        deleted_note = gr.Markdown()

                with gr.Tab("Stats", id="stats") as stats_tab:
                    stats_numbers = gr.Markdown(elem_id="nb-stats")
                    with gr.Row():
                        per_day = gr.BarPlot(x="day", y="images", title="Images per day", height=260,
                                             y_lim=[0, None])
                        timing = gr.BarPlot(x="measure", y="seconds", title="Time per request, last day (s)",
                                            height=260, y_lim=[0, None], sort=None)
                    with gr.Row():
                        causes = gr.BarPlot(x="cause", y="requests", title="Requests by outcome", height=260,
                                            y_lim=[0, None])
                        popular = gr.Dataframe(label="Popular settings", interactive=False)
                    refresh_stats = gr.Button("Refresh")

                with gr.Tab("Privacy", id="privacy"):
                    gr.Markdown(self.studio.policy_markdown())

            gr.Markdown(f"[Privacy policy](/privacy) · [Metrics](/metrics) · "
                        f"model `{self.generator.model_id}`", elem_id="nb-footer")

            # -- wiring ---------------------------------------------------------------------------
            create_inputs = [prompt, ratio, num_images, negative, steps, guidance, seed, randomize, scheduler]
            quote_outputs = [run, cost_note, header]
            gr.on([demo.load, ratio.change, num_images.change, steps.change], self.quote,
                  [ratio, num_images, steps], quote_outputs, api_name="quote", queue=False, trigger_mode="always_last",
                  show_progress="hidden")
            gr.on([run.click, prompt.submit], self.generate, create_inputs, [gallery, seeds, seed, header],
                  api_name="generate", concurrency_id="model").then(
                self.quote, [ratio, num_images, steps], quote_outputs, api_visibility="private",
                show_progress="hidden")
            edit_run.click(self.edit, [uploads, instruction, strength, edit_steps, edit_seed, edit_randomize],
                           [edit_result, edit_note, header], api_name="edit",
                           concurrency_id="model")

            history_outputs = [history_gallery, history_table, chosen, history_note]
            gr.on([history_tab.select, refresh_history.click], self.history, None, history_outputs,
                  api_name="history")
            download_one.click(self.download_image, chosen, history_file, api_name="download_image")
            download_zip.click(self.download_all, None, history_file, api_name="download_all")
            delete_one.click(self.delete_image, chosen, history_outputs, api_name="delete_image")

            account_outputs = [account_text, ledger, opt_in, news, account_panel]
            account_tab.select(self.account, None, account_outputs, api_name="account")
            opt_in.input(self.set_opt_in, opt_in, news, api_name="set_updates_opt_in")
            export_button.click(self.export, None, export_file, api_name="export")
            delete_button.click(lambda: gr.update(visible=True), None, confirm_group,
                                api_visibility="private")
            cancel_delete.click(lambda: (gr.update(visible=False), ""), None, [confirm_group, confirm_text],
                                api_visibility="private")
            confirm_delete.click(
                self.delete_account, confirm_text, deleted_note, api_name="delete_account"
            ).success(None, js="() => { setTimeout(() => window.location.assign('/logout'), 1500); }")

            stats_outputs = [stats_numbers, per_day, timing, causes, popular]
            gr.on([stats_tab.select, refresh_stats.click], self.stats, None, stats_outputs, api_name="stats")
        return demo


# -- the web app --------------------------------------------------------------------------------------
def create_app(studio: Studio, config: UIConfig | None = None,
               environ: Mapping[str, str] | None = None) -> FastAPI:
    """Gradio at `/`, plus `/files/...`, `/metrics`, `/privacy`, `/logout` and the Google/GitHub sign-in
    routes, behind the guards of `nanobanana.web.middleware`."""
    environ = os.environ if environ is None else environ
    config = config or load_ui_config(environ)
    secret = auth.session_secret(config, environ)
    auth.install_gradio_session(secret, config.dev_login, environ)
    ui = StudioUI(studio, config, environ)
    demo = ui.build()
    demo.queue(default_concurrency_limit=config.queue.concurrency_limit, max_size=config.queue.max_size)

    on_space = auth.on_space(environ)
    session_seconds = int(studio.config.privacy.sign_in_hours * 3600)
    app = FastAPI(title=config.title, docs_url=None, redoc_url=None, openapi_url=None)
    same_site = "none" if on_space else "lax"  # on a Space the page is an iframe on huggingface.co
    # Each add_middleware wraps the ones before it: a request meets them from the last added to the first.
    app.add_middleware(SessionMiddleware, secret_key=auth.middleware_key(secret), max_age=session_seconds,
                       same_site=same_site, https_only=True)
    app.add_middleware(VisitorCookie, same_site=same_site)
    app.add_middleware(web_guard.InputGuard, blocks=demo)
    app.add_middleware(web_guard.SessionGuard, sessions=studio.sessions, who=auth.session_person,
                       codec=web_guard.SessionCodec(auth.middleware_key(secret), session_seconds),
                       same_site=same_site)
    app.add_middleware(web_guard.SameOriginOnly, allowed_origins=config.allowed_origins(environ))
    app.add_middleware(web_guard.SecurityHeaders, frame_ancestors=["https://huggingface.co"] if on_space else [])

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
        max_file_size=studio.generator.config.limits.max_upload_bytes,
        footer_links=["api", "settings"], theme=gr.themes.Soft(primary_hue="yellow"),
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
