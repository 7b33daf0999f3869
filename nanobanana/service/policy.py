"""The privacy policy, rendered from the configuration the service enforces (so the page and the code
cannot drift apart)."""

from __future__ import annotations

from typing import Any

from nanobanana.service.config import ServiceConfig, analytics_enabled
from nanobanana.service.ledger import CostRule

UNSET_BANNER = (
    "> **This instance has not named its operator yet.** Until `privacy.operator_name` and "
    "`privacy.contact` are set (configs/service.yaml or NANOBANANA_SERVICE__PRIVACY__...), nobody is named "
    "here as responsible for your data.\n\n"
)


def _hours(h: float) -> str:
    if h % 24 == 0 and h >= 24:
        days = int(h // 24)
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{h:g} hour{'s' if h != 1 else ''}"


def _provider_section(remote: Any) -> str:
    """What a person must know when images are made by a remote provider, not on this server."""
    if remote is None:
        return ""
    mark = f" {remote.watermark}" if remote.watermark else ""
    return f"""## Where images are made
Images are made by **{remote.processor}** (model `{remote.model}`), not on this server: your prompt and any
image you upload for an edit are sent to {remote.processor}, which processes them under its own terms and
privacy policy as a processor for this service. Our own prompt and image filters still run before and
after.{mark} We send no account, e-mail or network address of yours with the request.

"""


def _marks_section(marks: dict | None, model: Any = None) -> str:
    """What every image carries to say it was made by AI (`Provenance.describe()`); `model`: the model
    config, whose usual image size decides whether its images can carry the watermark."""
    if marks is None:
        return ""
    lines = []
    if marks["c2pa"]:
        signer = marks.get("signer") or {}
        who = f" by `{signer['subject']}`" if signer.get("subject") else ""
        local = (" (a certificate this instance made for itself: readers see the signature as valid, and as "
                 "trusted once they trust this instance's CA)") if signer.get("source") == "local CA" else ""
        prompt = ("**your prompt** (the operator turned this on), " if marks["include_prompt"] else "")
        lines.append(
            f"- **C2PA Content Credentials:** every image file carries a manifest signed{who}{local}, saying it "
            "was made by AI (digital source type *trainedAlgorithmicMedia*; for edits "
            "*compositeWithTrainedAlgorithmicMedia*) with this software and the model's name. The manifest "
            f"travels with the file to anyone you give it to; it holds {prompt}no account, e-mail, address or "
            "user id. For an edit, your upload is named by a hash of its pixels only (no copy or thumbnail of "
            "it). Re-encoding or screenshotting a file removes the manifest.")
    else:
        lines.append("- **C2PA Content Credentials are turned off by the operator.**")
    if marks["watermark"]:
        lines.append(
            f"- **Invisible watermark:** a short code (the service tag `{marks['watermark_tag']}` and bits of a "
            "hash of the image's id: while we keep the image, it leads us to its record, and so to whose "
            "it is; after that, to nothing) is hidden in the pixels (invisible-watermark's "
            f"{marks['watermark_method']} method), readable after the metadata is stripped, after mild "
            f"re-encoding and resizing (not after cropping). Images smaller than {marks['min_pixels']} pixels "
            "(256×256) are too small to carry it: they are marked by the manifest only, and their record says so.")
        side = getattr(model, "base_resolution", None)
        if isinstance(side, int) and side * side < marks["min_pixels"]:
            lines.append(f"- **This instance's model makes images of about {side}×{side} px: too small for the "
                         "watermark, so they carry the C2PA manifest only.**")
    else:
        lines.append("- **The invisible watermark is turned off by the operator.**")
    lines.append("- Check any image with *Check an image* in the Privacy tab or "
                 "`python -m nanobanana verify FILE`.")
    return "## Images are marked as made by AI\n" + "\n".join(lines) + "\n\n"


def policy_markdown(config: ServiceConfig, *, environ=None, prompt_filter: bool = True,
                    image_filter: bool = True, model: Any = None, cost_rule: CostRule | None = None,
                    marks: dict | None = None) -> str:
    """The privacy policy, rendered from the configuration the service enforces. `model`: the model config
    in use; a remote one makes its provider a named processor of prompts and uploads; `marks`: what
    `Provenance.describe()` says every image carries."""
    credits, allowance, storage, privacy, smtp = (
        config.credits, config.allowance, config.storage, config.privacy, config.smtp,
    )
    analytics = analytics_enabled(environ)
    third = list(privacy.third_parties)
    if analytics:
        third.append("Gradio's usage analytics (GRADIO_ANALYTICS_ENABLED is on)")
    if smtp.enabled:
        third.append(f"the e-mail server {smtp.host} (only for service updates you opted in to)")
    remote = getattr(model, "remote", None) if getattr(model, "is_remote", False) else None
    if remote is not None:
        third.append(f"{remote.processor}, which runs the image model {remote.model} and receives every prompt and "
                     "uploaded image sent to it")
    third_text = ", ".join(third) if third else "none"
    filters = []
    filters.append("prompts are checked by a safety filter" if prompt_filter
                   else "**the prompt safety filter is turned off by the operator**")
    filters.append("every image is checked by a safety filter before you see it" if image_filter
                   else "**the image safety filter is turned off by the operator**")
    anonymous_limit = f"{storage.anonymous_max_images} images / {storage.anonymous_max_bytes / 1e6:g} MB"
    account_limit = f"{storage.account_max_images} images / {storage.account_max_bytes / 1e6:g} MB"
    email = "sent" if smtp.enabled else "not set up here, so updates appear only in the app"
    banner = UNSET_BANNER if privacy.operator_unset else ""
    return f"""# Privacy policy

{banner}This Nanobanana instance is run by {privacy.operator_name}. Questions and requests: {privacy.contact}.

## What we store about you
- **Without an account:** nothing about you. Your images, with the prompts and settings that made them,
  are kept for **{_hours(storage.anonymous_expiry_hours)}**, then deleted. Your browser session is stored
  only as a one-way hash beside those images. To count the free allowance, your browser session and
  your network address are each stored only as a keyed one-way hash with the day's image count (no
  address or session id in clear); these counts are deleted the next day.
- **With an account:** what your sign-in provider tells us (provider, your id there, username, e-mail if
  given), when the account was created, whether you want service updates, your credit balance and every
  credit movement (grants, charges, refunds); your images for **{_hours(storage.account_expiry_hours)}**;
  your generation history (prompts, settings, times) for **{privacy.history_retention_days:g} days**.
- **Requests in the queue:** while a request waits or runs, its prompt, settings and (for edits) the
  uploaded images are kept with it, so that it survives a restart; they are deleted when it ends. A line
  saying when it was sent, its state and how many images it asked for (no prompt) then stays for
  **{config.jobs.keep_finished_minutes:g} minutes**, so your History tab can list it.
- **Image files** carry no prompt, settings, account or location: a downloaded PNG holds only the
  picture. An account may opt in (Account tab) to have the prompt and settings of its *new* images written
  into the PNG as text, as other image studios do; anyone given such a file can read them. Off by default.
- **Uploaded images** for image-to-image and edits are read once and their file deleted; a copy without
  its metadata is held in the server's memory (not on disk) for 30 minutes, so the same upload can be
  edited again, and with a request while it waits or runs.
- **API keys** (if you make any): a one-way hash of each key, its name, when it was made and last used;
  deleted when you revoke it or delete your account. An `Idempotency-Key` you send is kept with the id of
  the request it made for **{_hours(config.api.idempotency_hours)}**. For a request with a webhook, its
  URL and the result we post there are kept until delivered or given up, then for
  **{config.api.webhooks.keep_days:g} days**.

## Limits
- Free allowance without an account: **{allowance.anonymous_images_per_day} images per day**, counted per
  browser session and per network address (as keyed hashes, for the day only).
- New accounts receive **{credits.signup_grant} credits**. Price: {(cost_rule or CostRule(credits)).describe()}.
  Images that fail or are withheld by the safety filter are refunded (or not counted against the allowance).
- Stored images per person: at most **{anonymous_limit}** without an account, **{account_limit}** with
  one. At the limit your oldest images are deleted first, and we tell you.
- Safety: {"; ".join(filters)}.

{_provider_section(remote)}{_marks_section(marks, model)}## Anonymous usage statistics
For each request we record the hour (not the minute), mode, model, aspect ratio, steps, number of images,
outcome and how long each stage took. These records contain no account, session, address or prompt text,
and are kept to run and improve the service.

## Your rights
- **Export:** download everything stored about you (profile, credit ledger as CSV and JSON, generation
  history, every stored image) as one zip from your account panel. Exports are deleted after
  {storage.export_expiry_minutes:g} minutes.
- **Delete:** deleting your account removes every record and file tied to it at once and signs you out
  on every device. Only a keyed hash of your sign-in (provider and id, not readable back) is kept for
  **{privacy.closed_account_days:g} days**, so that deleting and signing up again does not give a second
  sign-up grant; then it is deleted too.
- **Sign-in:** a sign-in lasts **{_hours(privacy.sign_in_hours)}**; the server keeps a random session id
  (hashed) for it, and signing out ends it at once.
- **Service updates:** off unless you opt in; opting out stops them in the app and by e-mail.
  E-mail is {email}.

## Third parties
Data shared with third parties: {third_text}. Analytics: {"on" if analytics else "off"}.
"""
