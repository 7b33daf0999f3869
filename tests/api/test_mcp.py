"""The MCP tools at /mcp, called with the MCP SDK's own client over the streamable HTTP transport."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

pytestmark = pytest.mark.slow


def mcp_call(url: str, key: str | None, calls: list[tuple[str, dict]]) -> tuple[list[str], list]:
    """Connect, list the tools, call each (name, arguments) in turn; returns the tool names and results."""

    async def run():
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http, \
                Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            return names, [await client.call_tool(name, args) for name, args in calls]

    return asyncio.run(run())


def data(result) -> dict:
    assert not result.is_error, result.content
    if isinstance(result.structured_content, dict):
        return result.structured_content.get("result", result.structured_content)
    return json.loads(result.content[0].text)


def test_an_agent_generates_edits_follows_a_job_and_reads_its_balance(live_api):
    account = live_api.account()
    key = live_api.key(account)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
    names, results = mcp_call(live_api.url, key.key, [
        ("generate_image", {"prompt": "a red circle", "steps": 2, "seed": 3, "wait_seconds": 30}),
        ("edit_image", {"instruction": "a blue circle", "image_base64": base64.b64encode(buffer.getvalue()).decode(),
                        "steps": 2, "wait_seconds": 30}),
        ("account_balance", {}),
    ])
    assert {"generate_image", "edit_image", "get_job", "account_balance"} <= set(names)
    made, edited, balance = (data(r) for r in results)
    assert made["state"] == "succeeded" and made["result"]["images"][0]["seed"] == 3
    assert edited["state"] == "succeeded"
    assert balance == {"username": account.username, "balance": account.balance - 2}
    # The image the tool made is the account's, at the URL it gave, with the same key.
    image = httpx.get(live_api.url + made["result"]["images"][0]["url"],
                      headers={"Authorization": f"Bearer {key.key}"}, timeout=30)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    _, (job, edit_stored) = mcp_call(live_api.url, key.key, [
        ("get_job", {"job_id": made["id"]}),
        ("edit_image", {"instruction": "a green circle", "image_id": made["result"]["images"][0]["id"],
                        "steps": 2, "wait_seconds": 30}),
    ])
    assert data(job)["id"] == made["id"] and data(edit_stored)["state"] == "succeeded"


def test_tool_errors_are_our_messages(live_api):
    poor = live_api.account(credits=0)
    stranger = live_api.key()
    _, (refused, missing) = mcp_call(live_api.url, live_api.key(poor).key, [
        ("generate_image", {"prompt": "a red circle", "steps": 2}),
        ("get_job", {"job_id": "not-mine"}),
    ])
    assert refused.is_error and "balance is 0" in refused.content[0].text
    assert missing.is_error and "no such request" in missing.content[0].text
    _, (mine,) = mcp_call(live_api.url, stranger.key, [("generate_image", {"prompt": "a red circle", "steps": 2})])
    _, (theirs,) = mcp_call(live_api.url, live_api.key().key, [("get_job", {"job_id": data(mine)["id"]})])
    assert theirs.is_error  # another account's job is not there for this key


def test_mcp_needs_a_valid_api_key(live_api):
    for headers in ({}, {"Authorization": "Bearer nb_wrong"}):
        response = httpx.post(live_api.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                              headers={**headers, "accept": "application/json, text/event-stream"}, timeout=30)
        assert response.status_code == 401 and response.headers["content-type"].startswith("application/problem+json")
    key = live_api.key()
    live_api.studio.revoke_api_key(live_api.studio.api_caller(key.key).identity, key.record.id)
    with pytest.raises(Exception):  # noqa: B017 - the SDK's own error for a 401
        mcp_call(live_api.url, key.key, [])
