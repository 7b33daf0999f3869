"""Train the bundled shapes model: procedural data, VAE, UNet + text encoder; evaluate; save.

From scratch (the 64 px base: `--build-section build_base`, since the config's `build:` is the 256 px model;
the shipped model's whole recipe, base and fine-tune, is under "Training" in its model card):

    python -m nanobanana.bundled.train --build-section build_base --out runs/base64 --work runs/base64-work
    python -m nanobanana.bundled.train ... --resume          # continue from the checkpoints in --work
    python -m nanobanana.bundled.train --fast --out /tmp/m --work /tmp/w   # a few steps, for tests

Phases: (1) an AutoencoderKL on random renders (pixels -> 16x16x4 latents); (2) a latent cache of
`--dataset-size` renders; (3) the UNet and the CLIP text encoder on v-prediction with zero-terminal-SNR,
classifier-free-guidance dropout and an EMA of the weights; (4) text-to-image and image-to-image adherence
measured with `nanobanana.bundled.shapes`; (5) the EMA pipeline saved in diffusers format. Every random choice
derives from `--seed` and the step number, so a run (and a resumed run) is reproducible.

Fine-tuned to 256 px from a 64 px model (`--init-from`; two processes can run side by side):

    python -m nanobanana.bundled.train --init-from M --mix multi --only-vae --sharp-loss   # upscaling VAE
    ... --only-vae --resume --freeze-encoder --border-weight 8 --schedule-from N   # its decoder, on (new --work)
    python -m nanobanana.bundled.train --init-from M --mix multi --sample-mix pairs         # UNet, teacher's latents
    python -m nanobanana.bundled.train --init-from M --mix multi --resume   # both into one 256 px pipeline

The upscaling VAE keeps M's latent space (its decoder draws exact 256 px renders from the latents M's encoder
gives their 64 px versions; its encoder learns to give those latents), so the UNet needs no retraining for
the size; it is fine-tuned from M's weights on a multi-object mix for counts and "a ... and a ..." prompts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nanobanana.bundled.builder import Architecture, build_pipeline
from nanobanana.bundled.shapes import (
    COUNT_MIX,
    HELD_OUT_TEMPLATES,
    MULTI_OBJECT_MIX,
    PAIR_HEAVY_MIX,
    TRAIN_TEMPLATES,
    VOCABULARY,
    PromptSpec,
    analyse,
    caption,
    held_out_combos,
    random_caption,
    random_spec,
    render,
    score,
)
from nanobanana.config import REPO_ROOT, read_yaml, validate

DEFAULT_CONFIG = REPO_ROOT / "configs/models/bundled.yaml"
MIXES = {"default": COUNT_MIX, "multi": MULTI_OBJECT_MIX, "pairs": PAIR_HEAVY_MIX}


@dataclass
class Settings:
    out: Path
    work: Path
    config: Path
    seed: int
    threads: int
    vae_steps: int
    vae_batch: int
    vae_lr: float
    vae_crop: int
    decoder_steps: int
    decoder_lr: float
    decoder_batch: int
    only_decoder: bool
    dataset_size: int
    unet_steps: int
    batch: int
    lr: float
    warmup: int
    ema_decay: float
    cfg_dropout: float
    max_minutes: float
    log_every: int
    ckpt_minutes: float
    eval_minutes: float
    eval_per_group: int
    steps: int
    guidance: float
    resume: bool
    fast: bool
    init_from: Path | None
    mix: str
    only_vae: bool
    vae_batch_256: int
    crop_steps: int
    sample_mix: str | None
    sharp_loss: bool
    build_section: str
    schedule_from: int
    border_weight: float = 1.0
    freeze_encoder: bool = False


def _resume_vae(ckpt: Path, vae: torch.nn.Module, opt: torch.optim.Optimizer, phase: str) -> int:
    """Load a phase's checkpoint into the VAE and its optimiser; returns the step to go on from (0: none)."""
    if not ckpt.exists():
        return 0
    state = torch.load(ckpt, weights_only=False)
    vae.load_state_dict(state["vae"])
    opt.load_state_dict(state["opt"])
    _log(f"{phase}: resumed from step {state['step']}")
    return state["step"]


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_architecture(config_path: Path, section: str = "build") -> Architecture:
    """The `build:` section (or another) of the model config; an empty vocabulary means the shapes vocabulary."""
    arch = validate(Architecture, read_yaml(config_path).get(section, {}), f"{config_path} ({section})")
    if not arch.vocabulary:
        arch.vocabulary = list(VOCABULARY)
    return arch


def images_to_tensor(images) -> torch.Tensor:
    """PIL images -> a float tensor in [-1, 1], NCHW."""
    array = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def _step_rng(seed: int, phase: str, step: int) -> random.Random:
    return random.Random(f"{seed}/{phase}/{step}")


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


