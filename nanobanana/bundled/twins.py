"""Tiny twins: random-weight pipelines of the same classes and configuration shape as a shipped model.

A shipped model config (`configs/models/sdxl-turbo.yaml`, ...) names a hub model nobody can download in
CI. Its `twin:` section describes a pipeline of the same diffusers class, with the same components (two
text encoders and pooled embeddings for SDXL; CLIP + T5 and a transformer for FLUX.1; a guidance-embedding
transformer for Kontext; Qwen3 hidden-state stacking for FLUX.2 [klein]; v-prediction for SD 2.1), only
narrow and shallow, with tokenizers written by code (`local_tokenizers.py`). Loaded by the same loader
as the real model, it proves our code paths on CPU in seconds; it proves nothing about image quality.

    python -m nanobanana.bundled.builder --twins        # every shipped config's twin into models/twins/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field

from nanobanana.config import REPO_ROOT, read_yaml, validate

TWINS_DIR = REPO_ROOT / "models" / "twins"


class TwinSpec(BaseModel):
    """A `twin:` section: which pipeline class, and how small. Widths/depths only; the shape is the class's."""

    pipeline: Literal[
        "StableDiffusionPipeline", "StableDiffusionXLPipeline", "FluxPipeline", "FluxKontextPipeline",
        "Flux2KleinPipeline",
    ]
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    scheduler: str = Field("EulerDiscreteScheduler", description="The real model's scheduler class.")
    vae_channels: list[int] = [8, 8, 8, 8]  # four blocks: a VAE scale factor of 8, as every shipped model
    latent_channels: int = 4
    unet_channels: list[int] = [16, 32]
    transformer_layers: int = 1
    transformer_single_layers: int = 1
    head_dim: int = 16
    heads: int = 2
    rope_axes: list[int] = [4, 6, 6]
    guidance_embeds: bool = False
    text_hidden: int = 32
    text_layers: int = 2
    t5_hidden: int = 32
    max_tokens: int = 77
    t5_max_tokens: int = 512
    qwen_layers: int = 28  # klein stacks the hidden states of layers 9, 18 and 27
    run_resolution: int = Field(64, description="Side the tests run the twin at (the real base is planned only).")


def twin_spec(config_path: Path) -> TwinSpec | None:
    data = read_yaml(config_path)
    return validate(TwinSpec, data["twin"], f"{config_path} (twin)") if data.get("twin") else None


def shipped_configs() -> list[Path]:
    """Every model config in configs/models/ that has a `twin:` section."""
    return sorted(p for p in (REPO_ROOT / "configs/models").glob("*.yaml") if read_yaml(p).get("twin"))


# -- components --------------------------------------------------------------------------------------
def _clip_config(spec: TwinSpec, tokenizer: Any, projection: bool = False):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=spec.text_hidden, intermediate_size=spec.text_hidden * 2,
        num_hidden_layers=spec.text_layers, num_attention_heads=2, max_position_embeddings=spec.max_tokens,
        hidden_act="gelu", projection_dim=spec.text_hidden, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def _vae(spec: TwinSpec, flux: bool = False):
    from diffusers import AutoencoderKL

    n = len(spec.vae_channels)
    extra: dict[str, Any] = {"use_quant_conv": False, "use_post_quant_conv": False,
                             "shift_factor": 0.1159, "scaling_factor": 0.3611} if flux else {}
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n, block_out_channels=spec.vae_channels,
        latent_channels=spec.latent_channels, layers_per_block=1, norm_num_groups=min(spec.vae_channels),
        sample_size=spec.run_resolution, **extra,
    )


def _unet(spec: TwinSpec, cross_attention_dim: int, *, attention_first: bool = False, **extra: Any):
    """SD 2.x puts cross-attention in all but the deepest block, SDXL in all but the first."""
    from diffusers import UNet2DConditionModel

    n = len(spec.unet_channels)
    if attention_first:
        down = ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"]
        up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1)
    else:
        down = ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1)
        up = ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"]
    return UNet2DConditionModel(
        sample_size=spec.run_resolution // 8, in_channels=spec.latent_channels,
        out_channels=spec.latent_channels, block_out_channels=spec.unet_channels, layers_per_block=1,
        down_block_types=down, up_block_types=up,
        cross_attention_dim=cross_attention_dim, attention_head_dim=[2 * (i + 1) for i in range(n)],
        use_linear_projection=True, norm_num_groups=min(spec.unet_channels) // 2, **extra,
    )


def _scheduler(spec: TwinSpec):
    import diffusers

    options: dict[str, Any] = {"timestep_spacing": "trailing"}
    if spec.pipeline.startswith("Stable"):
        options["prediction_type"] = spec.prediction_type
    return getattr(diffusers, spec.scheduler)(**options)


