"""Prompt and settings in the PNG files: only for an account that opted in, written as the file is made."""

from __future__ import annotations

import json

from PIL import Image

from nanobanana.service.accounts import Identity, OAuthProfileData
from tests.helpers import request

ANA = OAuthProfileData("huggingface", "2002", "ana", None)


def _texts(studio, identity, image_id) -> dict:
    with Image.open(studio.image_path(identity, image_id)) as picture:
        return dict(picture.text)


def test_files_carry_no_prompt_or_settings_by_default(studio):
    account = studio.sign_in(ANA)
    visitor = Identity.anonymous("visitor-1", "192.0.2.7")
    for identity in (account.identity, visitor):
        [image] = studio.generate(request("a secret red circle"), identity).images
        assert _texts(studio, identity, image.id) == {}
        assert b"secret" not in studio.image_path(identity, image.id).read_bytes()
    assert studio.account_summary(account.identity).embed_settings is False


def test_an_account_that_opts_in_gets_prompt_seed_and_settings_as_png_text(studio):
    account = studio.sign_in(ANA)
    studio.set_embed_settings(account.identity, True)
    result = studio.generate(request("a red circle, ünïcode", num_images=2, steps=2), account.identity)
    for image in result.images:
        text = _texts(studio, account.identity, image.id)
        assert text["parameters"].startswith("a red circle, ünïcode\n")
        assert f"Seed: {image.seed}" in text["parameters"] and "Steps: 2" in text["parameters"]
        data = json.loads(text["nanobanana"])
        assert (data["prompt"], data["seed"], data["steps"]) == ("a red circle, ünïcode", image.seed, 2)
    # Opting out again: new files are plain, the ones already made keep what they have.
    studio.set_embed_settings(account.identity, False)
    [plain] = studio.generate(request("a blue circle"), account.identity).images
    assert _texts(studio, account.identity, plain.id) == {}
    assert "parameters" in _texts(studio, account.identity, result.images[0].id)


def test_the_opt_in_is_part_of_the_privacy_export(studio):
    account = studio.sign_in(ANA)
    studio.set_embed_settings(account.identity, True)
    assert studio.services.accounts.get(account.id).profile()["embed_settings_in_png"] is True
