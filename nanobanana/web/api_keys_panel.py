"""The Account tab's "API keys" group: make a key (shown once, with its webhook secret), see and revoke keys.

Built by its own `build` inside the Account panel so the rest of the page does not change with it; its
handlers call the same `Studio` key methods as the operator CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from nanobanana.service.accounts import Identity
from nanobanana.web.handlers import handler

if TYPE_CHECKING:
    from nanobanana.web.page import StudioUI

COLUMNS = ["name", "key", "made (UTC)", "last used (UTC)", "id"]


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "never"


class ApiKeysPanel:
    def __init__(self, ui: StudioUI) -> None:
        self.ui = ui
        self.studio = ui.studio

    def identity(self, profile: gr.OAuthProfile | None, request: gr.Request | None) -> Identity:
        return self.ui.identity(profile, request)

    def _view(self, identity: Identity):
        keys = self.studio.api_keys(identity) if identity.is_account else []
        table = pd.DataFrame([[k.name, f"{k.prefix}…", _when(k.created_at), _when(k.last_used_at), k.id]
                              for k in keys], columns=COLUMNS)
        choices = [(f"{k.name} ({k.prefix}…)", k.id) for k in keys]
        return table, gr.update(choices=choices, value=choices[0][1] if choices else None)

    @handler
    def keys(self, identity: Identity):
        """My keys (never the keys themselves) and the choices to revoke."""
        return self._view(identity)

    @handler
    def create(self, name, webhook_url, identity: Identity):
        """A new key: shown here once, with its webhook secret; then the list."""
        new = self.studio.create_api_key(identity, str(name or ""), str(webhook_url or "").strip() or None)
        shown = (f"{new.key}\n\nwebhook secret (for verifying webhook signatures): {new.webhook_secret}")
        gr.Info("Copy the key now: it is shown only this once.")
        return (gr.update(value=shown, visible=True), "", "", *self._view(identity))

    @handler
    def revoke(self, key_id, identity: Identity):
        if not key_id:
            raise gr.Error("Choose a key first.")
        key = self.studio.revoke_api_key(identity, str(key_id))
        gr.Info(f"Revoked “{key.name}”: it stops working at once.")
        return (gr.update(value="", visible=False), *self._view(identity))

    def build(self, account_tab: gr.Tab) -> None:
        with gr.Group(elem_id="nb-api-keys"):
            gr.Markdown("### API keys\nFor scripts and agents: the REST API at `/v1` (schema at "
                        "`/v1/openapi.json`) and the MCP tools at `/mcp`. Send a key as "
                        "`Authorization: Bearer <key>`; it spends this account's credits. A key is shown once "
                        "and stored only as a hash.")
            with gr.Row():
                name = gr.Textbox(label="Name (what will use it)", max_length=100, scale=2, elem_id="nb-key-name")
                webhook = gr.Textbox(label="Webhook URL (optional)", placeholder="https://…", scale=2,
                                     elem_id="nb-key-webhook")
                create = gr.Button("Make a key", scale=1, elem_id="nb-key-create")
            secret = gr.Textbox(label="Your new key: copy it now, it is not shown again", interactive=False,
                                visible=False, lines=3, buttons=["copy"], elem_id="nb-key-secret")
            table = gr.Dataframe(headers=COLUMNS, label="Your keys", interactive=False, elem_id="nb-keys")
            with gr.Row():
                # Its choices change per person; ids are checked by the studio, not by Gradio.
                chosen = gr.Dropdown([], label="Key", allow_custom_value=True, scale=3, elem_id="nb-key-choice")
                revoke = gr.Button("Revoke", variant="stop", scale=1, elem_id="nb-key-revoke")
        account_tab.select(self.keys, None, [table, chosen], api_name="api_keys")
        create.click(self.create, [name, webhook], [secret, name, webhook, table, chosen], api_name="create_api_key")
        revoke.click(self.revoke, chosen, [secret, table, chosen], api_name="revoke_api_key")
