"""C2PA Content Credentials: sign a PNG's bytes with a manifest, and read one back.

A manifest says: made by Nanobanana (its version) with model X; `c2pa.created` with digital source type
`trainedAlgorithmicMedia` for text-to-image; for image-to-image and edits `c2pa.opened` on the upload (a
`parentOf` ingredient identified by the SHA-256 of its pixels only, with no thumbnail) and `c2pa.edited`
with `compositeWithTrainedAlgorithmicMedia`. No prompt and no account data unless the operator opts in to
the prompt (`c2pa.include_prompt`): a manifest travels with the file to whoever gets it.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

import nanobanana
from nanobanana.provenance.keys import SigningMaterial

SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = SOURCE_TYPES + "trainedAlgorithmicMedia"
COMPOSITE_TRAINED = SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"
AI_SOURCE_TYPES = {TRAINED, COMPOSITE_TRAINED, SOURCE_TYPES + "algorithmicMedia"}
SOFTWARE = "Nanobanana"
ALGORITHMS = {"es256": "ES256", "es384": "ES384", "es512": "ES512", "ps256": "PS256", "ps384": "PS384",
              "ps512": "PS512", "ed25519": "ED25519"}


@dataclass(frozen=True)
class Origin:
    """How an image was made, as far as its manifest tells: the mode, the model, the inputs (pixels, which
    only their hash leaves this process as) and the prompt only where the operator opted in."""

    mode: str = "text-to-image"  # text-to-image | image-to-image | edit
    model_id: str = ""
    parents: tuple[Image.Image, ...] = ()
    prompt: str | None = None


def pixel_hash(picture: Image.Image) -> str:
    """SHA-256 of an image's size and RGB pixels: how an upload is named in a manifest (its bytes and
    metadata are not kept)."""
    rgb = picture.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()


def manifest_definition(origin: Origin, title: str) -> tuple[dict, list[tuple[dict, Image.Image]]]:
    """The manifest JSON and the ingredients to add (definition, picture)."""
    agent = {"name": SOFTWARE, "version": nanobanana.__version__}
    parameters: dict[str, Any] = {"model": origin.model_id or "unknown"}
    if origin.prompt is not None:
        parameters["description"] = origin.prompt
    ingredients = []
    if origin.parents:
        actions: list[dict] = []
        for i, parent in enumerate(origin.parents):
            label = f"upload-{i}"
            ingredients.append(({"title": f"upload {i + 1} (not included)", "format": "image/png",
                                 "relationship": "parentOf", "label": label,
                                 "instance_id": f"sha256:{pixel_hash(parent)}"}, parent))
            actions.append({"action": "c2pa.opened", "parameters": {"ingredientIds": [label]}})
        actions.append({"action": "c2pa.edited", "digitalSourceType": COMPOSITE_TRAINED, "softwareAgent": agent,
                        "parameters": {**parameters, "mode": origin.mode}})
    else:
        actions = [{"action": "c2pa.created", "digitalSourceType": TRAINED, "softwareAgent": agent,
                    "parameters": parameters}]
    manifest = {"claim_generator_info": [agent], "title": title, "format": "image/png",
                "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}}]}
    return manifest, ingredients


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def sign_png(data: bytes, origin: Origin, material: SigningMaterial, *, timestamp_url: str | None,
             algorithm: str, title: str = "image.png") -> bytes:
    """The same PNG with a signed manifest embedded (pixels unchanged)."""
    import c2pa

    alg = getattr(c2pa.C2paSigningAlg, ALGORITHMS[algorithm])
    if material.callback is not None:
        signer = c2pa.Signer.from_callback(material.callback, alg, material.chain.decode(), timestamp_url)
    else:
        assert material.private_key is not None
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(
            alg=alg, sign_cert=material.chain, private_key=material.private_key,
            ta_url=timestamp_url.encode() if timestamp_url else None))
    manifest, ingredients = manifest_definition(origin, title)
    # No thumbnails: neither of the result (it is the file) nor of a person's upload.
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    with signer, c2pa.Builder(manifest, context=context) as builder:
        for definition, picture in ingredients:
            builder.add_ingredient(definition, "image/png", io.BytesIO(_png(picture)))
        out = io.BytesIO()
        builder.sign(signer, "image/png", io.BytesIO(data), out)
    return out.getvalue()


@dataclass
class ManifestReading:
    """What a file's C2PA manifest says, and whether it holds."""

    present: bool
    valid: bool = False  # signature and hashes hold (the file was not changed after signing)
    trusted: bool = False  # ... and the signer chains to a CA the reader trusts
    signer: dict | None = None
    digital_source_type: str | None = None
    software: str | None = None
    model: str | None = None
    actions: list[str] = field(default_factory=list)
    ingredients: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # C2PA validation codes that failed
    note: str = ""
    parse_error: bool = False  # the reader could not parse the file or its manifest at all

    @property
    def ai_generated(self) -> bool:
        return self.valid and self.digital_source_type in AI_SOURCE_TYPES

    def to_dict(self) -> dict:
        return {"present": self.present, "valid": self.valid, "trusted": self.trusted, "signer": self.signer,
                "digital_source_type": self.digital_source_type, "software": self.software, "model": self.model,
                "actions": self.actions, "ingredients": self.ingredients, "problems": self.problems,
                "note": self.note}