# ---------------------------------------------------------------- phase 1: VAE


def train_vae(vae, s: Settings, size: int) -> None:
    """Reconstruction (MSE + L1) with a tiny KL term, on fresh renders every step; resumable."""
    ckpt = s.work / "vae_ckpt.pt"
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae_lr, weight_decay=0.0)
    start = _resume_vae(ckpt, vae, opt, "vae") if s.resume else 0
    vae.train()
    phase = _VaePhase("vae", s, s.vae_steps, s.vae_batch, ckpt)
    for step in range(start, s.vae_steps):
        rng = _step_rng(s.seed, "vae", step)
        x = images_to_tensor([render(random_spec(rng), size, rng.randrange(1 << 30)) for _ in range(s.vae_batch)])
        if s.vae_crop < size:  # the VAE is convolutional: crops teach it edges at a fraction of the cost
            top, left = rng.randrange(size - s.vae_crop + 1), rng.randrange(size - s.vae_crop + 1)
            x = x[:, :, top : top + s.vae_crop, left : left + s.vae_crop]
        gen = torch.Generator().manual_seed(s.seed * 7919 + step)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + 1e-7 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        phase.finish_step(vae, opt, step, _cosine_lr(s.vae_lr, step, s.vae_steps), loss, recon, x)
    vae.eval()


def _log_reconstruction(phase, step, total, batch, losses, recon, x, lr, rate) -> None:
    """One progress line of a VAE phase: loss, PSNR of the last batch, speed and time left."""
    mse = F.mse_loss(recon.detach().clamp(-1, 1), x).item() / 4  # in [0, 1] units
    psnr = 10 * math.log10(1 / max(mse, 1e-10))
    eta = (total - step - 1) * batch / max(rate, 1e-9)
    _log(
        f"{phase} step {step + 1}/{total} loss {np.mean(losses):.4f} psnr {psnr:.1f} dB "
        f"{rate:.0f} samples/s lr {lr:.2e} eta {eta / 60:.1f} min"
    )


def _cosine_lr(base: float, step: int, total: int, begin: int = 0) -> float:
    """`base` at `begin`, down a cosine to 0 at `total` (`begin` > 0: a second cosine, for --schedule-from)."""
    begin = min(begin, step)
    return base * 0.5 * (1 + math.cos(math.pi * (step - begin) / max(1, total - begin)))


class _VaePhase:
    """What every VAE phase does after its backward pass: set the learning rate, step the optimiser, log a
    line every --log-every steps and save an atomic checkpoint every --ckpt-minutes and at the end."""

    def __init__(self, name: str, s: Settings, total: int, batch: int, ckpt: Path) -> None:
        self.name, self.s, self.total, self.batch, self.ckpt = name, s, total, batch, ckpt
        self.t0 = self.last_ckpt = time.time()
        self.seen, self.running = 0, []

    def finish_step(self, vae, opt, step: int, lr: float, loss: torch.Tensor, recon, x) -> bool:
        """Returns True when this step logged its line."""
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        self.seen += len(x)
        self.running.append(loss.item())
        last = step + 1 == self.total
        logged = (step + 1) % self.s.log_every == 0 or last
        if logged:
            rate = self.seen / (time.time() - self.t0)
            _log_reconstruction(self.name, step, self.total, self.batch, self.running, recon, x, lr, rate)
            self.running = []
        if time.time() - self.last_ckpt > self.s.ckpt_minutes * 60 or last:
            _save_atomic({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1}, self.ckpt)
            self.last_ckpt = time.time()
        return logged


def finetune_decoder(vae, s: Settings, size: int) -> None:
    """Fine-tune the decoder on whole images with the encoder frozen: crops leave border artefacts, and a
    frozen encoder keeps the latent space (and any UNet trained on it) valid. Resumable."""
    ckpt = s.work / "decoder_ckpt.pt"
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=s.decoder_lr, weight_decay=0.0)
    start = _resume_vae(ckpt, vae, opt, "decoder") if s.resume else 0
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    vae.train()
    phase = _VaePhase("decoder", s, s.decoder_steps, s.decoder_batch, ckpt)
    for step in range(start, s.decoder_steps):
        rng = _step_rng(s.seed, "decoder", step)
        x = images_to_tensor([render(random_spec(rng), size, rng.randrange(1 << 30)) for _ in range(s.decoder_batch)])
        gen = torch.Generator().manual_seed(s.seed * 15485863 + step)
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        phase.finish_step(vae, opt, step, _cosine_lr(s.decoder_lr, step, s.decoder_steps), loss, recon, x)
    vae.eval().requires_grad_(False)


