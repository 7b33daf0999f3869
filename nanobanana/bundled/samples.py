"""The model card's `samples.png`: a fixed set of prompts at the model's default settings, one seed each,
and an image-to-image row, so the card shows what the weights beside it draw.

    python -m nanobanana.bundled.samples models/nanobanana-shapes            # writes <model>/samples.png
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from nanobanana.bundled.shapes import PromptSpec, render
from nanobanana.generation import model_config_from_reference

PROMPTS = [
    "a red triangle on a white background",
    "a red circle on a blue background",
    "a green square on the left",
    "a white star at the top, purple background",
    "two yellow stars on a black background",
    "three blue circles",
    "two pink squares on a gray background",
    "three orange triangles on cyan",
    "a red circle and a blue square on white",
    "a yellow triangle and a green circle on a purple background",
    "an orange star and a white square, black background",
    "a black circle and a pink triangle on a yellow background",
]
EDIT_PROMPT = "a blue circle"
TILE, CAPTION = 256, 34


def sample_sheet(model: Path, seed: int = 0) -> Image.Image:
    """Rows of four: `PROMPTS`, then the init picture and three seeds of `EDIT_PROMPT` at the default strength."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    defaults = model_config_from_reference("bundled").defaults
    pipe = AutoPipelineForText2Image.from_pretrained(model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    common = {"num_inference_steps": defaults.steps, "guidance_scale": defaults.guidance}
    images = [pipe(p, generator=torch.Generator().manual_seed(seed + i), **common).images[0]
              for i, p in enumerate(PROMPTS)]
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    init = render(PromptSpec("red", "circle", "white", "center", 1), size, seed)
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    edits = [img2img(EDIT_PROMPT, image=init, strength=defaults.strength,
                     generator=torch.Generator().manual_seed(seed + j), **common).images[0] for j in range(3)]
    said = f"edit: “{EDIT_PROMPT}”, strength {defaults.strength}"
    cells = [*zip(images, PROMPTS, strict=True), (init, "init"), *((e, said) for e in edits)]
    sheet = Image.new("RGB", (4 * TILE, (len(cells) // 4) * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (image, text) in enumerate(cells):
        x, y = (k % 4) * TILE, (k // 4) * (TILE + CAPTION)
        sheet.paste(image.resize((TILE, TILE), Image.Resampling.NEAREST), (x, y))
        draw.multiline_text((x + 4, y + TILE + 2), "\n".join(textwrap.wrap(text, 40)[:2]), fill="black", spacing=2)
    return sheet


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a diffusers folder of the bundled model")
    parser.add_argument("--out", type=Path, default=None, help="default: <model>/samples.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or args.model / "samples.png"
    sample_sheet(args.model, args.seed).save(out, optimize=True)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
