"""Shared fixtures: an offline environment and a tiny random-weights model built the way the repo builds it."""

from __future__ import annotations

import os

# Set before anything imports gradio or huggingface_hub: tests never reach outside hosts.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before anything imports ray (it reads this once): Ray clients here connect over loopback only.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from pathlib import Path

import pytest

from nanobanana.config import REPO_ROOT


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`configs/models/tiny-random.yaml` built into a temp folder by `nanobanana.bundled.builder`."""
    from nanobanana.bundled.builder import build_from_config

    out = tmp_path_factory.mktemp("models") / "tiny-random"
    return build_from_config(REPO_ROOT / "configs/models/tiny-random.yaml", out, seed=0)


@pytest.fixture(scope="session")
def tiny_generation_config(tiny_model_dir: Path):
    """The tiny model's config, pointed at the freshly built folder."""
    from nanobanana.generation import load_generation_config, model_config_from_reference

    base = load_generation_config(environ={"NANOBANANA_MODEL": "tiny-random"})
    model = model_config_from_reference("tiny-random").model_copy(update={"source": str(tiny_model_dir)})
    return base.model_copy(update={"model": model})


@pytest.fixture(scope="session")
def generator(tiny_generation_config):
    """One loaded `Generator` on the tiny model, shared by the whole test session."""
    from nanobanana.generation import Generator

    gen = Generator(tiny_generation_config)
    gen.load()
    return gen


@pytest.fixture(scope="session")
def twin_generators(tmp_path_factory: pytest.TempPathFactory):
    """`twin(name)`: a loaded `Generator` on the tiny twin of `configs/models/<name>.yaml`, built once per
    session by `nanobanana.bundled.twins` and run at the twin's small `run_resolution` (the config's own
    base resolution is checked by planning only)."""
    from nanobanana.bundled.twins import build_twin_from_config, twin_spec
    from nanobanana.generation import Generator, load_generation_config, model_config_from_reference

    made: dict[str, Generator] = {}

    def twin(name: str) -> Generator:
        if name not in made:
            path = REPO_ROOT / "configs/models" / f"{name}.yaml"
            spec = twin_spec(path)
            if spec is None:
                pytest.skip(f"{name} has no twin: section, so no tiny twin can be built for it.")
            out = build_twin_from_config(path, tmp_path_factory.mktemp("twins") / name)
            model = model_config_from_reference(name).model_copy(update={
                "source": str(out), "dtype": "float32", "device": "cpu", "variant": None,
                "base_resolution": spec.run_resolution,
            })
            base = load_generation_config(environ={"NANOBANANA_MODEL": name})
            generator = Generator(base.model_copy(update={"model": model}))
            generator.load()
            made[name] = generator
        return made[name]

    return twin


# -- object storage: a real S3 server ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """SeaweedFS (`weed mini`) on loopback for the whole session; tests keep apart by key prefix."""
    from tests.seaweedfs import SeaweedFS

    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_storage(s3_server, monkeypatch) -> dict:
    """`storage` settings for a fresh prefix of the test bucket, with the credentials in the environment."""
    import secrets

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    prefix = f"t{secrets.token_hex(6)}"
    return {"location": f"s3://{s3_server.bucket}/{prefix}", "s3_endpoint": s3_server.endpoint,
            "prefix": prefix}


# -- a Ray cluster: a real local head -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_head():
    """`ray start --head` on loopback with 2 CPUs for the session (short temp path: Ray's sockets live there)."""
    import shutil
    import tempfile

    from tests.ray_cluster import RayHead

    folder = Path(tempfile.mkdtemp(prefix="nbray-", dir="/tmp"))
    saved = dict(os.environ)
    try:
        with RayHead(folder) as head:
            os.environ.update(head.env)  # this process's clients and every process the tests start
            yield head
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(folder, ignore_errors=True)
