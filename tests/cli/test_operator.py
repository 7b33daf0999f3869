"""Operator commands: `python -m nanobanana users|credits|export|delete-account|sweep|announce`."""

from __future__ import annotations

import json
import zipfile


def test_users_add_show_and_list(run):
    code, added = run("users", "add", "maria", "--email", "maria@example.org", "--json")
    assert code == 0 and added["balance"] == 50 and added["username"] == "maria"
    code, shown = run("users", "show", "maria", "--json")
    assert code == 0 and shown["balance"] == 50 and shown["email"] == "maria@example.org"
    assert run("users", "show", added["id"], "--json")[1]["username"] == "maria"
    code, listed = run("users", "list", "--json")
    assert [u["username"] for u in listed["users"]] == ["maria"]


def test_adding_an_existing_user_fails(run):
    run("users", "add", "maria")
    code, text = run("users", "add", "maria")
    assert code != 0 and "already exists" in text


def test_credits_grant_and_history(run):
    run("users", "add", "maria")
    code, granted = run("credits", "grant", "maria", "25", "--reason", "beta tester", "--json")
    assert code == 0 and granted["balance"] == 75
    code, text = run("credits", "grant", "maria", "5", "--reason", "thanks")
    assert code == 0 and "balance 80" in text
    code, history = run("credits", "history", "maria", "--json")
    assert [(e["kind"], e["delta"], e["balance_after"]) for e in history["entries"]] == [
        ("grant", 50, 50), ("grant", 25, 75), ("grant", 5, 80)
    ]
    assert history["entries"][1]["reason"] == "beta tester"


def test_unknown_users_and_impossible_adjustments_exit_non_zero_with_a_message(run):
    code, text = run("credits", "grant", "nobody", "5", "--reason", "x")
    assert code == 1 and "No account" in text
    code, payload = run("users", "show", "nobody", "--json")
    assert code == 1 and payload["ok"] is False and payload["error"] == "UnknownUser"
    run("users", "add", "maria")
    code, text = run("credits", "grant", "maria", "-51", "--reason", "too much")
    assert code == 1 and "below zero" in text


def test_export_and_delete_account(run, tmp_path):
    run("users", "add", "maria", "--email", "maria@example.org")
    out = tmp_path / "maria.zip"
    code, exported = run("export", "maria", "--out", str(out), "--json")
    assert code == 0 and exported["path"] == str(out)
    with zipfile.ZipFile(out) as z:
        assert json.loads(z.read("profile.json"))["email"] == "maria@example.org"
    code, text = run("delete-account", "maria")
    assert code == 0 and "Deleted" in text
    assert run("users", "show", "maria")[0] == 1


def test_sweep_and_announce(run):
    code, swept = run("sweep", "--json")
    assert code == 0 and swept["images"] == 0
    code, posted = run("announce", "New model online.", "--json")
    assert code == 0 and posted["email_enabled"] is False and posted["emailed"] == 0


def test_generate_for_a_user_without_enough_credits_fails_and_charges_nothing(run, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("NANOBANANA_MODEL", str(tiny_model_dir))
    run("users", "add", "bob")
    run("credits", "grant", "bob", "-50", "--reason", "empty the account")
    code, text = run("generate", "a red circle", "--steps", "1", "--user", "bob")
    assert code == 1 and "balance is 0" in text
    assert run("users", "show", "bob", "--json")[1]["balance"] == 0
