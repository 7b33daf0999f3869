"""Uploads, aspect-ratio presets and model configs: the inputs of a generation."""

from __future__ import annotations

import io
import socket
import struct
import zlib

import pytest
from PIL import Image

from nanobanana.config import REPO_ROOT
from nanobanana.errors import ConfigError, InvalidImage, InvalidRequest
from nanobanana.generation import (
    ASPECT_RATIOS,
    Limits,
    all_sizes,
    closest_ratio,
    load_generation_config,
    load_image,
    model_config_from_reference,
    size_for,
)
from nanobanana.generation.config import ModelConfig


def encoded(fmt: str, size=(32, 24), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "red").save(buffer, format=fmt)
    return buffer.getvalue()


# -- uploads ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_decode_to_rgb(fmt):
    image = load_image(encoded(fmt), Limits())
    assert image.mode == "RGB" and image.size == (32, 24)


def test_rgba_png_is_converted_to_rgb():
    assert load_image(encoded("PNG", mode="RGBA"), Limits()).mode == "RGB"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_refused_naming_the_allowed_ones(fmt):
    with pytest.raises(InvalidImage, match=f"{fmt} images are not accepted; upload one of: PNG, JPEG, WEBP"):
        load_image(encoded(fmt), Limits())


def test_a_text_file_is_not_an_image():
    with pytest.raises(InvalidImage, match="not an image we can read"):
        load_image(b"hello, I am not a picture", Limits())


def test_a_truncated_image_is_reported_as_corrupt():
    data = encoded("PNG", size=(256, 256))
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        load_image(data[: len(data) // 2], Limits())


def test_an_empty_upload_is_refused():
    with pytest.raises(InvalidImage, match="empty"):
        load_image(b"", Limits())


def test_a_file_over_the_byte_limit_is_refused():
    with pytest.raises(InvalidImage, match="limit is"):
        load_image(encoded("PNG", size=(64, 64)), Limits(max_upload_bytes=50))


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG that claims a huge size: the header alone must be enough to refuse it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(InvalidImage, match="megapixels"):
        load_image(bomb_png(100_000, 100_000), Limits())


def test_a_path_that_does_not_exist_is_reported_without_naming_the_server_folder(tmp_path):
    with pytest.raises(InvalidImage, match="upload it again") as caught:
        load_image(tmp_path / "missing.png", Limits())
    assert str(tmp_path) not in str(caught.value)


def test_too_many_uploads_are_refused_before_any_is_read(tmp_path):
    from nanobanana.generation import load_images

    missing = [tmp_path / f"never-read-{i}.png" for i in range(Limits().max_input_images + 1)]
    with pytest.raises(InvalidImage, match="at most 4 images"):
        load_images(missing, Limits())


def test_every_header_is_checked_before_any_upload_is_decoded():
    from nanobanana.generation import load_images

    good = io.BytesIO()
    Image.new("RGB", (32, 32)).save(good, format="PNG")
    with pytest.raises(InvalidImage, match="megapixels"):
        load_images([good.getvalue(), bomb_png(100_000, 100_000)], Limits())


def test_decoded_uploads_are_shrunk_to_what_the_model_uses():
    from nanobanana.generation import load_images

    big = io.BytesIO()
    Image.new("RGB", (1024, 512)).save(big, format="PNG")
    (picture,) = load_images([big.getvalue()], Limits(), max_side=256)
    assert picture.size == (256, 128)


# -- aspect ratios ---------------------------------------------------------------------------------
def test_the_ten_presets_of_nano_banana():
    assert ASPECT_RATIOS == ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


@pytest.mark.parametrize("base", [512, 1024])
def test_presets_keep_about_the_base_pixel_count_on_the_size_grid(base):
    for size in all_sizes(base, 64 if base == 512 else 16):
        assert size.width % (64 if base == 512 else 16) == 0 and size.height % (64 if base == 512 else 16) == 0
        assert 0.8 < size.width * size.height / base**2 < 1.25
        w, h = (int(x) for x in size.ratio.split(":"))
        assert abs(size.width / size.height - w / h) / (w / h) < 0.15


def test_sdxl_sizes_match_the_usual_buckets():
    assert (size_for("16:9", 1024, 64).width, size_for("16:9", 1024, 64).height) == (1344, 768)
    assert size_for("1:1", 1024, 16).label == "1:1 · 1024×1024"


def test_the_short_side_never_goes_below_the_model_minimum():
    for size in all_sizes(64, 16, min_short_side=64):
        assert min(size.width, size.height) >= 64


def test_unknown_ratio_is_refused():
    with pytest.raises(InvalidRequest, match="not offered"):
        size_for("5:3", 512, 64)


def test_closest_ratio_of_an_upload():
    assert closest_ratio(1920, 1080) == "16:9" and closest_ratio(1000, 1000) == "1:1"
    assert closest_ratio(1080, 1350) == "4:5"


# -- configs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs/models").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_model_config_validates(path):
    config = model_config_from_reference(path.stem)
    assert isinstance(config, ModelConfig) and config.name


def test_hub_models_are_recognised_as_hub_ids():
    for name in ("sdxl-turbo", "flux-schnell", "flux-kontext"):
        assert not model_config_from_reference(name).is_local


def test_kontext_config_names_its_edit_pipeline():
    config = model_config_from_reference("flux-kontext")
    assert config.edit_pipeline == "FluxKontextPipeline" and config.dtype == "bfloat16"


def test_env_override_picks_another_model_and_limits():
    config = load_generation_config(
        environ={"NANOBANANA_MODEL": "sdxl-turbo", "NANOBANANA_GENERATION__LIMITS__MAX_IMAGES": "2"}
    )
    assert config.model.name == "sdxl-turbo" and config.limits.max_images == 2


def test_a_hub_id_or_folder_gets_default_settings(tmp_path):
    assert model_config_from_reference("someone/some-model").source == "someone/some-model"
    assert model_config_from_reference(str(tmp_path)).is_local


def test_an_unknown_model_name_lists_the_choices():
    with pytest.raises(ConfigError, match="tiny-random"):
        model_config_from_reference("no-such-model")


def test_an_invalid_value_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsource: x/y\nmax_steps: -3\n")
    with pytest.raises(ConfigError, match="max_steps"):
        model_config_from_reference(str(bad))


def test_a_local_model_loads_without_touching_the_network(tiny_generation_config, monkeypatch):
    from nanobanana.generation import Generator

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def no_network(*args, **kwargs):
        raise AssertionError("a local model must not open network connections")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    generator = Generator(tiny_generation_config)
    assert generator.load().base.unet is not None


def test_a_missing_model_folder_says_how_to_build_it(tmp_path):
    from nanobanana.errors import ModelLoadError
    from nanobanana.generation import Generator

    config = load_generation_config(environ={"NANOBANANA_MODEL": "tiny-random"})
    missing = config.model.model_copy(update={"source": str(tmp_path / "nowhere")})
    with pytest.raises(ModelLoadError, match=r"python -m nanobanana\.bundled\.builder"):
        Generator(config.model_copy(update={"model": missing})).load()