def _warm_start(vae, teacher) -> int:
    """Copy the teacher's layers into the larger VAE where they fit: its encoder's blocks become the last
    ones of the new encoder (after the extra downsampling blocks), its decoder's the first ones of the new
    decoder (before the extra upsampling blocks); with channels (8, 16, 16, 32, 32) against the teacher's
    (16, 32, 32) all of them fit. Returns how many tensors were copied; the rest train from scratch."""
    extra = len(vae.config.block_out_channels) - len(teacher.config.block_out_channels)
    own = vae.state_dict()
    copied = 0
    for name, tensor in teacher.state_dict().items():
        if name.startswith("encoder.down_blocks."):
            index, rest = name[len("encoder.down_blocks.") :].split(".", 1)
            name = f"encoder.down_blocks.{int(index) + extra}.{rest}"
        if name in own and own[name].shape == tensor.shape:
            own[name] = tensor.clone()
            copied += 1
    vae.load_state_dict(own)
    return copied


def _border_weights(side: int, size: int, border_weight: float) -> torch.Tensor | None:
    """Per-pixel loss weights: `border_weight` in the outer 1/64 of a whole picture (4 px at 256), 1 inside.
    A decoder trained on crops, whose edges are not the picture's, learns to draw a frame there; the shape
    analyser (and a person) reads the border as the background."""
    if border_weight == 1.0:
        return None
    weight = torch.ones(1, 1, side, side)
    rim = max(1, size // 64)
    weight[..., :rim, :] = weight[..., -rim:, :] = border_weight
    weight[..., :, :rim] = weight[..., :, -rim:] = border_weight
    return weight


def _weighted(loss_fn, recon: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """`loss_fn`'s mean, each pixel counted `weight` times (plain mean without weights)."""
    if weight is None:
        return loss_fn(recon, x)
    per_pixel = loss_fn(recon, x, reduction="none")
    return (per_pixel * weight).sum() / (weight.sum() * per_pixel.shape[0] * per_pixel.shape[1])


def train_upscaling_vae(vae, teacher, s: Settings, size: int) -> None:
    """A VAE whose 16x16x4 latents are the `teacher`'s (the 64 px one the UNet was trained on) but whose
    pictures are `size` px: its decoder learns to draw exact `size` px renders from the latents the teacher
    gives their small versions, its encoder to give the teacher's latents for the large ones (image-to-
    image). The UNet needs no retraining for the new size. Resumable."""
    ckpt = s.work / "vae256_ckpt.pt"
    _log(f"vae256: {_warm_start(vae, teacher)} tensors copied from the teacher")
    opt = torch.optim.AdamW(vae.parameters(), lr=s.decoder_lr, weight_decay=0.0)
    start = _resume_vae(ckpt, vae, opt, "vae256") if s.resume else 0
    small = teacher.config.sample_size
    teacher.eval().requires_grad_(False)
    vae.train()
    vae.encoder.requires_grad_(not s.freeze_encoder)
    vae.quant_conv.requires_grad_(not s.freeze_encoder)
    phase = _VaePhase("vae256", s, s.decoder_steps, s.vae_batch_256, ckpt)
    for step in range(start, s.decoder_steps):
        rng = _step_rng(s.seed, "vae256", step)
        specs = [random_spec(rng, mix=MIXES[s.mix]) for _ in range(s.vae_batch_256)]
        seeds = [rng.randrange(1 << 30) for _ in specs]
        x = images_to_tensor([render(spec, size, seed) for spec, seed in zip(specs, seeds, strict=True)])
        x_small = images_to_tensor([render(spec, small, seed) for spec, seed in zip(specs, seeds, strict=True)])
        gen = torch.Generator().manual_seed(s.seed * 15485863 + step)
        with torch.no_grad():
            target = teacher.encode(x_small).latent_dist
            mean, logvar = target.mean, target.logvar
            z = target.mean + target.std * torch.randn(target.mean.shape, generator=gen)
        if step < s.crop_steps:  # half-size crops first (4x cheaper); whole pictures at the end
            per_latent = size // mean.shape[-1]
            side = mean.shape[-1] // 2
            top, left = rng.randrange(side + 1), rng.randrange(side + 1)
            mean, logvar = (t[:, :, top : top + side, left : left + side] for t in (mean, logvar))
            z = z[:, :, top : top + side, left : left + side]
            x = x[:, :, top * per_latent : (top + side) * per_latent, left * per_latent : (left + side) * per_latent]
        recon = vae.decode(z).sample
        if s.freeze_encoder:
            match = torch.zeros(())
        else:
            posterior = vae.encode(x).latent_dist
            match = F.mse_loss(posterior.mean, mean) + 0.1 * F.mse_loss(posterior.logvar, logvar)
        weight = _border_weights(x.shape[-1], size, s.border_weight) if step >= s.crop_steps else None
        if s.sharp_loss:  # L1 wants each pixel at its likeliest colour: a step, where MSE settles for a ramp
            pixel_loss = _weighted(F.l1_loss, recon, x, weight) + 0.1 * _weighted(F.mse_loss, recon, x, weight)
        else:
            pixel_loss = _weighted(F.mse_loss, recon, x, weight) + 0.5 * _weighted(F.l1_loss, recon, x, weight)
        loss = pixel_loss + match
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for half in (vae.encoder, vae.quant_conv), (vae.decoder, vae.post_quant_conv):  # apart: unlike scales
            torch.nn.utils.clip_grad_norm_([p for module in half for p in module.parameters()], 1.0)
        # --schedule-from: a second cosine from that step (to go on training a finished VAE).
        lr = _cosine_lr(s.decoder_lr, step, s.decoder_steps, s.schedule_from)
        if phase.finish_step(vae, opt, step, lr, loss, recon, x):
            _log(f"vae256 latent match (mse to the teacher's) {match.item():.4f}")
    vae.register_to_config(scaling_factor=teacher.config.scaling_factor)
    vae.eval().requires_grad_(False)


@torch.no_grad()
def set_scaling_factor(vae, size: int, seed: int) -> float:
    """Scale latents to unit standard deviation, as SD does with its 0.18215."""
    rng = _step_rng(seed, "scale", 0)
    x = images_to_tensor([render(random_spec(rng), size, rng.randrange(1 << 30)) for _ in range(256)])
    std = vae.encode(x).latent_dist.mean.std().item()
    factor = round(1.0 / std, 5)
    vae.register_to_config(scaling_factor=factor)
    return factor


# ---------------------------------------------------------------- phase 2: latent cache


@torch.no_grad()
def build_latent_cache(vae, s: Settings, size: int) -> dict:
    """Render `dataset_size` training specs (held-out combos excluded) and keep their latent mean/std."""
    suffix = "" if s.mix == "default" else f"_{s.mix}"
    path = s.work / f"latents_{s.seed}_{s.dataset_size}{suffix}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    exclude = held_out_combos()
    rng = random.Random(f"{s.seed}/dataset")
    specs = [random_spec(rng, exclude, MIXES[s.mix]) for _ in range(s.dataset_size)]
    means, stds, t0 = [], [], time.time()
    for i in range(0, len(specs), 256):
        x = images_to_tensor([render(spec, size, rng.randrange(1 << 30)) for spec in specs[i : i + 256]])
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.half())
        stds.append(dist.std.half())
    cache = {"specs": specs, "mean": torch.cat(means), "std": torch.cat(stds)}
    _save_atomic(cache, path)
    _log(f"latent cache: {len(specs)} renders encoded in {time.time() - t0:.0f} s")
    return cache


# ---------------------------------------------------------------- phase 3: UNet + text encoder


class EMA:
    """Exponential moving average of parameters, warmed up so early steps are not frozen in."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, params: Sequence[torch.nn.Parameter], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for sh, p in zip(self.shadow, params, strict=True):
            sh.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, params: Sequence[torch.nn.Parameter]) -> None:
        for sh, p in zip(self.shadow, params, strict=True):
            p.copy_(sh)


def _ema_pipeline(pipe, ema: EMA, params: Sequence[torch.nn.Parameter]):
    """A copy of `pipe` carrying the EMA weights (training weights stay untouched)."""
    import copy

    snapshot = copy.deepcopy(pipe)
    ema.copy_to(list(snapshot.unet.parameters()) + list(snapshot.text_encoder.parameters()))
    return snapshot


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _average_gradients(params: Sequence[torch.nn.Parameter], stop: bool) -> bool:
    """Data parallelism by hand (torchrun, gloo): one all-reduce of every gradient plus a stop flag, so
    all ranks take the same step and stop together."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([float(stop)])])
    dist.all_reduce(flat)
    flat /= _world()
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n
    return bool(flat[-1] > 0)


def _kind(spec: PromptSpec) -> str:
    return "pair" if spec.second else {1: "one", 2: "two", 3: "three"}[spec.count]


def _sampling_weights(specs: Sequence[PromptSpec], mix: dict[str, float]) -> torch.Tensor:
    """Per-entry weights that make draws from the cache follow `mix` (shares of one/two/three/pair)."""
    kinds = [_kind(spec) for spec in specs]
    present = {k: kinds.count(k) for k in set(kinds)}
    return torch.tensor([mix.get(k, 0.0) / present[k] for k in kinds], dtype=torch.float64)


def train_unet(pipe, cache: dict, s: Settings, on_eval: Callable[[object, int], None]) -> EMA:
    from diffusers import DDPMScheduler

    unet, text_encoder, tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
    noise_sched = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
    )
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.01)
    ema = EMA(params, s.ema_decay)
    ckpt = s.work / "unet_ckpt.pt"
    start = 0
    if s.resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        ema.shadow = state["ema"]
        start = state["step"]
        _log(f"unet: resumed from step {start}")

    def lr_at(step: int) -> float:
        if step < s.warmup:
            return s.lr * (step + 1) / s.warmup
        begin = max(s.warmup, min(s.schedule_from, step))  # --schedule-from: a second cosine, no new warm-up
        progress = (step - begin) / max(1, s.unet_steps - begin)
        return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def save_ckpt(step: int) -> None:
        state = {
            "unet": unet.state_dict(),
            "text_encoder": text_encoder.state_dict(),
            "opt": opt.state_dict(),
            "ema": ema.shadow,
            "step": step,
        }
        _save_atomic(state, ckpt)

    specs, means, stds = cache["specs"], cache["mean"], cache["std"]
    weights = _sampling_weights(specs, MIXES[s.sample_mix]) if s.sample_mix else None
    factor = pipe.vae.config.scaling_factor
    alphas = noise_sched.alphas_cumprod
    unet.train()
    text_encoder.train()
    t_start, last_ckpt, last_eval = time.time(), time.time(), time.time()
    seen, losses = 0, []
    step = start
    rank, world = _rank(), _world()
    local_batch = s.batch // world
    for step in range(start, s.unet_steps):
        # Rank 0 draws exactly what a single-process run draws; other ranks draw their own share.
        rng = _step_rng(s.seed, "unet" + (f"/rank{rank}" if rank else ""), step)
        gen = torch.Generator().manual_seed(s.seed * 104729 + step + 7919 * rank)
        if weights is None:
            idx = torch.randint(0, len(specs), (local_batch,), generator=gen)
        else:
            idx = torch.multinomial(weights, local_batch, replacement=True, generator=gen)
        x0 = (means[idx].float() + stds[idx].float() * torch.randn(means[idx].shape, generator=gen)) * factor
        captions = ["" if rng.random() < s.cfg_dropout else random_caption(specs[i], rng) for i in idx.tolist()]
        ids = tokenizer(
            captions,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        t = torch.randint(0, 1000, (local_batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas[t].sqrt().view(-1, 1, 1, 1)
        b = (1 - alphas[t]).sqrt().view(-1, 1, 1, 1)
        noisy, target = a * x0 + b * noise, a * noise - b * x0
        hidden = text_encoder(ids)[0]
        pred = unet(noisy, t, encoder_hidden_states=hidden).sample
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        out_of_time = s.max_minutes > 0 and time.time() - t_start > s.max_minutes * 60
        if world > 1:
            out_of_time = _average_gradients(params, out_of_time)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.step()
        ema.update(params, step)
        seen += s.batch
        losses.append(loss.item())
        if rank == 0 and ((step + 1) % s.log_every == 0 or step + 1 == s.unet_steps):
            elapsed = time.time() - t_start
            rate = seen / elapsed
            eta = (s.unet_steps - step - 1) * s.batch / max(rate, 1e-9)
            _log(
                f"unet step {step + 1}/{s.unet_steps} loss {np.mean(losses):.4f} {rate:.0f} samples/s "
                f"lr {lr_at(step):.2e} elapsed {elapsed / 60:.1f} min eta {eta / 60:.1f} min"
            )
            losses = []
        if rank == 0 and time.time() - last_ckpt > s.ckpt_minutes * 60:
            save_ckpt(step + 1)
            last_ckpt = time.time()
        if rank == 0 and s.eval_minutes > 0 and time.time() - last_eval > s.eval_minutes * 60:
            save_ckpt(step + 1)
            on_eval(_ema_pipeline(pipe, ema, params), step + 1)
            last_eval = time.time()
        if out_of_time:
            _log(f"unet: stopping at step {step + 1}: --max-minutes {s.max_minutes} reached")
            step += 1
            break
    else:
        step = s.unet_steps
    if rank == 0:
        save_ckpt(step)
    unet.eval()
    text_encoder.eval()
    return ema


# ---------------------------------------------------------------- phase 4: evaluation


def eval_cases(per_group: int, seed: int = 999) -> dict[str, list[tuple[str, PromptSpec]]]:
    """(prompt, expected spec) per group: seen combos, held-out combos, unseen phrasings, 2-3 objects, two
    different objects ("pair"; new groups go last so the earlier ones keep their prompts).
    Single objects are centred unless a position is drawn for the `position` group."""
    rng = random.Random(f"eval/{seed}")
    held = sorted(held_out_combos())
    groups: dict[str, list[tuple[str, PromptSpec]]] = {
        "seen": [],
        "held_out": [],
        "phrasing": [],
        "position": [],
        "count": [],
        "pair": [],
    }
    while len(groups["seen"]) < per_group:
        spec = random_spec(rng, set(held))
        if spec.count == 1:
            spec = PromptSpec(spec.colour, spec.shape, spec.background, "center", 1)
            groups["seen"].append((caption(spec, rng.choice(TRAIN_TEMPLATES)), spec))
    for i in range(per_group):
        colour, shape, background = held[i % len(held)]
        spec = PromptSpec(colour, shape, background, "center", 1)
        groups["held_out"].append((caption(spec, rng.choice(TRAIN_TEMPLATES)), spec))
    while len(groups["phrasing"]) < per_group:
        spec = random_spec(rng, set(held))
        if spec.count == 1:
            spec = PromptSpec(spec.colour, spec.shape, spec.background, "center", 1)
            groups["phrasing"].append((caption(spec, rng.choice(HELD_OUT_TEMPLATES)), spec))
    while len(groups["position"]) < per_group:
        spec = random_spec(rng, set(held))
        if spec.count == 1 and spec.position != "center":
            groups["position"].append((caption(spec, rng.choice(TRAIN_TEMPLATES)), spec))
    while len(groups["count"]) < per_group:
        spec = random_spec(rng, set(held))
        if spec.count > 1:
            groups["count"].append((caption(spec, rng.choice(TRAIN_TEMPLATES)), spec))
    while len(groups["pair"]) < per_group:
        spec = random_spec(rng, set(held), {"pair": 1.0})
        groups["pair"].append((caption(spec, rng.choice(TRAIN_TEMPLATES)), spec))
    return groups


@torch.no_grad()
def evaluate(pipe, per_group: int, steps: int, guidance: float, seed: int = 999) -> dict:
    """Adherence rates per group (text-to-image from pure noise) and the image-to-image blue rate."""
    from diffusers import AutoPipelineForImage2Image

    results: dict[str, dict[str, float]] = {}
    for group, cases in eval_cases(per_group, seed).items():
        totals: dict[str, list[bool]] = {}
        for i in range(0, len(cases), 16):
            chunk = cases[i : i + 16]
            gens = [torch.Generator().manual_seed(seed * 1000 + i + j) for j in range(len(chunk))]
            images = pipe(
                [p for p, _ in chunk], num_inference_steps=steps, guidance_scale=guidance, generator=gens
            ).images
            for image, (_, spec) in zip(images, chunk, strict=True):
                for key, ok in score(analyse(image), spec).items():
                    totals.setdefault(key, []).append(ok)
        results[group] = {k: round(float(np.mean(v)), 3) for k, v in totals.items()}
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    init = render(PromptSpec("red", "circle", "white", "center", 1), size, seed)
    n = max(1, per_group // 2)
    gens = [torch.Generator().manual_seed(seed * 2000 + j) for j in range(n)]
    images = img2img(
        ["a blue circle"] * n,
        image=[init] * n,
        strength=0.65,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=gens,
    ).images
    blue = [analyse(im).main is not None and analyse(im).main.colour == "blue" for im in images]
    circle = [analyse(im).main is not None and analyse(im).main.shape == "circle" for im in images]
    results["img2img"] = {"blue": round(float(np.mean(blue)), 3), "circle": round(float(np.mean(circle)), 3)}
    return results


def format_results(results: dict) -> str:
    return " | ".join(f"{g}: " + " ".join(f"{k} {v:.2f}" for k, v in r.items()) for g, r in results.items())


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        prog="python -m nanobanana.bundled.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out", type=Path, default=REPO_ROOT / "runs/nanobanana-shapes",
        help="final pipeline (not the shipped models/nanobanana-shapes unless asked: a stray run must not replace it)",
    )
    p.add_argument("--work", type=Path, default=REPO_ROOT / "runs/bundled", help="checkpoints, caches, logs")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="model config with a build: section")
    p.add_argument(
        "--build-section", default="build",
        help="the config section with the architecture (build_base: the 64 px model the 256 px one starts from)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (more spin on a busy CPU)")
    p.add_argument("--vae-steps", type=int, default=1200)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-crop", type=int, default=32, help="side of the random crops the VAE trains on")
    p.add_argument("--decoder-steps", type=int, default=1000, help="whole-image decoder fine-tuning")
    p.add_argument("--decoder-lr", type=float, default=5e-4)
    p.add_argument("--decoder-batch", type=int, default=16)
    p.add_argument(
        "--only-decoder",
        action="store_true",
        help="fine-tune the decoder of --work/vae in place and stop (the latent space is unchanged)",
    )
    p.add_argument("--dataset-size", type=int, default=20000, help="renders in the latent cache")
    p.add_argument("--unet-steps", type=int, default=7600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ema-decay", type=float, default=0.998)
    p.add_argument("--cfg-dropout", type=float, default=0.1, help="share of empty captions")
    p.add_argument("--max-minutes", type=float, default=0, help="stop the UNet phase after this long (0: no)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-minutes", type=float, default=5)
    p.add_argument("--eval-minutes", type=float, default=10, help="0: evaluate only at the end")
    p.add_argument("--eval-per-group", type=int, default=24)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: config defaults.steps)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: config defaults)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --work")
    p.add_argument("--fast", action="store_true", help="a few steps of each phase (tests)")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="fine-tune: start the UNet and text encoder from this pipeline, and train an upscaling VAE "
        "(the config's sample_size) on its VAE's latents instead of a VAE from scratch",
    )
    p.add_argument("--mix", choices=sorted(MIXES), default="default", help="shares of 1/2/3/two-kind pictures")
    p.add_argument(
        "--sample-mix", choices=sorted(MIXES), default=None,
        help="UNet phase: draw from the latent cache in these shares instead of the cache's own",
    )
    p.add_argument(
        "--sharp-loss", action="store_true", help="upscaling VAE: mostly L1 on pixels (crisper edges than MSE)"
    )
    p.add_argument(
        "--schedule-from", type=int, default=0,
        help="restart the learning rate's cosine at this step (to go on training a finished VAE or UNet)",
    )
    p.add_argument("--only-vae", action="store_true", help="with --init-from: train the upscaling VAE and stop")
    p.add_argument("--vae-batch-256", type=int, default=8, help="batch of the upscaling VAE phase")
    p.add_argument("--crop-steps", type=int, default=0, help="upscaling VAE: first steps on half-size crops")
    p.add_argument(
        "--border-weight", type=float, default=1.0,
        help="upscaling VAE: weight of the outer 1/64 of whole pictures in the pixel loss (against a drawn frame)",
    )
    p.add_argument(
        "--freeze-encoder", action="store_true", help="upscaling VAE: train the decoder only (keeps the encoder)"
    )
    a = p.parse_args(argv)
    defaults = read_yaml(a.config).get("defaults", {})
    s = Settings(
        out=a.out,
        work=a.work,
        config=a.config,
        seed=a.seed,
        threads=a.threads,
        vae_steps=a.vae_steps,
        vae_batch=a.vae_batch,
        vae_lr=a.vae_lr,
        vae_crop=a.vae_crop,
        decoder_steps=a.decoder_steps,
        decoder_lr=a.decoder_lr,
        decoder_batch=a.decoder_batch,
        only_decoder=a.only_decoder,
        dataset_size=a.dataset_size,
        unet_steps=a.unet_steps,
        batch=a.batch,
        lr=a.lr,
        warmup=a.warmup,
        ema_decay=a.ema_decay,
        cfg_dropout=a.cfg_dropout,
        max_minutes=a.max_minutes,
        log_every=a.log_every,
        ckpt_minutes=a.ckpt_minutes,
        eval_minutes=a.eval_minutes,
        eval_per_group=a.eval_per_group,
        steps=a.steps or defaults.get("steps", 6),
        guidance=a.guidance or defaults.get("guidance", 4.0),
        resume=a.resume,
        fast=a.fast,
        init_from=a.init_from,
        mix=a.mix,
        only_vae=a.only_vae,
        vae_batch_256=a.vae_batch_256,
        crop_steps=a.crop_steps,
        sample_mix=a.sample_mix,
        sharp_loss=a.sharp_loss,
        build_section=a.build_section,
        schedule_from=a.schedule_from,
        border_weight=a.border_weight,
        freeze_encoder=a.freeze_encoder,
    )
    if s.fast:  # explicit step counts still win, so tests can resume a fast run for a few more steps
        s.vae_steps = a.vae_steps if a.vae_steps != p.get_default("vae_steps") else 2
        s.unet_steps = a.unet_steps if a.unet_steps != p.get_default("unet_steps") else 3
        s.decoder_steps = a.decoder_steps if a.decoder_steps != p.get_default("decoder_steps") else 2
        s.vae_batch, s.decoder_batch, s.vae_crop, s.dataset_size, s.batch, s.warmup = 4, 4, 32, 32, 8, 1
        s.vae_batch_256 = 2
        s.log_every, s.eval_minutes, s.eval_per_group, s.steps = 1, 0, 1, 2
    return s


