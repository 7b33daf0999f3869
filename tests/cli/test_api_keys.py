"""`python -m nanobanana api-keys create|list|revoke`: the operator's way to the keys the Account tab makes."""

from __future__ import annotations


def test_create_list_and_revoke_a_key(run):
    run("users", "add", "maria")
    code, made = run("api-keys", "create", "maria", "--name", "nightly", "--json")
    assert code == 0 and made["key"].startswith("nb_") and made["webhook_secret"].startswith("whsec_")
    code, listed = run("api-keys", "list", "maria", "--json")
    assert [k["name"] for k in listed["keys"]] == ["nightly"] and made["key"] not in str(listed)
    assert listed["keys"][0]["prefix"] == made["key"][:10] and listed["keys"][0]["last_used_at"] is None
    code, text = run("api-keys", "revoke", "maria", made["id"])
    assert code == 0 and "stops working at once" in text
    assert run("api-keys", "list", "maria", "--json")[1]["keys"] == []


def test_the_key_is_printed_once_with_a_warning(run):
    run("users", "add", "maria")
    code, text = run("api-keys", "create", "maria", "--name", "script")
    assert code == 0 and "nb_" in text and "Shown this once" in text


def test_revoking_an_unknown_key_or_for_an_unknown_user_fails(run):
    run("users", "add", "maria")
    code, text = run("api-keys", "revoke", "maria", "0123456789abcdef")
    assert code == 1 and "no such API key" in text
    code, text = run("api-keys", "create", "nobody", "--name", "x")
    assert code == 1 and "No account" in text
