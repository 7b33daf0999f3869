"""The page: Create, Edit, History, Account, Stats and Privacy, and the handlers behind them.

Handlers only translate between widgets and the service: `@handler` works out who is asking, the handler
calls one `Studio` method, and `presenters` turn the result into what the page shows; errors become
messages. They never touch the model, the database or file paths. Stored images and zips go out as links
to `/files/...` (see `gradio_files.py`); none of them enters Gradio's public file cache.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import gradio as gr
import pandas as pd

from nanobanana.errors import GenerationCancelled, InvalidRequest
from nanobanana.generation import GenerationRequest, Mode, split_choice
from nanobanana.service.accounts import Identity
from nanobanana.service.images import ExportFile
from nanobanana.service.studio import Studio, StudioResult
from nanobanana.web import auth, presenters
from nanobanana.web.api_keys_panel import ApiKeysPanel
from nanobanana.web.config import UIConfig
from nanobanana.web.gradio_files import (
    UploadMemory,
    image_link,
    linked_file,
    read_uploads,
    site_root,
    uploaded_images,
)
from nanobanana.web.handlers import handler, user_error
from nanobanana.web.routes import visitor_id

UPLOAD_MEMORY_MINUTES = 30
# Images enlarged 2x or more (a 64 px one, or a 256 px one in a wide tile) show hard pixel edges, not a
# smoothed blur; below 2x, nearest-neighbour steps would come out uneven (some pixels one screen pixel
# wide, some two), so those and images shown at or below their own size keep the browser's smooth scaling.
CRISP_SMALL_IMAGES = """<script>
(() => {
  const SELECTOR = "#nb-gallery img, #nb-history img, #nb-edit-result img, #nb-edit-source-view img";
  const mark = (img) => {
    const shown = img.getBoundingClientRect().width * (window.devicePixelRatio || 1);
    const enlarged = img.naturalWidth > 0 && shown >= 2 * img.naturalWidth;
    img.style.imageRendering = enlarged ? "pixelated" : "";
  };
  let queued = false;
  const scan = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      document.querySelectorAll(SELECTOR).forEach((img) => {
        if (img.complete) mark(img); else img.addEventListener("load", () => mark(img), { once: true });
      });
    });
  };
  new MutationObserver(scan).observe(document.documentElement, { childList: true, subtree: true });
  window.addEventListener("resize", scan);
})();
</script>"""
PRESS_GENERATE = "() => { const b = document.querySelector('#nb-generate'); if (b && !b.disabled) b.click(); }"
CLEAR_ERROR_TOASTS = "() => document.querySelectorAll('.toast-close.error').forEach(b => b.click())"
# One click downloads: once a handler has put a file's link in a download box, the browser fetches it.
SAVE_FILE = """(file) => {
  const url = file && (file.url || file.path);
  if (!url) return;
  const a = document.createElement("a");
  a.href = url; a.download = ""; a.style.display = "none";
  document.body.appendChild(a); a.click(); a.remove();
}"""
# Phone (and narrow window) layout, in the page's head (Gradio scopes `css=` to its content, and the page
# padding sits outside it): every tab stays on the tab bar (Gradio folds the ones that do not fit
# into a "…" menu), the prompt row stacks, galleries show fewer, larger tiles with their full captions,
# and wide tables scroll sideways instead of squeezing their headers letter by letter.
PAGE_HEAD = CRISP_SMALL_IMAGES + """<style>
#nb-history-table th, #nb-history-table th *, #nb-requests th, #nb-requests th *, #nb-popular th,
#nb-popular th * { white-space: nowrap !important; word-break: normal !important; }
#nb-history .grid-wrap { max-height: 720px !important; overflow-y: auto !important; }
@media (max-width: 640px) {
  .main.fillable.app, .main.app { padding-left: 8px !important; padding-right: 8px !important; }
  .tab-container button { padding: 0 7px !important; }
  #nb-gallery .grid-container, #nb-history .grid-container {
    grid-template-columns: repeat(2, minmax(0, 1fr)) !important;
  }
  #nb-gallery .caption-label, #nb-history .caption-label { max-width: 100% !important; font-size: 12px !important; }
}
</style>"""


def _shown():
    return gr.update(visible=True)


IMAGE_LINK = re.compile(r"/files/images/([A-Za-z0-9_-]{32,64})/")


class LastResults(OrderedDict):
    """page tag → image id, the newest few thousand pages only."""

    limit = 5000

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def page_tag(request: gr.Request | None, tab: str) -> str | None:
    """Which page (browser tab) and which of its tabs sent a request, as a hash: its Cancel button
    cancels only those."""
    session = getattr(request, "session_hash", None)
    if not session:
        return None
    return hashlib.sha256(f"nanobanana-page:{session}:{tab}".encode()).hexdigest()[:32]


class StudioUI:
    """The page and its handlers for one studio."""

    def __init__(self, studio: Studio, config: UIConfig, environ: Mapping[str, str] | None = None) -> None:
        self.studio = studio
        self.config = config
        self.environ = os.environ if environ is None else environ
        self.info = studio.info()
        # Uploads are shrunk to the largest size the model makes as soon as they are decoded.
        self.max_input_side = max(max(size.width, size.height) for size in self.info.sizes if size.is_default_size)
        # The same upload can be edited again: its decoded copy stays in memory (never on disk) a while.
        self.uploads = UploadMemory(ttl_seconds=UPLOAD_MEMORY_MINUTES * 60)
        # The first image of each page's last result, for its "Edit this" buttons (ids only; owner-checked
        # again when used).
        self._last_create: LastResults = LastResults()
        self._last_edit: LastResults = LastResults()

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
        return presenters.header(self.studio.account_summary(identity), self.studio.allowance_left(identity),
                                 self.info.anonymous_images_per_day)

    # -- create -------------------------------------------------------------------------------------
    @staticmethod
    def _request(prompt, ratio, num_images, negative, steps, guidance, seed, randomize, scheduler,
                 mode=Mode.TEXT_TO_IMAGE, images=None, strength=None) -> GenerationRequest:
        ratio, size = split_choice(ratio)
        return GenerationRequest(
            prompt=prompt or "",
            mode=mode,
            negative_prompt=negative or "",
            aspect_ratio=ratio or "1:1",
            size=size,
            num_images=int(num_images or 1),
            steps=int(steps) if steps else None,
            guidance=float(guidance) if guidance is not None else None,
            seed=None if randomize or seed is None else int(seed),
            scheduler=scheduler or None,
            strength=0.6 if strength is None else float(strength),
            images=images or [],
        )

    def _button(self, identity: Identity, request: gr.Request | None, ratio, num_images, steps,
                verb: str = "Generate"):
        """A run button's label (with the cost) and a note; disabled when it cannot be afforded, and then
        the note says how to get more."""
        ratio, size = split_choice(ratio)
        q = self.studio.quote(identity, ratio, int(num_images or 1), int(steps) if steps else None, size)
        note = q.message if q.affordable else f"⚠️ {q.message} {self._way_out(identity, request, q.num_images)}"
        label = presenters.action_label(verb, q, identity.is_account)
        return gr.update(value=label, interactive=q.affordable), note

    def _way_out(self, identity: Identity, request: gr.Request | None, images: int) -> str:
        """Where more credits come from and, for an account, the free images this browser still has
        without signing in (when they would cover the request)."""
        ways = presenters.more_credits(self.config.more_credits, self.info.contact)
        if identity.is_account:
            session = visitor_id(request)
            client = getattr(request, "client", None)
            free = self.studio.allowance_left(Identity.anonymous(session, getattr(client, "host", None))) \
                if session else 0
            if free >= images:
                ways += (f" Or [sign out](/logout) and use the free allowance: {free} image"
                         f"{'s' if free != 1 else ''} left today without an account.")
        return ways

    @handler
    def edit_quote(self, steps, identity: Identity, request: gr.Request):
        """The Edit button with its cost (one image; its size follows the upload, priced at the default
        aspect ratio), disabled when it cannot be afforded; the way out goes on the edit note."""
        button, note = self._button(identity, request, None, 1, steps, verb="Edit")
        return button, (note if note.startswith("⚠️") else gr.skip())

    @handler
    def quote(self, ratio, num_images, steps, identity: Identity, request: gr.Request):
        """The Generate button, its cost note and the header."""
        return (*self._button(identity, request, ratio, num_images, steps), self.header(identity))

    @handler
    def generate(self, prompt, ratio, num_images, negative, steps, guidance, seed, randomize, scheduler,
                 identity: Identity, request: gr.Request, progress=gr.Progress()):
        """Text to image: the gallery, the seeds used, the seed box, the header and the new button."""
        req = self._request(prompt, ratio, num_images, negative, steps, guidance, seed, randomize, scheduler)
        try:
            result, gallery = self._run(req, identity, request, progress, "create")
        except GenerationCancelled as exc:
            gr.Info(str(exc))  # the last good result stays on the page
            return (gr.skip(), gr.skip(), gr.skip(), self.header(identity),
                    *self._button(identity, request, ratio, num_images, steps))
        seeds = ", ".join(f"`{image.seed}`" for image in result.images)
        took = result.timings.get("total", 0.0)
        info = (f"Seeds: {seeds} · {took:.1f} s. To reproduce an image, untick *randomize* under "
                f"Advanced and enter its seed.")
        first = result.images[0].seed if result.images else seed
        if result.images:
            self._last_create[page_tag(request, "create") or ""] = result.images[0].id
        return (gallery, info, first, self.header(identity),
                *self._button(identity, request, ratio, num_images, steps))

    def _run(self, req: GenerationRequest, identity: Identity, request: gr.Request, progress: gr.Progress,
             tab: str) -> tuple[StudioResult, list[tuple[str, str]]]:
        """One request through the job queue, its place in line and then its steps on the progress bar;
        returns the result and its gallery."""
        progress(0, desc="Queued")
        result = self.studio.generate(
            req, identity, page=page_tag(request, tab),
            on_status=lambda status: progress(0, desc=status.describe()) if status.state == "queued" else None,
            on_step=lambda step, total: progress((step, total), desc="Generating"),
        )
        for message in result.messages:
            gr.Warning(message)
        return result, self._gallery(request, result.images)

    def _cancel(self, identity: Identity, request: gr.Request, tab: str) -> None:
        """A Cancel button: cancels this page's open requests from that tab (Create or Edit)."""
        tag = page_tag(request, tab)
        if tag is None or not self.studio.cancel_page(identity, tag):
            gr.Info("Nothing to cancel: no request from this page is waiting or running.")

    @handler
    def cancel_create(self, identity: Identity, request: gr.Request):
        self._cancel(identity, request, "create")

    @handler
    def cancel_edit(self, identity: Identity, request: gr.Request):
        self._cancel(identity, request, "edit")

    @staticmethod
    def _gallery(request: gr.Request, images) -> list[tuple[str, str]]:
        root = site_root(request)
        return [(image_link(root, image), f"seed {image.seed}") for image in images]

    # -- check an image -----------------------------------------------------------------------------
    @handler
    def check_image(self, file, identity: Identity):
        """Which AI marks an uploaded file carries: a verdict line and the details. The upload is read into
        memory and its file deleted at once; nothing of it is stored."""
        if not file:
            return "", None
        path = Path(getattr(file, "name", file))
        try:
            if path.stat().st_size > self.info.limits.max_upload_bytes:
                raise gr.Error(f"Files up to {self.info.limits.max_upload_bytes / 1e6:.0f} MB can be checked.")
            data = path.read_bytes()
        except FileNotFoundError:  # checked before (an upload is read once), or a stale reference
            raise gr.Error("That upload is gone: each file is read once and deleted. Upload it again.") from None
        finally:
            path.unlink(missing_ok=True)
        verdict = self.studio.verify_image(data)
        return presenters.verdict_markdown(verdict), verdict.to_dict()

    # -- edit ---------------------------------------------------------------------------------------
    @handler
    def edit(self, files, instruction, strength, steps, seed, randomize, source, identity: Identity,
             request: gr.Request, progress=gr.Progress()):
        """Edit uploaded images, or one of my stored images (`source`: its id): the result gallery, a note
        and the header."""
        try:
            if files:
                pictures = read_uploads(files, self.info.limits, max_side=self.max_input_side,
                                        memory=self.uploads)
            elif source:
                pictures = [self.studio.image_picture(identity, str(source))]  # mine only, else "no such image"
            else:
                raise InvalidRequest("Upload at least one image to edit, or press “Edit this image” on a result.")
        except Exception as exc:
            # Refused before the studio saw it: counted here, once, like the studio counts its refusals.
            self.studio.record_refusal(Mode.EDIT, exc)
            raise
        req = self._request(instruction, "auto", 1, "", steps, None, seed, randomize, None,
                            mode=Mode.EDIT, images=pictures, strength=strength)
        try:
            result, gallery = self._run(req, identity, request, progress, "edit")
        except GenerationCancelled as exc:
            gr.Info(str(exc))
            return gr.skip(), gr.skip(), self.header(identity)
        if result.images:
            self._last_edit[page_tag(request, "edit") or ""] = result.images[0].id
        settings = result.generation.settings
        note = (f"Ran as **{settings.mode.value}** ({settings.pipeline}), strength {settings.strength}, "
                f"seed `{result.generation.seeds[0]}`. Made at {settings.width}×{settings.height} px, "
                f"{self.info.model_name}'s size for this shape: the upload was scaled and cropped to it.")
        if result.messages:
            note += " " + " ".join(result.messages)
        return gallery, note, self.header(identity)

    @staticmethod
    def pick(evt: gr.SelectData) -> str | None:
        """The id of the image clicked in a result gallery (from its link)."""
        value = evt.value if isinstance(evt.value, dict) else {}
        url = str((value.get("image") or {}).get("url") or value.get("url") or "")
        found = IMAGE_LINK.search(url)
        return found.group(1) if found else None

    def _as_source(self, identity: Identity, image_id: str | None, request: gr.Request):
        if not image_id:
            raise gr.Error("Click an image in the results first.")
        image = self.studio.image(identity, image_id)  # mine, and not expired
        link = image_link(site_root(request), image)
        view = (f'<div class="nb-source"><img src="{html.escape(link)}" alt="the image to edit" '
                f'style="height:128px;width:auto"><p>Editing your image (seed {image.seed}). Upload a file to '
                "edit something else.</p></div>")
        return image.id, view, gr.Tabs(selected="edit")

    @handler
    def edit_this(self, picked, identity: Identity, request: gr.Request):
        """Create's "Edit this image": the picked result (or the first of the last one) goes to Edit."""
        return self._as_source(identity, picked or self._last_create.get(page_tag(request, "create") or ""),
                               request)

    @handler
    def edit_last_result(self, identity: Identity, request: gr.Request):
        """Edit's "Edit this result further": the last edit's result becomes the next input."""
        last = self._last_edit.get(page_tag(request, "edit") or "")
        if not last:
            raise gr.Error("There is no edit result yet.")
        return self._as_source(identity, last, request)

    @handler
    def edit_stored(self, image_id, identity: Identity, request: gr.Request):
        """History's "Edit this image"."""
        if not image_id:
            raise gr.Error("Choose an image first.")
        return self._as_source(identity, str(image_id), request)

    # -- history ------------------------------------------------------------------------------------
    @handler
    def history(self, identity: Identity, request: gr.Request):
        """My stored images: gallery, table and the choices for download/delete."""
        return self._history_view(identity, request)

    def _history_view(self, identity: Identity, request: gr.Request):
        images = self.studio.list_images(identity)
        choices = presenters.history_choices(images)
        note = (f"{len(images)} image(s). Results are kept {self.info.anonymous_expiry_hours:g} h without an "
                f"account and {self.info.account_expiry_hours / 24:g} days with one, then deleted.")
        return (self._gallery(request, images), presenters.history_table(images),
                gr.update(choices=choices, value=choices[0][1] if choices else None), note,
                presenters.requests_table(self.studio.jobs(identity)))

    @handler
    def download_image(self, image_id, identity: Identity, request: gr.Request):
        if not image_id:
            raise gr.Error("Choose an image first.")
        image = self.studio.image(identity, image_id)  # mine, and not expired
        return image_link(site_root(request), image), image.bytes

    @handler
    def download_all(self, identity: Identity, request: gr.Request):
        if not self.studio.list_images(identity):
            raise gr.Error("You have no stored images to download.")
        return self._export_link(request, self.studio.images_zip(identity), presenters.zip_name("images"))

    @staticmethod
    def _export_link(request: gr.Request, export: ExportFile, download_as: str) -> tuple[str, int]:
        return f"{site_root(request)}/files/exports/{export.name}/{download_as}", export.size

    @handler
    def ask_delete_image(self, image_id, identity: Identity):
        """History's "Delete image": name the image and ask before anything is deleted."""
        if not image_id:
            raise gr.Error("Choose an image first.")
        image = self.studio.image(identity, str(image_id))  # mine, and not expired
        question = (f"**Delete “{presenters.literal(image.prompt[:60])}” (seed {image.seed})?** It is removed at once "
                    "and cannot be brought back.")
        return gr.update(visible=True), question

    @handler
    def delete_image(self, image_id, identity: Identity, request: gr.Request):
        if not image_id:
            raise gr.Error("Choose an image first.")
        self.studio.delete_image(identity, image_id)
        gr.Info("Image deleted.")
        return self._history_view(identity, request)

    # -- account ------------------------------------------------------------------------------------
    @handler
    def account(self, identity: Identity):
        """Summary, ledger table, opt-in, announcements; and which of the two panels is visible."""
        return self._account_view(identity)

    def _account_view(self, identity: Identity):
        summary = self.studio.account_summary(identity)
        if summary is None:
            return ("Sign in to get credits, keep results for a week and see your account here.",
                    pd.DataFrame(), False, "", gr.update(visible=False), False)
        notes = self.studio.announcements(identity)
        news = "\n\n".join(f"**{a.created_at:%Y-%m-%d}** — {a.text}" for a in notes) or (
            "No announcements." if summary.opt_in else "Opt in above to see service updates here."
        )
        return (presenters.account_text(summary), presenters.ledger_table(self.studio.ledger(identity)),
                summary.opt_in, news, gr.update(visible=True), summary.embed_settings)

    @handler
    def set_opt_in(self, opt_in, identity: Identity):
        if identity.is_account:
            self.studio.set_updates_opt_in(identity, bool(opt_in))
        return self._account_view(identity)[3]

    @handler
    def set_embed_settings(self, embed, identity: Identity):
        """Opt in (or out) of the prompt and settings written into new PNG files."""
        if not identity.is_account:
            raise gr.Error("Sign in first: this is a setting of your account.")
        self.studio.set_embed_settings(identity, bool(embed))
        gr.Info("New images will carry their prompt and settings." if embed else
                "New images will carry no prompt or settings.")
        return bool(embed)

    @handler
    def export(self, identity: Identity, request: gr.Request):
        return self._export_link(request, self.studio.export(identity), presenters.zip_name("my-data"))

    @handler
    def delete_account(self, confirm_text, identity: Identity):
        if (confirm_text or "").strip() != "DELETE":
            raise gr.Error("Type DELETE (in capitals) in the box to confirm.")
        if not identity.is_account:
            raise gr.Error("Sign in first: there is no account to delete.")
        self.studio.delete_account(identity)
        return "Your account and everything stored about it were deleted. Signing you out…"

    # -- stats --------------------------------------------------------------------------------------
    def stats(self):
        try:
            return presenters.stats_figures(self.studio.stats())
        except Exception as exc:
            raise user_error(exc) from None

    # -- layout -------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        config, model = self.config, self.info
        ratio_choices = presenters.ratio_choices(model.sizes)
        schedulers = [("Model default", "")] + [(name, name) for name in model.schedulers]
        defaults = model.defaults
        providers = auth.enabled_providers(config)

        # Gradio keeps a copy of every file it serves; it may not outlive the shortest retention we promise.
        max_age = int(model.anonymous_expiry_hours * 3600)
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

            with gr.Tabs() as tabs:
                with gr.Tab("Create", id="create"):
                    with gr.Row():
                        prompt = gr.Textbox(label="Prompt", placeholder="Describe the image; press Enter",
                                            lines=1, max_lines=4, scale=4, min_width=280, elem_id="nb-prompt",
                                            max_length=self.info.limits.max_prompt_chars,
                                            info=presenters.prompt_limits(self.info))
                        with gr.Column(scale=1, min_width=140):
                            run = gr.Button("Generate", variant="primary", elem_id="nb-generate")
                            cancel_run = gr.Button("Cancel", variant="secondary", size="sm",
                                                   elem_id="nb-cancel")
                    cost_note = gr.Markdown(elem_id="nb-cost")
                    with gr.Row():
                        ratio = gr.Dropdown(ratio_choices, value=defaults.aspect_ratio, label="Aspect ratio")
                        num_images = gr.Slider(1, self.info.limits.max_images, value=1, step=1,
                                               label="Number of images")
                    with gr.Accordion("Advanced", open=False):
                        negative = gr.Textbox("", label="Negative prompt", placeholder="What to avoid",
                                              visible=model.supports_negative_prompt)
                        with gr.Row():
                            # A model with one step (a remote one) has nothing to choose (and Gradio
                            # refuses a slider whose minimum is its maximum).
                            steps = gr.Slider(1, max(2, model.max_steps), value=defaults.steps, step=1,
                                              label="Steps", visible=model.max_steps > 1)
                            guidance = gr.Slider(0.0, 20.0, value=defaults.guidance, step=0.5,
                                                 label="Guidance", visible=model.supports_guidance)
                        with gr.Row():
                            seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=2**32 - 1)
                            randomize = gr.Checkbox(True, label="Randomize seed")
                            scheduler = gr.Dropdown(schedulers, value="", label="Scheduler",
                                                    visible=bool(model.schedulers))
                    gallery = gr.Gallery(label="Results", columns=4, height=300, object_fit="contain",
                                         elem_id="nb-gallery", buttons=["download", "fullscreen"],
                                         format="png", fit_columns=False)
                    with gr.Row():
                        seeds = gr.Markdown(elem_id="nb-seeds", min_width=300)
                        edit_this = gr.Button("Edit this image", size="sm", scale=0, min_width=160,
                                              elem_id="nb-edit-this")
                    # The model's own examples when it has them: prompts it is known to draw well.
                    gr.Examples(model.example_prompts or config.examples, inputs=[prompt], label="Examples")

                with gr.Tab("Edit", id="edit") as edit_tab:
                    gr.Markdown("Upload one or more images and say what to change; edit them again as often as "
                                f"you like. Uploads are read once and deleted; a copy without metadata stays "
                                f"in memory for {UPLOAD_MEMORY_MINUTES} minutes for further edits.")
                    with gr.Row():
                        with gr.Column():
                            # A result of mine to edit (its id; set by "Edit this"), shown instead of uploads.
                            source = gr.Textbox("", visible=False, elem_id="nb-edit-source")
                            source_view = gr.HTML(elem_id="nb-edit-source-view")
                            uploads = uploaded_images(file_count="multiple", file_types=["image"],
                                                     label="Images to edit", elem_id="nb-uploads")
                            instruction = gr.Textbox(label="Instruction or prompt", elem_id="nb-instruction",
                                                     placeholder="e.g. make the background blue")
                            strength = gr.Slider(0.05, 1.0, value=defaults.strength, step=0.05,
                                                 label="Strength (how much may change)")
                            with gr.Accordion("Advanced", open=False):
                                edit_steps = gr.Slider(1, max(2, model.max_steps), value=defaults.steps,
                                                       step=1, label="Steps", visible=model.max_steps > 1)
                                edit_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                                edit_randomize = gr.Checkbox(True, label="Randomize seed")
                            with gr.Row():
                                edit_run = gr.Button("Edit", variant="primary", elem_id="nb-edit-run", scale=3)
                                edit_cancel = gr.Button("Cancel", variant="secondary", elem_id="nb-edit-cancel",
                                                        scale=1)
                        with gr.Column():
                            edit_result = gr.Gallery(label="Result", columns=2, height=300, object_fit="contain",
                                                     buttons=["download", "fullscreen"], elem_id="nb-edit-result")
                            edit_again = gr.Button("Edit this result further", size="sm",
                                                   elem_id="nb-edit-again")
                    edit_note = gr.Markdown(elem_id="nb-edit-note")

                with gr.Tab("History", id="history") as history_tab:
                    history_note = gr.Markdown()
                    # As tall as its rows, up to about three and a half of them (PAGE_CSS); scroll for more.
                    history_gallery = gr.Gallery(label="My images", columns=6, height="auto",
                                                 object_fit="contain", elem_id="nb-history", fit_columns=False)
                    with gr.Row():
                        # Its choices change per person; ids are checked by the studio, not by Gradio.
                        chosen = gr.Dropdown([], label="Image", scale=3, min_width=240,
                                             elem_id="nb-history-choice", allow_custom_value=True)
                        download_one = gr.Button("Download image", scale=1, min_width=150,
                                                 elem_id="nb-history-download")
                        history_edit = gr.Button("Edit this image", scale=1, min_width=150,
                                                 elem_id="nb-history-edit")
                        delete_one = gr.Button("Delete image", variant="stop", scale=1, min_width=150,
                                               elem_id="nb-history-delete")
                    # Deleting one image asks first, right under the button.
                    with gr.Group(visible=False, elem_id="nb-history-confirm") as confirm_image_group:
                        confirm_image_text = gr.Markdown()
                        with gr.Row():
                            confirm_image = gr.Button("Yes, delete it", variant="stop",
                                                      elem_id="nb-history-delete-yes")
                            keep_image = gr.Button("Keep it", elem_id="nb-history-delete-no")
                    with gr.Row():
                        download_zip = gr.Button("Download all (zip)", elem_id="nb-history-zip")
                        refresh_history = gr.Button("Refresh")
                    # Shown once there is a download: the browser saves it on the click, and this link stays.
                    history_file = linked_file(label="Your download", interactive=False, visible=False,
                                              elem_id="nb-history-file")
                    history_table = gr.Dataframe(label="Details", interactive=False, wrap=False,
                                                 elem_id="nb-history-table")
                    requests = gr.Dataframe(label="Recent requests (ended ones are listed for an hour)",
                                            interactive=False, wrap=True, elem_id="nb-requests")

                with gr.Tab("Account", id="account") as account_tab:
                    account_text = gr.Markdown(elem_id="nb-account")
                    with gr.Column(visible=False) as account_panel:
                        ledger = gr.Dataframe(label="Credit history", interactive=False)
                        opt_in = gr.Checkbox(label="Send me service updates (shown here; e-mailed if the "
                                                   "operator set up e-mail)")
                        news = gr.Markdown()
                        embed = gr.Checkbox(label="Write the prompt and settings into my new PNG files (off by "
                                                  "default: anyone you send such a file to can read them)",
                                            elem_id="nb-embed-settings")
                        with gr.Row():
                            export_button = gr.Button("Download my data", elem_id="nb-export")
                            delete_button = gr.Button("Delete my account", variant="stop", elem_id="nb-delete")
                        # The confirmation opens right under the button that asked for it.
                        with gr.Group(visible=False, elem_id="nb-delete-confirm") as confirm_group:
                            gr.Markdown("**This deletes your account, credits, images and history** "
                                        "for good. Type DELETE and confirm.")
                            confirm_text = gr.Textbox(label="Type DELETE", elem_id="nb-confirm-text")
                            with gr.Row():
                                confirm_delete = gr.Button("Yes, delete everything", variant="stop")
                                cancel_delete = gr.Button("Cancel")
                        deleted_note = gr.Markdown()
                        export_file = linked_file(label="Your data", interactive=False, visible=False,
                                                 elem_id="nb-export-file")
                        ApiKeysPanel(self).build(account_tab)

                with gr.Tab("Stats", id="stats") as stats_tab:
                    stats_numbers = gr.Markdown(elem_id="nb-stats")
                    with gr.Row():
                        # Slanted labels: dates and outcome names side by side overlapped.
                        per_day = gr.BarPlot(x="day", y="images", title="Images per day", height=300,
                                             y_lim=[0, None], x_label_angle=-40, min_width=300)
                        timing = gr.BarPlot(x="measure", y="seconds", title="Time per request, last day (s)",
                                            height=300, y_lim=[0, None], sort=None, x_label_angle=-30,
                                            min_width=300)
                    with gr.Row():
                        causes = gr.BarPlot(x="cause", y="requests", title="Requests by outcome", height=300,
                                            y_lim=[0, None], x_label_angle=-40, min_width=300)
                        popular = gr.Dataframe(label="Popular settings", interactive=False, min_width=300,
                                               elem_id="nb-popular")
                    refresh_stats = gr.Button("Refresh")

                with gr.Tab("Privacy", id="privacy"):
                    gr.Markdown("### Check an image: was it made by AI?")
                    with gr.Row(elem_id="nb-check"):
                        check_file = uploaded_images(file_count="single", file_types=["image"], height=140,
                                                     label="An image to check (read, then deleted)",
                                                     elem_id="nb-check-file")
                        with gr.Column():
                            check_verdict = gr.Markdown(elem_id="nb-check-verdict")
                            check_details = gr.JSON(label="Details", open=False, elem_id="nb-check-details")
                    gr.Markdown(self.studio.policy_markdown())

            gr.Markdown(f"[Privacy policy](/privacy) · [Metrics](/metrics) · "
                        f"model `{model.model_id}`", elem_id="nb-footer")

            # -- wiring ---------------------------------------------------------------------------
            create_inputs = [prompt, ratio, num_images, negative, steps, guidance, seed, randomize, scheduler]
            quote_outputs = [run, cost_note, header]
            gr.on([demo.load, ratio.change, num_images.change, steps.change], self.quote,
                  [ratio, num_images, steps], quote_outputs, api_name="quote", queue=False, trigger_mode="always_last",
                  show_progress="hidden")
            # Generate answers with the new button label too: no second call (and no re-planning) after it.
            # The job queue decides the order (fair turns, batches), not Gradio's: every request waits in
            # it at once, so no Gradio concurrency limit here.
            # Enter presses the button, so a disabled button (nothing left to spend) stays a dead end here
            # too; the handler refuses anyway. Progress (place in line, then steps) and errors show on the
            # cost line only: the last good result stays in view. A success clears earlier error toasts.
            run.click(self.generate, create_inputs, [gallery, seeds, seed, header, run, cost_note],
                      api_name="generate", concurrency_limit=None, show_progress_on=[cost_note]
                      ).success(None, js=CLEAR_ERROR_TOASTS)
            prompt.submit(None, js=PRESS_GENERATE)
            cancel_run.click(self.cancel_create, None, None, api_name="cancel", queue=False,
                             show_progress="hidden")
            edit_cancel.click(self.cancel_edit, None, None, api_name="cancel_edit", queue=False,
                              show_progress="hidden")
            # "Edit this": the picked (or first) image of the last result, or the History choice, becomes the
            # Edit tab's input; a new upload takes over again.
            picked = gr.State(None)
            gallery.select(self.pick, None, picked, api_visibility="private", queue=False, show_progress="hidden")
            edit_result.select(self.pick, None, picked, api_visibility="private", queue=False,
                               show_progress="hidden")
            source_outputs = [source, source_view, tabs]
            edit_this.click(self.edit_this, picked, source_outputs, api_visibility="private", queue=False)
            edit_again.click(self.edit_last_result, None, source_outputs, api_visibility="private", queue=False)
            history_edit.click(self.edit_stored, chosen, source_outputs, api_visibility="private", queue=False)
            uploads.upload(lambda: ("", ""), None, [source, source_view], api_visibility="private", queue=False)
            edited = edit_run.click(self.edit, [uploads, instruction, strength, edit_steps, edit_seed, edit_randomize,
                                                source],
                                    [edit_result, edit_note, header], api_name="edit", concurrency_limit=None,
                                    show_progress_on=[edit_note])
            edited.success(None, js=CLEAR_ERROR_TOASTS)
            edited.then(self.edit_quote, edit_steps, [edit_run, edit_note], api_visibility="private",
                        show_progress="hidden")
            gr.on([demo.load, edit_tab.select, edit_steps.change], self.edit_quote, edit_steps, [edit_run, edit_note],
                  api_name="edit_quote", queue=False, trigger_mode="always_last", show_progress="hidden")

            history_outputs = [history_gallery, history_table, chosen, history_note, requests]
            gr.on([history_tab.select, refresh_history.click], self.history, None, history_outputs,
                  api_name="history")
            # A download box is hidden until it has a link (an update cannot carry both: Gradio would read
            # the link as a local path); then the browser saves the file at once.
            for button, fn, inputs, name in [(download_one, self.download_image, chosen, "download_image"),
                                             (download_zip, self.download_all, None, "download_all")]:
                button.click(fn, inputs, history_file, api_name=name).success(
                    _shown, None, history_file, api_visibility="private", queue=False, show_progress="hidden"
                ).success(None, history_file, js=SAVE_FILE)
            delete_one.click(self.ask_delete_image, chosen, [confirm_image_group, confirm_image_text],
                             api_visibility="private", queue=False)
            keep_image.click(lambda: gr.update(visible=False), None, confirm_image_group, api_visibility="private",
                             queue=False)
            chosen.change(lambda: gr.update(visible=False), None, confirm_image_group, api_visibility="private",
                          queue=False, show_progress="hidden")
            confirm_image.click(lambda: gr.update(visible=False), None, confirm_image_group, api_visibility="private",
                                queue=False).then(self.delete_image, chosen, history_outputs, api_name="delete_image")

            account_outputs = [account_text, ledger, opt_in, news, account_panel, embed]
            account_tab.select(self.account, None, account_outputs, api_name="account")
            opt_in.input(self.set_opt_in, opt_in, news, api_name="set_updates_opt_in")
            embed.input(self.set_embed_settings, embed, embed, api_name="set_embed_settings")
            export_button.click(self.export, None, export_file, api_name="export").success(
                _shown, None, export_file, api_visibility="private", queue=False, show_progress="hidden"
            ).success(None, export_file, js=SAVE_FILE)
            delete_button.click(lambda: gr.update(visible=True), None, confirm_group,
                                api_visibility="private")
            cancel_delete.click(lambda: (gr.update(visible=False), ""), None, [confirm_group, confirm_text],
                                api_visibility="private")
            confirm_delete.click(
                self.delete_account, confirm_text, deleted_note, api_name="delete_account"
            ).success(None, js="() => { setTimeout(() => window.location.assign('/logout'), 1500); }")

            check_file.upload(self.check_image, check_file, [check_verdict, check_details], api_name="check_image")

            stats_outputs = [stats_numbers, per_day, timing, causes, popular]
            gr.on([stats_tab.select, refresh_stats.click], self.stats, None, stats_outputs, api_name="stats")
        return demo
