"""The provenance configuration (`configs/provenance.yaml`), validated once: what marks every image gets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from nanobanana.config import _env_overrides, config_dir, load_section, validate

CERT_CHAIN_ENV = "NANOBANANA_C2PA_CERT_CHAIN"
PRIVATE_KEY_ENV = "NANOBANANA_C2PA_PRIVATE_KEY"


class SignerConfig(BaseModel):
    certificate_chain: Path | None = None  # None: the local one in <data_dir>/provenance
    private_key: Path | None = None
    callback: str | None = None  # "module:function": a KMS/HSM signs, the key stays there
    algorithm: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
    timestamp_url: str | None = None


class C2paConfig(BaseModel):
    enabled: bool = True
    include_prompt: bool = False
    signer: SignerConfig = Field(default_factory=SignerConfig)
    trust_anchors: Path | None = None


class WatermarkConfig(BaseModel):
    enabled: bool = True
    method: Literal["dwtDctSvd"] = "dwtDctSvd"
    strength: float = Field(48, ge=8, le=128)  # the quantisation step: larger survives more re-encoding, shows more
    tag: str = Field("NBAI", min_length=4, max_length=4, pattern=r"^[\x21-\x7e]{4}$")


class ProvenanceConfig(BaseModel):
    c2pa: C2paConfig = Field(default_factory=C2paConfig)
    watermark: WatermarkConfig = Field(default_factory=WatermarkConfig)


def load_provenance_config(environ: Mapping[str, str] | None = None,
                           directory: Path | None = None) -> ProvenanceConfig:
    """`configs/provenance.yaml` with environment overrides. A configuration folder of an older release
    without the file gets the defaults (both marks on), not a refusal to start."""
    environ = os.environ if environ is None else environ
    if not ((directory or config_dir()) / "provenance.yaml").is_file():
        return validate(ProvenanceConfig, _env_overrides("provenance", environ), "the environment")
    return load_section("provenance", ProvenanceConfig, environ=environ, directory=directory)
