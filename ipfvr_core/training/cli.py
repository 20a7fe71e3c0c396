"""``ipfvr data prepare`` and ``ipfvr train``: the training commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ipfvr_core.training.prepare import PrepareConfig


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare training data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prepare = data_sub.add_parser("prepare", help="face videos and photos into aligned clip shards (WebDataset tars)")
    prepare.add_argument("sources", type=Path, nargs="+", help="videos, photos or folders of them")
    prepare.add_argument("out", type=Path, help="output folder (shards, indexes, manifest.json)")
    defaults = PrepareConfig()
    prepare.add_argument("--face-backend", default="dlib",
                         help="analyzer whose embeddings the model's identity encoder reads (default dlib)")
    prepare.add_argument("--resolution", type=int, default=defaults.resolution, help="aligned crop side (px)")
    prepare.add_argument("--clip-frames", type=int, default=defaults.clip_frames, help="frames per clip")
    prepare.add_argument("--min-face-px", type=float, default=defaults.min_face_px,
                         help="least face size in the source (px)")
    prepare.add_argument("--min-sharpness", type=float, default=defaults.min_sharpness,
                         help="least Laplacian variance per 512 px side")
    prepare.add_argument("--max-clips-per-track", type=int, default=defaults.max_clips_per_track)
    prepare.set_defaults(func=run_prepare)

    train = sub.add_parser("train", help="train a stage of the IP-FVR model (HF accelerate; YAML config)")
    train.add_argument("--config", type=Path, required=True, help="the stage's YAML config (docs/training.md)")
    train.set_defaults(func=run_train)


def run_prepare(args: argparse.Namespace) -> int:
    from ipfvr_core.faces.loader import load_analyzer
    from ipfvr_core.training.prepare import prepare_dataset

    config = PrepareConfig(resolution=args.resolution, clip_frames=args.clip_frames, min_face_px=args.min_face_px,
                           min_sharpness=args.min_sharpness, max_clips_per_track=args.max_clips_per_track)
    analyzer = load_analyzer(args.face_backend)
    manifest = prepare_dataset(args.sources, args.out, analyzer, config, backend_name=args.face_backend,
                               progress=lambda name: print(f"preparing {name}", file=sys.stderr))
    print(json.dumps({"clips": manifest.clips, "images": manifest.images, "rejected": manifest.rejected}))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from ipfvr_core.training.config import load_train_config
    from ipfvr_core.training.trainer import train

    weights = train(load_train_config(args.config))
    print(f"weights: {weights}")
    return 0
