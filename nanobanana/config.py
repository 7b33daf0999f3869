"""Configuration as data: `configs/*.yaml` plus environment variables, validated once.

Each concern owns one YAML file and a pydantic model for it. Any value can be overridden from the
environment as `NANOBANANA_<FILE>__<KEY>[__<SUBKEY>...]` (for example
`NANOBANANA_SERVICE__CREDITS__SIGNUP_GRANT=50`); the value is parsed as YAML, so numbers and booleans
work. A few well-known variables (`NANOBANANA_MODEL`, `NANOBANANA_DATA_DIR`, ...) are documented
aliases that modules map onto their own keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from nanobanana.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T", bound=BaseModel)


def config_dir() -> Path:
    """The folder holding the YAML files (`NANOBANANA_CONFIG_DIR`, default: the repo's `configs/`)."""
    return Path(os.environ.get("NANOBANANA_CONFIG_DIR", REPO_ROOT / "configs"))


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping; a missing or malformed file is a `ConfigError` naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"Configuration file {path} does not exist.") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"Configuration file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Configuration file {path} must hold a mapping of keys to values.")
    return data


def _env_overrides(section: str, environ: Mapping[str, str]) -> dict[str, Any]:
    prefix = f"NANOBANANA_{section.upper()}__"
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(prefix):
            continue
        keys = [k.lower() for k in name[len(prefix) :].split("__") if k]
        node = overrides
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return overrides


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate(model: type[T], data: Mapping[str, Any], source: str) -> T:
    """Validate `data` against `model`, turning pydantic's report into a `ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"Invalid configuration in {source}: {problems}") from exc


def load_section(
    name: str,
    model: type[T],
    *,
    aliases: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    directory: Path | None = None,
) -> T:
    """Load `configs/<name>.yaml` into `model`, applying environment overrides.

    `aliases` maps a plain environment variable to a dotted key (`{"NANOBANANA_DATA_DIR": "data_dir"}`).
    """
    environ = os.environ if environ is None else environ
    path = (directory or config_dir()) / f"{name}.yaml"
    data = read_yaml(path)
    data = _deep_merge(data, _env_overrides(name, environ))
    for variable, dotted in (aliases or {}).items():
        if environ.get(variable):
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = environ[variable]
    return validate(model, data, str(path))
