"""What the page shows, as text and tables, from the service's results (no Gradio, no service calls)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from nanobanana.generation import AspectSize
from nanobanana.service.accounts import AccountSummary
from nanobanana.service.images import StoredImage
from nanobanana.service.ledger import LedgerEntry
from nanobanana.service.payment import Quote
from nanobanana.service.usage import UsageStats

HISTORY_COLUMNS = ["prompt", "size", "steps", "guidance", "seed", "created (UTC)", "expires in", "id"]
LEDGER_COLUMNS = ["time (UTC)", "change", "balance", "what"]


def ratio_choices(sizes: Sequence[AspectSize]) -> list[tuple[str, str]]:
    """The aspect-ratio dropdown: "16:9 · 1344×768"; presets that land on the same size say so."""
    first: dict[tuple[int, int], str] = {}
    choices = []
    for size in sizes:
        same = first.setdefault((size.width, size.height, size.size), size.ratio)
        label = size.label if same == size.ratio else f"{size.label} (same size as {same})"
        choices.append((label, size.value))
    return choices


def download_name(prompt: str, seed: int) -> str:
    """A file name a person recognises: "a-red-circle-seed42.png" (settings stay out of the file)."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:50].rstrip("-") or "image"
    return f"{slug}-seed{seed}.png"


def zip_name(what: str, when: datetime | None = None) -> str:
    """"nanobanana-images-2026-12-02.zip" and the like."""
    return f"nanobanana-{what}-{(when or datetime.now(UTC)):%Y-%m-%d}.zip"


def prompt_limits(info) -> str:
    """Under the prompt box: how much text is accepted and how much the model reads."""
    text = f"Up to {info.limits.max_prompt_chars} characters"
    if info.max_prompt_tokens:
        cut = "longer prompts are cut, and you are told" if info.limits.long_prompt == "truncate" else \
            "longer prompts are refused"
        text += f"; {info.model_name} reads the first {info.max_prompt_tokens} tokens ({cut})"
    return text + "."


def time_left(until: datetime, now: datetime | None = None) -> str:
    """How long until `until`, roughly ("42 min", "5 h 3 min", "6 days")."""
    if now is None:
        now = datetime.now(UTC).replace(tzinfo=None) if until.tzinfo is None else datetime.now(UTC)
    seconds = int((until - now).total_seconds())
    if seconds <= 0:
        return "expiring now"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def header(summary: AccountSummary | None, allowance_left: int, per_day: int) -> str:
    if summary is not None:
        return f"Signed in as **{summary.username}** · balance **{summary.balance}** credits"
    return (f"Not signed in · **{allowance_left} of {per_day}** free images left today · "
            "sign in for credits and a 7-day history")


def more_credits(configured: str | None, contact: str) -> str:
    """How to get more credits: the operator's page or sentence, else a line to the policy's contact."""
    where = (configured or "").strip()
    if where.startswith(("https://", "http://", "mailto:")):
        return f"[Get more credits]({where})."
    if where:
        return where
    contact = contact.strip()
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", contact):
        return f"For more credits, write to [{contact}](mailto:{contact})."
    if contact.startswith(("https://", "http://")):
        return f"For more credits, ask the operator: [{contact}]({contact})."
    return f"For more credits, ask the operator ({contact})." if contact else "Ask the operator for more credits."


def action_label(verb: str, quote: Quote, signed_in: bool) -> str:
    """"Generate · 2 credits", "Edit · free (3 left today)", "Generate · not enough credits"."""
    if not quote.affordable:
        return f"{verb} · not enough " + ("credits" if signed_in else "free images left")
    if signed_in:
        return f"{verb} · {quote.cost} credit{'s' if quote.cost != 1 else ''}"
    return f"{verb} · free ({quote.allowance_left} left today)"


def history_table(images: Sequence[StoredImage]) -> pd.DataFrame:
    rows = [
        {
            "prompt": i.prompt,
            "size": f"{i.width}×{i.height}",
            "steps": i.settings.get("steps"),
            "guidance": i.settings.get("guidance"),
            "seed": i.seed,
            "created (UTC)": i.created_at.strftime("%Y-%m-%d %H:%M"),
            "expires in": time_left(i.expires_at),
            "id": i.id,
        }
        for i in images
    ]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


REQUEST_COLUMNS = ["sent (UTC)", "state", "images", "note"]
STATE_LABELS = {"queued": "⏳ waiting", "running": "⚙️ running", "succeeded": "✅ done", "failed": "❌ failed",
                "cancelled": "⏹ cancelled"}


def requests_table(jobs: Sequence[Any]) -> pd.DataFrame:
    """My recent requests with their state: what is waiting, what ran, and what failed and why."""
    rows = [
        {
            "sent (UTC)": j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "state": STATE_LABELS.get(j.state, j.state),
            "images": j.num_images,
            "note": j.message or "",
        }
        for j in jobs
    ]
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS)