# -- pipelines ---------------------------------------------------------------------------------------
def _stable_diffusion_2(spec: TwinSpec):
    """SD 2.1: one OpenCLIP-style text encoder (padded with "!"), linear-projection attention, v-prediction."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    from nanobanana.bundled.local_tokenizers import clip_tokenizer

    tokenizer = clip_tokenizer(max_length=spec.max_tokens, pad_token="!")
    return StableDiffusionPipeline(
        vae=_vae(spec), text_encoder=CLIPTextModel(_clip_config(spec, tokenizer)), tokenizer=tokenizer,
        unet=_unet(spec, spec.text_hidden, attention_first=True), scheduler=_scheduler(spec), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )


def _stable_diffusion_xl(spec: TwinSpec):
    """SDXL: two CLIP encoders (the second with a projection: the pooled embedding), time ids added."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from nanobanana.bundled.local_tokenizers import clip_tokenizer

    tokenizer, tokenizer_2 = clip_tokenizer(max_length=spec.max_tokens), clip_tokenizer(
        max_length=spec.max_tokens, pad_token="!")
    time_dim = 8
    unet = _unet(spec, 2 * spec.text_hidden, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                 projection_class_embeddings_input_dim=6 * time_dim + spec.text_hidden)
    return StableDiffusionXLPipeline(
        vae=_vae(spec), text_encoder=CLIPTextModel(_clip_config(spec, tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(spec, tokenizer_2)), tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=_scheduler(spec), force_zeros_for_empty_prompt=True,
    )


def _flux(spec: TwinSpec):
    """FLUX.1 (and Kontext): CLIP for the pooled embedding, T5 for the sequence, a rotary MMDiT."""
    import diffusers
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    from nanobanana.bundled.local_tokenizers import clip_tokenizer, t5_tokenizer

    tokenizer, tokenizer_2 = clip_tokenizer(max_length=spec.max_tokens), t5_tokenizer(max_length=spec.t5_max_tokens)
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=spec.t5_hidden, d_kv=8, d_ff=spec.t5_hidden * 2, num_layers=2,
        num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id,
    ))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=spec.latent_channels * 4, num_layers=spec.transformer_layers,
        num_single_layers=spec.transformer_single_layers, attention_head_dim=spec.head_dim,
        num_attention_heads=spec.heads, joint_attention_dim=spec.t5_hidden, pooled_projection_dim=spec.text_hidden,
        guidance_embeds=spec.guidance_embeds, axes_dims_rope=spec.rope_axes,
    )
    pipeline_class = getattr(diffusers, spec.pipeline)
    return pipeline_class(
        scheduler=_flow_scheduler(), vae=_vae(spec, flux=True),
        text_encoder=CLIPTextModel(_clip_config(spec, tokenizer)), tokenizer=tokenizer, text_encoder_2=t5,
        tokenizer_2=tokenizer_2, transformer=transformer,
    )


def _flux2_klein(spec: TwinSpec):
    """FLUX.2 [klein]: a Qwen3 causal LM (three hidden layers stacked) and several reference images."""
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from nanobanana.bundled.local_tokenizers import qwen2_tokenizer

    tokenizer = qwen2_tokenizer(max_length=spec.t5_max_tokens)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=spec.text_hidden, intermediate_size=spec.text_hidden,
        num_hidden_layers=spec.qwen_layers, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=spec.t5_max_tokens + 64, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    ))
    n = len(spec.vae_channels)
    vae = AutoencoderKLFlux2(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(spec.vae_channels),
        layers_per_block=1, latent_channels=spec.latent_channels, norm_num_groups=min(spec.vae_channels),
        sample_size=spec.run_resolution, use_quant_conv=False, use_post_quant_conv=False,
    )
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=spec.latent_channels * 4, num_layers=spec.transformer_layers,
        num_single_layers=spec.transformer_single_layers, attention_head_dim=spec.head_dim,
        num_attention_heads=spec.heads, joint_attention_dim=3 * spec.text_hidden, timestep_guidance_channels=32,
        axes_dims_rope=spec.rope_axes, guidance_embeds=False,
    )
    return Flux2KleinPipeline(scheduler=_flow_scheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              transformer=transformer, is_distilled=True)


def _flow_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


BUILDERS = {
    "StableDiffusionPipeline": _stable_diffusion_2,
    "StableDiffusionXLPipeline": _stable_diffusion_xl,
    "FluxPipeline": _flux,
    "FluxKontextPipeline": _flux,
    "Flux2KleinPipeline": _flux2_klein,
}


def build_twin(spec: TwinSpec, seed: int = 0):
    torch.manual_seed(seed)
    return BUILDERS[spec.pipeline](spec)


def build_twin_from_config(config_path: Path, out: Path, seed: int = 0) -> Path:
    """Build the twin of one shipped config and save it to `out` (a diffusers folder)."""
    spec = twin_spec(config_path)
    if spec is None:
        raise ValueError(f"{config_path} has no twin: section.")
    pipe = build_twin(spec, seed)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out
