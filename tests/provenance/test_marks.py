"""Both marks on one file, read back by `Provenance.verify`: what they say, what breaks them, and what
they never carry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from PIL import Image

from nanobanana.errors import ProvenanceError, UnreadableFile
from nanobanana.provenance import Origin, Provenance, load_provenance_config
from nanobanana.provenance.keys import CA_FILE, CHAIN_FILE, KEY_FILE, create_local_ca
from nanobanana.provenance.manifest import TRAINED, pixel_hash
from nanobanana.provenance.watermark import payload_for
from tests.provenance.conftest import picture, png

IMAGE_ID = "x" * 32
ORIGIN = Origin("text-to-image", "nanobanana-shapes", prompt="a periwinkle dodecahedron")


def test_a_marked_image_verifies_with_both_marks(provenance):
    data, embedding = provenance.mark(picture(1), IMAGE_ID, ORIGIN)
    verdict = provenance.verify(data)
    assert embedding.status == "embedded"
    assert verdict.status == "ai_marked" and verdict.exit_code == 0
    m = verdict.manifest
    assert m.valid and m.trusted and m.digital_source_type == TRAINED
    assert m.actions == ["c2pa.created"] and m.model == "nanobanana-shapes" and m.software.startswith("Nanobanana ")
    assert verdict.watermark.found
    assert verdict.watermark.payload == f"NBAI:{payload_for('NBAI', IMAGE_ID)[4:].hex()}"


def test_the_manifest_carries_no_prompt_unless_the_operator_opts_in(tmp_path):
    default = Provenance(load_provenance_config({}), tmp_path / "a", {})
    data, _ = default.mark(picture(2), IMAGE_ID, ORIGIN)
    assert b"periwinkle" not in data and b"dodecahedron" not in data
    opted = Provenance(load_provenance_config({"NANOBANANA_PROVENANCE__C2PA__INCLUDE_PROMPT": "true"}),
                       tmp_path / "b", {})
    data, _ = opted.mark(picture(2), IMAGE_ID, ORIGIN)
    assert b"a periwinkle dodecahedron" in data and opted.verify(data).status == "ai_marked"


def test_an_edit_names_its_upload_by_hash_only_with_no_thumbnail(provenance):
    upload = picture(3)
    origin = Origin("edit", "nanobanana-shapes", parents=(upload,))
    data, _ = provenance.mark(picture(4), IMAGE_ID, origin)
    manifest = provenance.verify(data).manifest
    assert manifest.valid and manifest.actions == ["c2pa.opened", "c2pa.edited"]
    assert manifest.ingredients == [{"title": "upload 1 (not included)", "relationship": "parentOf",
                                     "instance_id": f"sha256:{pixel_hash(upload)}"}]
    assert b"thumbnail" not in data.lower()
    # No copy of the upload's pixels travels either: naming it adds a few hundred bytes, not an image.
    without, _ = provenance.mark(picture(4), IMAGE_ID, Origin("text-to-image", "nanobanana-shapes"))
    assert len(data) - len(without) < 4000 < len(png(upload))


def test_changing_one_pixel_after_signing_is_tampering(provenance):
    data, _ = provenance.mark(picture(5), IMAGE_ID, ORIGIN)
    changed = _change_first_pixel(data)
    Image.open(io.BytesIO(changed)).load()  # still a good PNG, only one pixel differs
    verdict = provenance.verify(changed)
    assert verdict.status == "tampered" and verdict.exit_code == 4
    assert verdict.manifest.present and not verdict.manifest.valid and verdict.manifest.problems


def test_flipping_any_byte_is_tampering_even_when_the_image_no_longer_decodes(provenance):
    data, _ = provenance.mark(picture(6), IMAGE_ID, ORIGIN)
    for offset in (len(data) // 3, len(data) // 2, len(data) - 100):
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        assert provenance.verify(bytes(flipped)).status == "tampered", offset


def test_the_watermark_alone_still_says_ai_once_the_manifest_is_stripped(provenance):
    data, _ = provenance.mark(picture(7), IMAGE_ID, ORIGIN)
    stripped = png(Image.open(io.BytesIO(data)).convert("RGB"))  # a re-save drops the manifest
    verdict = provenance.verify(stripped)
    assert not verdict.manifest.present and verdict.watermark.found and verdict.status == "ai_marked"


def test_an_unmarked_image_is_not_marked(provenance):
    verdict = provenance.verify(png(picture(8)))
    assert verdict.status == "not_marked" and verdict.exit_code == 3
    assert not verdict.manifest.present and verdict.watermark.checked and not verdict.watermark.found


def test_an_image_too_small_for_the_watermark_is_reported_as_such(provenance):
    data, embedding = provenance.mark(picture(9, size=64), IMAGE_ID, ORIGIN)
    assert embedding.status == "too_small" and "64×64" in embedding.note
    verdict = provenance.verify(data)
    assert verdict.status == "ai_marked" and verdict.manifest.valid
    assert not verdict.watermark.checked and "too small" in verdict.watermark.note
    assert "too small" in provenance.verify(png(picture(9, size=64))).summary


def test_the_operator_can_turn_the_watermark_off(tmp_path):
    off = Provenance(load_provenance_config({"NANOBANANA_PROVENANCE__WATERMARK__ENABLED": "false"}),
                     tmp_path / "data", {})
    image = picture(10)
    data, embedding = off.mark(image, IMAGE_ID, ORIGIN)
    assert embedding.status == "off"
    assert Image.open(io.BytesIO(data)).convert("RGB").tobytes() == image.tobytes()
    verdict = off.verify(data)
    assert verdict.manifest.valid and not verdict.watermark.found


def test_a_file_that_is_not_an_image_is_unreadable(provenance):
    with pytest.raises(UnreadableFile):
        provenance.verify(b'{"not": "an image"}')


def test_a_decompression_bomb_is_refused_from_its_header(provenance):
    bomb = png(Image.new("1", (10_000, 10_000)))  # a few kB that would decode to 100 megapixels
    assert len(bomb) < 100_000
    with pytest.raises(UnreadableFile, match="megapixels"):
        provenance.verify(bomb)


# -- keys ------------------------------------------------------------------------------------------------
def test_a_first_start_makes_a_local_ca_whose_key_is_private_and_whose_ca_key_is_never_written(provenance):
    folder = provenance.data_dir / "provenance"
    assert sorted(p.name for p in folder.iterdir()) == sorted([".lock", CA_FILE, CHAIN_FILE, KEY_FILE])
    assert os.stat(folder / KEY_FILE).st_mode & 0o777 == 0o600
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert (folder / KEY_FILE).read_bytes().count(b"PRIVATE KEY-----") == 2  # one key: the signer's
    with pytest.raises(ProvenanceError, match="already exists"):
        create_local_ca(folder)


def test_a_certificate_chain_and_key_from_the_environment_sign(tmp_path):
    own = create_local_ca(tmp_path / "operator").parent
    environ = {"NANOBANANA_C2PA_CERT_CHAIN": (own / CHAIN_FILE).read_text(),
               "NANOBANANA_C2PA_PRIVATE_KEY": (own / KEY_FILE).read_text()}
    signer = Provenance(load_provenance_config({}), tmp_path / "data", environ)
    assert not (tmp_path / "data" / "provenance").exists()  # no local key was made
    data, _ = signer.mark(picture(11), IMAGE_ID, ORIGIN)
    verdict = signer.verify(data)
    assert verdict.manifest.valid and not verdict.manifest.trusted  # valid; its CA is not one we trust
    trusting = load_provenance_config({"NANOBANANA_PROVENANCE__C2PA__TRUST_ANCHORS": str(own / CA_FILE)})
    assert Provenance(trusting, tmp_path / "data", environ).verify(data).manifest.trusted


KMS_KEYS: dict[str, ec.EllipticCurvePrivateKey] = {}


def kms_sign(data: bytes) -> bytes:
    """A stand-in for a KMS: it holds the key and returns raw r||s, as ES256 wants."""
    r, s = decode_dss_signature(KMS_KEYS["signer"].sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_a_kms_or_hsm_callback_signs_without_the_key_in_our_files(tmp_path):
    own = create_local_ca(tmp_path / "kms").parent
    KMS_KEYS["signer"] = serialization.load_pem_private_key((own / KEY_FILE).read_bytes(), None)
    (own / KEY_FILE).unlink()  # the key lives "in the KMS" only
    config = load_provenance_config({
        "NANOBANANA_PROVENANCE__C2PA__SIGNER__CALLBACK": "tests.provenance.test_marks:kms_sign",
        "NANOBANANA_PROVENANCE__C2PA__SIGNER__CERTIFICATE_CHAIN": str(own / CHAIN_FILE),
        "NANOBANANA_PROVENANCE__C2PA__TRUST_ANCHORS": str(own / CA_FILE),
    })
    signer = Provenance(config, tmp_path / "data", {})
    data, _ = signer.mark(picture(12), IMAGE_ID, ORIGIN)
    assert signer.verify(data).manifest.trusted


def test_a_callback_without_its_certificates_is_a_clear_error(tmp_path):
    config = load_provenance_config({"NANOBANANA_PROVENANCE__C2PA__SIGNER__CALLBACK": "json:dumps"})
    with pytest.raises(ProvenanceError, match="certificate_chain"):
        Provenance(config, tmp_path / "data", {})


def test_a_reader_never_makes_a_key(tmp_path):
    reader = Provenance(load_provenance_config({}), tmp_path / "data", {}, signing=False)
    assert reader.verify(png(picture(13))).status == "not_marked"
    assert not (tmp_path / "data").exists()


def _change_first_pixel(data: bytes) -> bytes:
    """The same PNG (manifest chunk included) with its first pixel's red value changed: IDAT rewritten,
    CRCs fixed, so only a content check can tell."""
    out, pos, idat = bytearray(data[:8]), 8, b""
    chunks = []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    raw = bytearray(zlib.decompress(idat))
    raw[1] ^= 0x10  # row 0: filter byte, then the first pixel's red value
    new_idat, written = zlib.compress(bytes(raw)), False
    for kind, body in chunks:
        if kind == b"IDAT":
            if written:
                continue
            body, written = new_idat, True
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return bytes(out)


def test_json_reports_are_plain_data(provenance):
    data, _ = provenance.mark(picture(14), IMAGE_ID, ORIGIN)
    report = provenance.verify(data).to_dict()
    assert json.loads(json.dumps(report)) == report
    assert hashlib.sha256(IMAGE_ID.encode()).hexdigest()[:8] in report["watermark"]["payload"]
