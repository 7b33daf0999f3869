"""`python -m nanobanana generate`: text-to-image and image-to-image from the command line.

Writes one PNG per image plus `result.json` (seeds, settings, timings) into `--out`. With `--user USER`
the request goes through the service as that account: its credits are charged, the images are kept in
the data folder for it (copies land in `--out`) and a usage row is written, as in the app.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nanobanana.generation.generator import Generator
from nanobanana.generation.types import GenerationRequest, GenerationResult, Mode
from nanobanana.generation.uploads import load_image
from nanobanana.provenance import Provenance


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images from a prompt (or edit --init images)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", help="what to draw, or the edit to make")
    parser.add_argument("--aspect", default="1:1", help="aspect ratio preset (the model's list; \"auto\" for edits)")
    parser.add_argument("--size", default=None, help="a remote model's output size (512, 1K, 2K, 4K)")
    parser.add_argument("-n", "--num-images", type=int, default=1, help="images to generate (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first image (default: random)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--scheduler", default=None, help="scheduler class name (see the model config)")
    parser.add_argument("--init", type=Path, action="append", default=[], help="input image (repeatable)")
    parser.add_argument("--strength", type=float, default=None, help="image-to-image strength in (0, 1]")
    parser.add_argument("--edit", action="store_true", help="instruction edit of --init (falls back to img2img)")
    parser.add_argument("--model", default=None, help="model config name, YAML, local folder or hub id")
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="output folder (default ./outputs)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "--user", default=None,
        help="run through the service as this account (username or id): charges its credits, keeps the "
             "images in the data folder for the account, writes a usage row",
    )
    parser.set_defaults(func=run_generate)


def request_from_args(args: argparse.Namespace, generator: Generator) -> GenerationRequest:
    images = [load_image(path, generator.config.limits) for path in args.init]
    mode = Mode.EDIT if args.edit else Mode.IMAGE_TO_IMAGE if images else Mode.TEXT_TO_IMAGE
    aspect = args.aspect if not (images and args.aspect == "1:1") else "auto"
    return GenerationRequest(
        prompt=args.prompt,
        mode=mode,
        negative_prompt=args.negative,
        aspect_ratio=aspect,
        num_images=args.num_images,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        strength=args.strength,
        scheduler=args.scheduler,
        images=images,
        size=args.size,
    )


def write_result(result: GenerationResult, out: Path, provenance: Provenance | None = None,
                 inputs: tuple = ()) -> list[Path]:
    """Save the images as `<mode>-<seed>.png`, marked as the service marks its own (C2PA manifest and
    invisible watermark, see `configs/provenance.yaml`), and the metadata as `result.json`."""
    import secrets

    from nanobanana.provenance import Origin
    from nanobanana.service.config import load_service_config

    provenance = provenance or Provenance.from_config(load_service_config().data_dir)  # type: ignore[arg-type]
    origin = Origin(mode=result.settings.mode.value, model_id=result.model_id, parents=tuple(inputs),
                    prompt=result.settings.prompt)
    out.mkdir(parents=True, exist_ok=True)
    paths, marks = [], []
    for image, seed in zip(result.images, result.seeds, strict=True):
        path = out / f"{result.settings.mode.value}-{seed}.png"
        data, embedding = provenance.mark(image, secrets.token_urlsafe(24), origin)
        path.write_bytes(data)
        paths.append(path)
        marks.append(embedding.note)
    meta = result.to_dict() | {"files": [p.name for p in paths], "marks": marks}
    (out / "result.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return paths


def _generator(args: argparse.Namespace) -> Generator:
    from nanobanana.generation.config import load_generation_config, model_config_from_reference

    config = load_generation_config()
    if args.model:
        config = config.model_copy(update={"model": model_config_from_reference(args.model)})
    return Generator(config)


def run_generate(args: argparse.Namespace) -> int:
    if args.user:
        return run_generate_as_user(args)
    generator = _generator(args)
    request = request_from_args(args, generator)
    result = generator.generate(request)
    paths = write_result(result, args.out, inputs=tuple(request.images or ()))
    if args.json:
        from nanobanana.cli.main import print_json

        print_json(result.to_dict() | {"files": [str(p) for p in paths]})
        return 0
    for warning in result.warnings:
        print(f"note: {warning}")
    s, t = result.settings, result.timings
    print(
        f"{len(paths)} image(s) {s.width}×{s.height}, {s.steps} steps, seeds {result.seeds}, "
        f"{t.total:.2f}s total ({t.load:.2f}s load) → {args.out}/"
    )
    return 0


def run_generate_as_user(args: argparse.Namespace) -> int:
    """`generate ... --user USER`: the same request through the service as that account."""
    from nanobanana.cli.main import print_json
    from nanobanana.service.build import build_studio

    generator = _generator(args)
    studio = build_studio(generator=generator, start_sweeper=False)
    try:
        account = studio.services.accounts.resolve(args.user)
        result = studio.generate(request_from_args(args, generator), account.identity)
        args.out.mkdir(parents=True, exist_ok=True)
        files = []
        for image in result.images:  # the studio keeps them; the caller gets copies in --out
            target = args.out / f"{image.id}.png"
            target.write_bytes(studio.image_bytes(account.identity, image.id))
            files.append(str(target))
    finally:
        studio.close()
    payload = {"request_id": result.request_id, "charged": result.charged, "balance": result.balance,
               "blocked": result.blocked, "images": [i.id for i in result.images], "files": files,
               "messages": result.messages}
    if args.json:
        print_json({"ok": True, **payload})
        return 0
    for message in result.messages:
        print(message)
    print(f"{len(files)} image(s) for {account.username}: {result.charged} credit(s) charged, "
          f"balance {result.balance} → {args.out}/")
    return 0
