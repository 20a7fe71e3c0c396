"""``ipfvr data prepare`` and ``ipfvr train``: the training commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ipfvr_core.training.identities import IdentitySettings
from ipfvr_core.training.prepare import PrepareConfig


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare training data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prepare = data_sub.add_parser("prepare", help="face videos and photos into aligned clip shards (WebDataset tars)")
    prepare.add_argument("sources", type=Path, nargs="+", help="videos, photos or folders of them")
    prepare.add_argument("out", type=Path, help="output folder (shards, indexes, manifest.json)")
    defaults = PrepareConfig()
    prepare.add_argument(
        "--face-backend",
        default="dlib",
        help="analyzer whose embeddings the model's identity encoder reads (default dlib)",
    )
    prepare.add_argument("--resolution", type=int, default=defaults.resolution, help="aligned crop side (px)")
    prepare.add_argument("--clip-frames", type=int, default=defaults.clip_frames, help="frames per clip")
    prepare.add_argument(
        "--min-face-px", type=float, default=defaults.min_face_px, help="least face size in the source (px)"
    )
    prepare.add_argument(
        "--min-sharpness", type=float, default=defaults.min_sharpness, help="least Laplacian variance per 512 px side"
    )
    prepare.add_argument("--max-clips-per-track", type=int, default=defaults.max_clips_per_track)
    prepare.set_defaults(func=run_prepare)

    train = sub.add_parser("train", help="train a stage of the IP-FVR model (HF accelerate; YAML config)")
    train.add_argument("--config", type=Path, required=True, help="the stage's YAML config (docs/training.md)")
    train.set_defaults(func=run_train)

    identities = sub.add_parser("identities", help="a person's identity module: the LoRA psi_id (ipfvr engine)")
    identities_sub = identities.add_subparsers(dest="identities_command", required=True)
    settings = IdentitySettings()
    train_id = identities_sub.add_parser("train", help="train NAME from photos of one person into <weights>/loras/")
    train_id.add_argument(
        "-r",
        "--photo",
        dest="photos",
        type=Path,
        action="append",
        required=True,
        help="a photo of the person (repeat; one person, the largest face of each photo)",
    )
    train_id.add_argument("--name", required=True, help="the identity's name (letters, digits, '_', '.', '-')")
    train_id.add_argument("--weights", type=Path, required=True, help="the ipfvr weights folder to train for")
    train_id.add_argument(
        "--steps", type=int, default=settings.steps, help=f"optimizer steps (default {settings.steps})"
    )
    train_id.add_argument(
        "--learning-rate",
        type=float,
        default=settings.learning_rate,
        help=f"AdamW learning rate (default {settings.learning_rate:g})",
    )
    train_id.add_argument("--seed", type=int, default=settings.seed)
    train_id.add_argument(
        "--face-backend",
        default="auto",
        help="face analysis (its embeddings must match the weights' identity encoder; default auto)",
    )
    train_id.add_argument("--insightface-dir", type=Path, help="local insightface model pack (buffalo_l layout)")
    train_id.add_argument("--overwrite", action="store_true", help="replace an identity of the same name")
    train_id.set_defaults(func=run_identities_train)
    listing = identities_sub.add_parser("list", help="the identities trained for a weights folder")
    listing.add_argument("--weights", type=Path, required=True)
    listing.set_defaults(func=run_identities_list)


def run_prepare(args: argparse.Namespace) -> int:
    from ipfvr_core.faces.loader import load_analyzer
    from ipfvr_core.training.prepare import prepare_dataset

    config = PrepareConfig(
        resolution=args.resolution,
        clip_frames=args.clip_frames,
        min_face_px=args.min_face_px,
        min_sharpness=args.min_sharpness,
        max_clips_per_track=args.max_clips_per_track,
    )
    analyzer = load_analyzer(args.face_backend)
    manifest = prepare_dataset(
        args.sources,
        args.out,
        analyzer,
        config,
        backend_name=args.face_backend,
        progress=lambda name: print(f"preparing {name}", file=sys.stderr),
    )
    print(json.dumps({"clips": manifest.clips, "images": manifest.images, "rejected": manifest.rejected}))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from ipfvr_core.training.config import load_train_config

    config = load_train_config(args.config)  # a bad config is refused before torch and diffusers load
    from ipfvr_core.training.trainer import train

    weights = train(config)
    print(f"weights: {weights}")
    return 0


def run_identities_train(args: argparse.Namespace) -> int:
    import os
    import shutil
    import tempfile

    from ipfvr_core.diffusion.lora import check_lora_name
    from ipfvr_core.diffusion.weights import lora_path, read_config
    from ipfvr_core.errors import ConfigError, InputError
    from ipfvr_core.faces.loader import load_analyzer
    from ipfvr_core.training.identities import train_identity

    for index, photo in enumerate(args.photos):
        if not photo.is_file():
            raise InputError(f"photo {index} ({photo}) does not exist", field="reference", code="invalid_option")
    try:
        check_lora_name(args.name)
    except ConfigError as exc:
        raise ConfigError(exc.message, field="name") from exc
    config = read_config(args.weights)
    target = lora_path(args.weights, config, args.name)
    if target.exists() and not args.overwrite:
        raise ConfigError(f"identity {args.name!r} exists ({target}); pass --overwrite to replace it", field="name")
    analyzer = load_analyzer(args.face_backend, insightface_dir=args.insightface_dir)
    if analyzer.embedding_dim != config.id_embedding_dim:
        raise ConfigError(
            f"{analyzer.name} embeddings are {analyzer.embedding_dim}-d; these weights read "
            f"{config.id_embedding_dim}-d {config.id_encoder} embeddings",
            field="face_backend",
        )
    settings = IdentitySettings(steps=args.steps, learning_rate=args.learning_rate, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="ipfvr-identity-") as work:
        trained = train_identity(
            args.photos,
            name=args.name,
            weights=args.weights,
            analyzer=analyzer,
            work_dir=Path(work),
            resolution=config.resolution,
            settings=settings,
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.part")
        shutil.copyfile(trained.lora, staged)
        os.replace(staged, target)  # a reader sees the old file or the new one, never half of one
    print(json.dumps({"identity": args.name, "lora": str(target), **trained.summary}))
    return 0


def run_identities_list(args: argparse.Namespace) -> int:
    from ipfvr_core.diffusion.weights import available_loras, read_config

    for name in available_loras(args.weights, read_config(args.weights)):
        print(name)
    return 0
