"""Fixtures for the command-line tests (pytest finds them by name)."""

from __future__ import annotations

import json

import pytest

from nanobanana.cli.main import main


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """Run one command against a data folder of this test's own; returns (exit code, JSON or text)."""
    monkeypatch.setenv("NANOBANANA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("NANOBANANA_DATABASE_URL", raising=False)

    def _run(*argv: str):
        code = main(list(argv))
        out, err = capsys.readouterr()
        if "--json" in argv and out.strip():
            return code, json.loads(out.strip().splitlines()[-1])
        return code, out + err

    return _run
