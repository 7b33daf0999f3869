"""Build small Stable-Diffusion-format pipelines from an architecture description.

Used for the random-weights test model (`configs/models/tiny-random.yaml`) and as the starting point of
the bundled model's training. Everything it builds is standard diffusers/transformers classes, saved with
`save_pretrained` and loaded by the same code as any hub model.

    python -m nanobanana.bundled.builder --config configs/models/tiny-random.yaml --out models/tiny-random
    python -m nanobanana.bundled.builder --twins   # also every shipped config's tiny twin (see twins.py)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, Field, field_validator

from nanobanana.config import REPO_ROOT, read_yaml, validate

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]


class Architecture(BaseModel):
    """Sizes of a tiny SD-style pipeline: VAE, UNet with cross-attention, CLIP text encoder, word tokenizer."""

    sample_size: int = Field(64, description="Image side in pixels the model is built for.")
    vae_channels: list[int] = [16, 32, 32]
    vae_norm_groups: int | None = Field(
        None, description="GroupNorm groups of the VAE (None: one channel per group at its narrowest block).")
    latent_channels: int = 4
    unet_channels: list[int] = [32, 64, 64]
    layers_per_block: int = 1
    attention_head_dim: int = 8
    text_hidden_size: int = 128
    text_layers: int = 3
    text_heads: int = 4
    max_tokens: int = 16
    addition_embed_type: str | None = "text"
    prediction_type: str = "v_prediction"
    vocabulary: list[str] = Field(default_factory=list, description="Words of the word-level tokenizer.")

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        return value.split() if isinstance(value, str) else value


def build_tokenizer(words: Sequence[str], max_tokens: int):
    """A lower-casing word-level tokenizer wrapped as a `PreTrainedTokenizerFast` (loads with AutoTokenizer)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=max_tokens,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
    )


def build_pipeline(arch: Architecture, seed: int = 0):
    """A `StableDiffusionPipeline` with random weights, v-prediction and a zero-terminal-SNR sampler."""
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(arch.vocabulary, arch.max_tokens)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=arch.text_hidden_size,
            intermediate_size=arch.text_hidden_size * 4,
            num_hidden_layers=arch.text_layers,
            num_attention_heads=arch.text_heads,
            max_position_embeddings=arch.max_tokens,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    n_vae = len(arch.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n_vae,
        up_block_types=["UpDecoderBlock2D"] * n_vae,
        block_out_channels=arch.vae_channels,
        latent_channels=arch.latent_channels,
        layers_per_block=1,
        norm_num_groups=arch.vae_norm_groups or min(arch.vae_channels),
        sample_size=arch.sample_size,
    )
    latent_size = arch.sample_size // 2 ** (n_vae - 1)
    n_unet = len(arch.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=arch.latent_channels,
        out_channels=arch.latent_channels,
        block_out_channels=arch.unet_channels,
        layers_per_block=arch.layers_per_block,
        down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n_unet - 1),
        up_block_types=["CrossAttnUpBlock2D"] * (n_unet - 1) + ["UpBlock2D"],
        cross_attention_dim=arch.text_hidden_size,
        attention_head_dim=arch.attention_head_dim,
        norm_num_groups=min(arch.unet_channels) // 4,
        addition_embed_type=arch.addition_embed_type,
        addition_embed_type_num_heads=arch.text_heads,
    )
    scheduler = DPMSolverMultistepScheduler(
        prediction_type=arch.prediction_type,
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        final_sigmas_type="zero",
        algorithm_type="dpmsolver++",
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_from_config(config_path: Path, out: Path, seed: int = 0) -> Path:
    """Build the pipeline described by a model config's `build:` section and save it to `out`."""
    data = read_yaml(config_path)
    arch = validate(Architecture, data.get("build", {}), f"{config_path} (build)")
    pipe = build_pipeline(arch, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs/models/tiny-random.yaml")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models/tiny-random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--twins", action="store_true",
                        help="also build the tiny twin of every shipped config into models/twins/<name>")
    args = parser.parse_args(argv)
    path = build_from_config(args.config, args.out, args.seed)
    print(f"saved {path}")
    if args.twins:
        from nanobanana.bundled.twins import TWINS_DIR, build_twin_from_config, shipped_configs

        for config in shipped_configs():
            print(f"saved {build_twin_from_config(config, TWINS_DIR / config.stem, args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
