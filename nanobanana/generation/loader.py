"""Loading a diffusers model once: the base pipeline, image-to-image and edit pipelines sharing its weights.

Any model loads by hub id or local folder. Image-to-image comes from the same components via `from_pipe`
(no second copy in memory); an instruction-edit pipeline is built the same way when the config names one.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from nanobanana.errors import ModelLoadError
from nanobanana.generation.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    config: ModelConfig
    base: Any
    image_to_image: Any | None
    edit: Any | None
    device: str
    dtype: torch.dtype
    base_resolution: int
    size_multiple: int
    prompt_room: int | None  # tokens a prompt may use in the encoder that carries it (markers excluded)
    load_seconds: float
    prompt_tokenizer: Any | None = None  # the tokenizer of that encoder (T5 for FLUX.1, CLIP for SD)
    default_scheduler: str = ""
    schedulers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Requests swap `pipe.scheduler`, so remember the model's own one as it was loaded.
        scheduler = getattr(self.base, "scheduler", None)
        if scheduler is not None:  # a remote provider has none
            self.default_scheduler = type(scheduler).__name__
            self.schedulers = {self.default_scheduler: scheduler}

    @property
    def scheduler_names(self) -> list[str]:
        if not self.default_scheduler:
            return []
        names = [self.default_scheduler, *self.config.schedulers]
        return list(dict.fromkeys(names))

    def scheduler(self, name: str) -> Any:
        """A scheduler instance by class name, built from the model's own scheduler config and cached."""
        if name not in self.schedulers:
            import diffusers

            default = self.schedulers[self.default_scheduler]
            self.schedulers[name] = getattr(diffusers, name).from_config(default.config)
        return self.schedulers[name]


def resolve_device(config: ModelConfig) -> tuple[str, torch.dtype]:
    """CUDA (bf16 where supported, else fp16), Apple MPS (fp16), else CPU float32; the config may override."""
    device = config.device
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if config.dtype != "auto":
        return device, getattr(torch, config.dtype)
    if device.startswith("cuda"):
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return device, torch.float16
    return device, torch.float32


def _load_base(config: ModelConfig, dtype: torch.dtype) -> Any:
    import diffusers

    source = str(config.local_path) if config.is_local else config.source
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.revision:
        kwargs["revision"] = config.revision
    if config.variant:
        kwargs["variant"] = config.variant
    if config.is_local:
        # A local folder must never trigger a hub request, whatever HF_HUB_OFFLINE says.
        kwargs["local_files_only"] = True
    loader = (
        diffusers.AutoPipelineForText2Image
        if config.base_pipeline == "auto"
        else getattr(diffusers, config.base_pipeline)
    )
    try:
        return loader.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise ModelLoadError(_load_error_message(config, exc)) from exc


def _load_error_message(config: ModelConfig, exc: Exception) -> str:
    name = type(exc).__name__
    if config.is_local and not (config.local_path / "model_index.json").exists():
        hint = (
            f"create it with `{config.build_command}`"
            if config.build_command
            else "point the config's `source` (or NANOBANANA_MODEL) at a diffusers model folder or a hub id"
        )
        return f"The model folder {config.local_path} does not exist or holds no model_index.json: {hint}."
    if config.is_local:
        return (
            f"Could not load the model {config.name!r} from the folder {config.local_path}: {name}: {exc}. "
            "Check that it is a diffusers model folder (with model_index.json)."
        )
    if "Gated" in name:
        return f"The model {config.source} is gated: accept its licence on the Hub and set HF_TOKEN."
    if "NotFound" in name or "EntryNotFound" in name or "offline" in str(exc).lower():
        return (
            f"Could not load {config.source} from the Hugging Face Hub ({name}). Check the model id, the "
            "network, and HF_HUB_OFFLINE; or point NANOBANANA_MODEL at a local folder."
        )
    return f"Could not load the model {config.source}: {name}: {exc}"


