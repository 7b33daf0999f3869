"""Pieces of the plain routes around the page: the policy page, safe redirects, who the visitor is."""

from __future__ import annotations

import html
import importlib.util
import urllib.parse
from typing import Any

from nanobanana.web.middleware import VISITOR_COOKIE


def visitor_id(request: Any) -> str | None:
    """The visitor cookie, or Gradio's per-page session hash for API clients without cookies."""
    if request is None:
        return None
    try:
        cookie = request.cookies.get(VISITOR_COOKIE)
    except Exception:
        cookie = None
    return cookie or getattr(request, "session_hash", None)


def safe_target(target: str | None) -> str:
    """A local path to redirect to (never another host)."""
    parsed = urllib.parse.urlparse(target or "/")
    path = "/" + (parsed.path or "").lstrip("/\\")
    return path + (f"?{parsed.query}" if parsed.query else "")


def mcp_available() -> bool:
    return importlib.util.find_spec("mcp") is not None


def render_policy_page(title: str, markdown_text: str) -> str:
    """The privacy policy as a plain HTML page (linked from the footer)."""
    try:
        from markdown_it import MarkdownIt

        body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)
    except ImportError:  # pragma: no cover - markdown-it ships with gradio
        body = f"<pre>{html.escape(markdown_text)}</pre>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Privacy · {html.escape(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;"
        "line-height:1.5}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem}</style>"
        f"</head><body><p><a href='/'>← {html.escape(title)}</a></p>{body}</body></html>"
    )
