"""Marking at store time, inside the service: what is recorded, and what happens when signing fails."""

from __future__ import annotations

import multiprocessing

import pytest

from nanobanana.errors import ProvenanceError
from nanobanana.provenance import Provenance, load_provenance_config
from nanobanana.provenance.config import SignerConfig
from nanobanana.provenance.keys import CHAIN_FILE, KEY_FILE, create_local_ca, signing_material
from nanobanana.service.accounts import OAuthProfileData
from nanobanana.service.build import build_studio
from tests.fakes import WordFilter
from tests.helpers import files_under, make_studio, request, service_config


def broken_kms(data: bytes) -> bytes:
    raise RuntimeError("the KMS is down")


def test_a_small_models_images_are_recorded_and_logged_as_too_small_for_the_watermark(tmp_path, generator, caplog):
    studio = make_studio(tmp_path / "data", generator)
    try:
        account = studio.sign_in(OAuthProfileData("local", "ines", "ines"))
        with caplog.at_level("WARNING"):
            result = studio.generate(request(), account.identity)
        image = studio.services.images.get(account.identity, result.images[0].id)
        record = image.settings["provenance"]
        assert record["c2pa"] is True and record["watermark"] == "too_small" and "64×64" in record["note"]
        assert "too small for the invisible watermark" in caplog.text
        verdict = studio.verify_image(studio.image_path(account.identity, image.id).read_bytes())
        assert verdict.status == "ai_marked" and verdict.manifest.trusted
    finally:
        studio.close()


def test_when_signing_fails_nothing_is_stored_and_nothing_charged(tmp_path, generator):
    own = create_local_ca(tmp_path / "kms").parent
    config = load_provenance_config({
        "NANOBANANA_PROVENANCE__C2PA__SIGNER__CALLBACK": "tests.provenance.test_store:broken_kms",
        "NANOBANANA_PROVENANCE__C2PA__SIGNER__CERTIFICATE_CHAIN": str(own / CHAIN_FILE),
    })
    data = tmp_path / "data"
    studio = build_studio({}, generator=generator, safety=WordFilter(), config=service_config(data),
                          start_sweeper=False, provenance=Provenance(config, data, {}))
    try:
        account = studio.sign_in(OAuthProfileData("local", "jo", "jo"))
        with pytest.raises(ProvenanceError, match="could not be signed"):
            studio.generate(request(), account.identity)
        assert studio.account_summary(account.identity).balance == account.balance
        assert not files_under(data / "images")
    finally:
        studio.close()


def _make_key(folder: str) -> bytes:
    material = signing_material(SignerConfig(), folder, {})
    return material.chain + material.private_key


def test_two_processes_starting_at_once_make_one_key(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        made = pool.map(_make_key, [str(tmp_path)] * 4)
    assert len(set(made)) == 1
    assert (tmp_path / "provenance" / KEY_FILE).read_bytes() in made[0]