def _size_rules(pipe: Any, config: ModelConfig) -> tuple[int, int]:
    vae_factor = int(getattr(pipe, "vae_scale_factor", 8))
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if getattr(pipe, "unet", None) is not None:
        latent_multiple = 2 ** (len(pipe.unet.config.block_out_channels) - 1)
        latent_side = pipe.unet.config.sample_size
    else:
        latent_multiple = int(getattr(getattr(denoiser, "config", None), "patch_size", 1) or 1) * 2
        latent_side = getattr(pipe, "default_sample_size", 128)
    if isinstance(latent_side, list | tuple):
        latent_side = latent_side[0]
    multiple = config.size_multiple or vae_factor * latent_multiple
    base = config.base_resolution or int(latent_side) * vae_factor
    return base, multiple


def _prompt_tokens(pipe: Any, config: ModelConfig) -> tuple[Any | None, int | None]:
    """The tokenizer of the encoder that carries the prompt, and how many tokens of prompt it reads.

    A pipeline that takes `max_sequence_length` (FLUX.1's T5, FLUX.2's Qwen) reads the prompt through its
    last tokenizer, up to that length; CLIP there gives only a pooled summary, cut at 77 tokens without
    harm. Otherwise (SD, SDXL: CLIP everywhere) the first tokenizer's own limit applies. The room left is
    that length less what the encoder adds itself: begin/end markers, or a chat template's turn markers.
    """
    names = [n for n in ("tokenizer", "tokenizer_2", "tokenizer_3") if getattr(pipe, n, None) is not None]
    if not names:
        return None, None
    takes_length = "max_sequence_length" in inspect.signature(type(pipe).__call__).parameters
    tokenizer = getattr(pipe, names[-1] if takes_length else names[0])
    limit = config.max_sequence_length if takes_length and config.max_sequence_length else None
    if limit is None:
        if takes_length:
            limit = inspect.signature(type(pipe).__call__).parameters["max_sequence_length"].default
        else:
            limit = getattr(tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or limit >= 100_000:
        return tokenizer, None
    return tokenizer, limit - _added_tokens(tokenizer)


def _added_tokens(tokenizer: Any) -> int:
    """Tokens the encoder adds around any prompt: a chat template's turn, or the begin/end markers."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=False)
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])
    return len(tokenizer("", add_special_tokens=True)["input_ids"])


def _apply_speedups(pipe: Any, config: ModelConfig, device: str) -> None:
    switches = config.speedups
    if switches.attention_slicing:
        pipe.enable_attention_slicing()
    if switches.vae_tiling and hasattr(pipe, "vae"):
        pipe.vae.enable_tiling()
    if switches.cpu_offload and device != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if switches.compile:
        denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
        setattr(pipe, denoiser_name, torch.compile(getattr(pipe, denoiser_name)))


def load_model(config: ModelConfig) -> LoadedModel:
    """Load the configured model and derive everything the generator needs to know about it."""
    import diffusers

    if config.is_remote:
        from nanobanana.generation.remote import load_remote

        return load_remote(config)
    started = time.perf_counter()
    device, dtype = resolve_device(config)
    base = _load_base(config, dtype)
    if config.scheduler:
        try:
            scheduler_cls = getattr(diffusers, config.scheduler)
        except AttributeError as exc:
            raise ModelLoadError(f"Unknown scheduler {config.scheduler!r} in the config of {config.name}.") from exc
        base.scheduler = scheduler_cls.from_config(base.scheduler.config, **config.scheduler_options)
    _apply_speedups(base, config, device)
    if hasattr(base, "set_progress_bar_config"):
        base.set_progress_bar_config(disable=True)
    image_to_image = diffusers.AutoPipelineForImage2Image.from_pipe(base) if config.image_to_image else None
    edit = None
    if config.edit_pipeline:
        edit_cls = getattr(diffusers, config.edit_pipeline)
        edit = base if isinstance(base, edit_cls) else edit_cls.from_pipe(base)
    for pipe in (image_to_image, edit):
        if pipe is not None and hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
    base_resolution, multiple = _size_rules(base, config)
    tokenizer, room = _prompt_tokens(base, config)
    loaded = LoadedModel(
        config=config,
        base=base,
        image_to_image=image_to_image,
        edit=edit,
        device=device,
        dtype=dtype,
        base_resolution=base_resolution,
        size_multiple=multiple,
        prompt_room=room,
        prompt_tokenizer=tokenizer,
        load_seconds=time.perf_counter() - started,
    )
    log.info("loaded %s on %s (%s) in %.1fs", config.name, device, dtype, loaded.load_seconds)
    return loaded