def _trust_context(anchors: bytes | None) -> Any:
    import c2pa

    settings: dict[str, Any] = {"verify": {"verify_trust": bool(anchors)}}
    if anchors:
        settings["trust"] = {"trust_anchors": anchors.decode()}
    return c2pa.Context.from_dict(settings)


def read_manifest(data: bytes, mime: str, anchors: bytes | None) -> ManifestReading:
    """Read and validate the active manifest of a file's bytes against the given trust anchors (PEM)."""
    import c2pa

    try:
        with c2pa.Reader(mime, io.BytesIO(data), context=_trust_context(anchors)) as reader:
            report = json.loads(reader.json())
    except c2pa.C2paError as exc:
        kind = type(exc).__name__.lstrip("_")
        if kind in ("C2paManifestNotFound", "C2paNotSupported"):
            return ManifestReading(False, note="no C2PA manifest")
        # The file could not be parsed as the image it claims to be, or its manifest is damaged.
        return ManifestReading(True, problems=[kind], parse_error=True,
                               note="a C2PA manifest could not be read from this file")
    state = report.get("validation_state", "")
    statuses = report.get("validation_status") or []
    problems = sorted({s.get("code", "") for s in statuses} - {"signingCredential.untrusted"})
    manifest = report.get("manifests", {}).get(report.get("active_manifest") or "", {})
    reading = ManifestReading(True, valid=state in ("Valid", "Trusted") and not problems,
                              trusted=state == "Trusted", problems=problems)
    info = manifest.get("signature_info") or {}
    reading.signer = {k: info.get(k) for k in ("common_name", "issuer", "alg", "time") if info.get(k)}
    for generator in manifest.get("claim_generator_info") or []:
        reading.software = " ".join(str(generator.get(k)) for k in ("name", "version") if generator.get(k))
        break
    for assertion in manifest.get("assertions") or []:
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in assertion.get("data", {}).get("actions", []):
            reading.actions.append(action.get("action", ""))
            if action.get("digitalSourceType"):
                reading.digital_source_type = action["digitalSourceType"]
            model = (action.get("parameters") or {}).get("model")
            if model:
                reading.model = model
    reading.ingredients = [{k: i.get(k) for k in ("title", "relationship", "instance_id") if i.get(k)}
                           for i in manifest.get("ingredients") or []]
    if reading.valid:
        reading.note = "valid C2PA manifest" + ("" if reading.trusted else " (signer not in the trusted list)")
    else:
        reading.note = "C2PA manifest does not match the file: " + ", ".join(problems or [state or "invalid"])
    return reading