def history_choices(images: Sequence[StoredImage]) -> list[tuple[str, str]]:
    return [(f"{i.prompt[:40]} · seed {i.seed} · {i.created_at:%H:%M:%S}", i.id) for i in images]


def account_text(summary: AccountSummary) -> str:
    return (f"**{summary.username}** · balance **{summary.balance}** credits · member since "
            f"{summary.created_at:%Y-%m-%d}" + (f" · {summary.email}" if summary.email else ""))


def ledger_table(entries: Sequence[LedgerEntry]) -> pd.DataFrame:
    """The credit history, newest first."""
    return pd.DataFrame(
        [{"time (UTC)": e.created_at.strftime("%Y-%m-%d %H:%M:%S"), "change": e.delta,
          "balance": e.balance_after, "what": e.reason} for e in reversed(entries)],
        columns=LEDGER_COLUMNS,
    )


def stats_figures(s: UsageStats):
    """The Stats tab: headline, images per day, time per request, outcomes, popular settings."""
    if not s.requests:
        empty = pd.DataFrame({"day": [], "images": []})
        return ("No requests yet.", empty, pd.DataFrame({"measure": [], "seconds": []}),
                pd.DataFrame({"cause": [], "requests": []}), pd.DataFrame())
    day = s.by_day.copy()
    day["day"] = day["day"].astype(str)
    total_images = int(day["images"].sum())
    # The same definitions as the rows of "Popular settings" (usage.py): an error is a failure on our
    # side ("error:..."); refusals (blocked, unaffordable, invalid, cancelled) are counted apart.
    outcomes = s.by_outcome.groupby("outcome")["requests"].sum()
    failed = int(outcomes[[o for o in outcomes.index if str(o).startswith("error:")]].sum())
    refused = int(outcomes.sum()) - failed - int(outcomes.get("ok", 0))
    error_rate, refused_rate = failed / s.requests, refused / s.requests
    last = day.iloc[-1]
    measures = {"p50_generation_s": "generation p50", "p95_generation_s": "generation p95",
                "p50_total_s": "whole request p50"}
    gen = pd.DataFrame([{"measure": label, "seconds": float(last[key] or 0.0)}
                        for key, label in measures.items()])
    causes = (s.by_outcome.groupby("outcome")["requests"].sum().reset_index()
              .rename(columns={"outcome": "cause"}).sort_values("requests", ascending=False))
    popular = (s.by_setting.sort_values("requests", ascending=False)
               [["mode", "aspect_ratio", "steps", "requests", "images", "error_rate"]].head(10))
    popular = popular.assign(requests=popular["requests"].astype(int), images=popular["images"].astype(int),
                             error_rate=popular["error_rate"].map(lambda r: f"{r:.0%}")).rename(
        columns={"aspect_ratio": "aspect ratio", "error_rate": "error rate"})
    numbers = (
        f"**{s.requests}** requests · **{total_images}** images · error rate **{error_rate:.0%}** (failed on "
        f"our side) · **{refused_rate:.0%}** refused (blocked, unaffordable, invalid or cancelled) · "
        f"today p50 **{(last['p50_generation_s'] or 0):.2f} s**, p95 "
        f"**{(last['p95_generation_s'] or 0):.2f} s** generation time. Anonymous aggregates only."
    )
    return numbers, day[["day", "images"]], gen, causes, popular


def literal(text: str) -> str:
    """Text from an uploaded file shown as it is in Markdown: every punctuation mark escaped and lines
    joined, so it cannot add links, images, HTML or headings of its own to our page."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", " ".join(str(text).split()))


def verdict_markdown(verdict: Any) -> str:
    """"Check an image": the verdict in one line, then what each mark said. What a manifest names (signer,
    software, model) is whatever its signer wrote, and is shown literally."""
    manifest, mark = verdict.manifest, verdict.watermark
    lines = [f"### {verdict.summary}", f"- **C2PA manifest:** {manifest.note}"]
    if manifest.valid:
        signer = (manifest.signer or {}).get("common_name") or (manifest.signer or {}).get("issuer") or "unknown"
        lines.append(f"  signed by *{literal(signer)}*; software {literal(manifest.software or 'not named')}; "
                     f"model *{literal(manifest.model or 'not named')}*; source type "
                     f"*{literal((manifest.digital_source_type or 'not stated').rsplit('/', 1)[-1])}*")
    lines.append(f"- **Invisible watermark:** {mark.note}" + (f" (`{mark.payload}`)" if mark.payload else ""))
    lines.append("\nThe file was read in memory and not kept.")
    return "\n".join(lines)
