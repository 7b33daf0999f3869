"""The policy page states the marks, rendered from the same configuration that applies them."""

from __future__ import annotations

from types import SimpleNamespace

from nanobanana.provenance import Provenance, load_provenance_config
from nanobanana.service.config import load_service_config
from nanobanana.service.policy import policy_markdown


def marks(tmp_path, **environ) -> dict:
    return Provenance(load_provenance_config(environ), tmp_path / "data", {}).describe()


def test_the_policy_names_both_marks_the_signer_and_that_no_prompt_travels(tmp_path):
    text = policy_markdown(load_service_config(environ={}), marks=marks(tmp_path))
    assert "## Images are marked as made by AI" in text
    assert "C2PA Content Credentials" in text and "Nanobanana content signer" in text
    assert "holds no account" in text and "your prompt" not in text
    assert "Invisible watermark" in text and "NBAI" in text and "256×256" in text


def test_the_policy_follows_the_operators_switches(tmp_path):
    text = policy_markdown(load_service_config(environ={}), marks=marks(
        tmp_path, NANOBANANA_PROVENANCE__WATERMARK__ENABLED="false",
        NANOBANANA_PROVENANCE__C2PA__INCLUDE_PROMPT="true"))
    assert "invisible watermark is turned off by the operator" in text
    assert "**your prompt** (the operator turned this on)" in text


def test_the_policy_says_when_the_models_images_are_too_small_for_the_watermark(tmp_path):
    small = SimpleNamespace(base_resolution=64, remote=None, is_remote=False)
    text = policy_markdown(load_service_config(environ={}), marks=marks(tmp_path), model=small)
    assert "about 64×64 px: too small for the watermark, so they carry the C2PA manifest only" in text
    big = SimpleNamespace(base_resolution=512, remote=None, is_remote=False)
    assert "too small for the watermark, so" not in policy_markdown(load_service_config(environ={}),
                                                                    marks=marks(tmp_path), model=big)


def test_a_config_folder_without_provenance_yaml_gets_both_marks_on(tmp_path):
    from nanobanana.provenance import load_provenance_config

    config = load_provenance_config({"NANOBANANA_PROVENANCE__WATERMARK__STRENGTH": "40"}, directory=tmp_path)
    assert config.c2pa.enabled and config.watermark.enabled and config.watermark.strength == 40