def _init_from(pipe, source: Path):
    """Load the UNet and text encoder weights of the pipeline at `source` into `pipe` (same architecture and
    vocabulary); returns its VAE, the teacher whose latent space the UNet knows."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(source / "unet")
    text_encoder = CLIPTextModel.from_pretrained(source / "text_encoder")
    if pipe.tokenizer.get_vocab() != _vocab_of(source):
        raise SystemExit(f"--init-from {source}: its tokenizer's vocabulary differs from the config's.")
    pipe.unet.load_state_dict(unet.state_dict())
    pipe.text_encoder.load_state_dict(text_encoder.state_dict())
    _log(f"init: UNet and text encoder from {source}")
    return AutoencoderKL.from_pretrained(source / "vae")


def _vocab_of(source: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source / "tokenizer").get_vocab()


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    torch.set_num_threads(s.threads)
    if _world() > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        if s.init_from is None and not (s.resume and (s.work / "vae" / "config.json").exists()):
            raise SystemExit("Several processes train only the UNet: run the VAE phase first, then --resume.")
    torch.manual_seed(s.seed)
    s.work.mkdir(parents=True, exist_ok=True)
    arch = load_architecture(s.config, s.build_section)
    pipe = build_pipeline(arch, seed=s.seed)
    n_params = {k: sum(p.numel() for p in getattr(pipe, k).parameters()) for k in ("vae", "unet", "text_encoder")}
    _log(f"parameters: {n_params}; settings: {s}")
    t0 = time.time()

    from diffusers import AutoencoderKL

    vae_dir = s.work / "vae"
    teacher = None
    if s.init_from is not None:
        teacher = _init_from(pipe, s.init_from)
        if s.resume and (vae_dir / "config.json").exists():
            pipe.vae = AutoencoderKL.from_pretrained(vae_dir)
            if pipe.vae.config.sample_size != arch.sample_size:
                raise SystemExit(
                    f"{vae_dir} holds a {pipe.vae.config.sample_size} px VAE, not the config's {arch.sample_size} px "
                    "upscaling one: give the fine-tune a work folder of its own (--work)."
                )
            _log("vae: loaded the trained upscaling VAE from the work folder")
            if s.only_vae:
                _log("vae256: already trained here; to go on, copy vae256_ckpt.pt into a new --work and --resume")
        elif s.only_vae:
            train_upscaling_vae(pipe.vae, teacher, s, arch.sample_size)
            pipe.vae.save_pretrained(vae_dir)
            _log(f"vae256: done in {(time.time() - t0) / 60:.1f} min, saved {vae_dir}")
            return 0
        else:  # the UNet trains on the teacher's latents; evaluations meanwhile decode with it too
            _log("vae: no upscaling VAE in the work folder yet: evaluating with the teacher's")
            pipe.vae = teacher
        if s.only_vae:
            return 0
    elif s.only_decoder:
        vae = AutoencoderKL.from_pretrained(vae_dir)
        finetune_decoder(vae, s, arch.sample_size)
        vae.save_pretrained(vae_dir)
        _log(f"decoder: done in {(time.time() - t0) / 60:.1f} min, saved {vae_dir}")
        return 0
    elif s.resume and (vae_dir / "config.json").exists():
        pipe.vae = AutoencoderKL.from_pretrained(vae_dir)
        _log("vae: loaded the trained VAE from the work folder")
    else:
        train_vae(pipe.vae, s, arch.sample_size)
        factor = set_scaling_factor(pipe.vae, arch.sample_size, s.seed)
        finetune_decoder(pipe.vae, s, arch.sample_size)
        pipe.vae.save_pretrained(vae_dir)
        _log(f"vae: done in {(time.time() - t0) / 60:.1f} min, scaling factor {factor}")
    pipe.vae.eval().requires_grad_(False)
    # A new pipeline object: its image processor and vae_scale_factor follow the VAE it is given.
    # (requires_safety_checker is not a component: left out, diffusers would record True and warn on load.)
    pipe = type(pipe)(**{**pipe.components, "vae": pipe.vae}, requires_safety_checker=False)

    if teacher is not None:
        cache = build_latent_cache(teacher, s, teacher.config.sample_size)
    else:
        cache = build_latent_cache(pipe.vae, s, arch.sample_size)
    history = []

    def on_eval(snapshot, step: int) -> None:
        started = time.time()
        snapshot.unet.eval()
        snapshot.text_encoder.eval()
        results = evaluate(snapshot, s.eval_per_group, s.steps, s.guidance)
        history.append({"step": step, **results})
        _log(f"eval at step {step} ({time.time() - started:.0f} s): {format_results(results)}")
        snapshot.save_pretrained(s.work / "snapshot", safe_serialization=True)
        (s.work / "eval_history.json").write_text(json.dumps(history, indent=1))

    t1 = time.time()
    ema = train_unet(pipe, cache, s, on_eval)
    if _world() > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
        if _rank() > 0:
            return 0
    params = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
    ema.copy_to(params)
    pipe.unet.eval()
    pipe.text_encoder.eval()
    _log(f"unet: phase took {(time.time() - t1) / 60:.1f} min")
    s.out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(s.out, safe_serialization=True)
    results = evaluate(pipe, s.eval_per_group, s.steps, s.guidance)
    (s.work / "eval_final.json").write_text(json.dumps(results, indent=1))
    _log(f"final eval: {format_results(results)}")
    _log(f"saved {s.out} after {(time.time() - t0) / 60:.1f} min in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
