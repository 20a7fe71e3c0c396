"""``ipfvr weights``: write a tiny random checkpoint, convert public weights, check a weights folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ipfvr_core.errors import ConfigError


def add_commands(sub: argparse._SubParsersAction) -> None:
    add_weights(sub)


def add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="manage IP-FVR weight folders")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    tiny = wsub.add_parser("init-tiny", help="write a tiny random checkpoint in the real loader's layout")
    tiny.add_argument("dir", type=Path, help="folder to create")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--id-embedding-dim",
        type=int,
        choices=(128, 512),
        default=128,
        help="128 matches the dlib backend, 512 the insightface ArcFace (default 128)",
    )
    tiny.add_argument("--resolution", type=int, default=64, help="aligned face size of the tiny model (default 64)")
    tiny.set_defaults(func=run_weights_init_tiny)
    convert = wsub.add_parser(
        "convert", help="write a weights folder from SD-1.5, AnimateDiff and IP-Adapter-FaceID (README: public weights)"
    )
    convert.add_argument(
        "--sd15",
        type=Path,
        required=True,
        help="SD-1.5 in diffusers format (unet/, vae/, text_encoder/, tokenizer/, scheduler/)",
    )
    convert.add_argument(
        "--motion-adapter",
        type=Path,
        required=True,
        help="AnimateDiff motion adapter folder (guoyww/animatediff-motion-adapter-v1-5-2)",
    )
    convert.add_argument(
        "--ip-adapter-faceid",
        type=Path,
        required=True,
        help="ip-adapter-faceid_sd15.bin or ip-adapter-faceid-plusv2_sd15.bin (.safetensors too)",
    )
    convert.add_argument(
        "--faceid-lora",
        type=Path,
        help="a separate FaceID LoRA file (e.g. ip-adapter-faceid_sd15_lora.safetensors) to use "
        "instead of the LoRA inside the checkpoint",
    )
    convert.add_argument("--image-encoder", type=Path, help="CLIP ViT-H vision tower folder (FaceID-Plus-v2 only)")
    convert.add_argument("-o", "--output", type=Path, required=True, help="weights folder to write")
    convert.add_argument(
        "--init-strength",
        type=float,
        default=0.6,
        help="SDEdit start: lower keeps more of the input video, higher restores more (default 0.6)",
    )
    convert.add_argument(
        "--identity-scale", type=float, default=1.0, help="lambda of the identity cross-attention (default 1.0)"
    )
    convert.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="any other ipfvr/config.json field, e.g. --set num_inference_steps=30",
    )
    convert.add_argument("--overwrite", action="store_true", help="replace the weights in an existing folder")
    convert.set_defaults(func=run_weights_convert)
    check = wsub.add_parser("check", help="load a weights folder and print what it holds")
    check.add_argument("dir", type=Path)
    check.set_defaults(func=run_weights_check)


def run_weights_init_tiny(args: argparse.Namespace) -> int:
    from ipfvr_core.diffusion.random_checkpoint import write_tiny_checkpoint

    path = write_tiny_checkpoint(
        args.dir, seed=args.seed, id_embedding_dim=args.id_embedding_dim, resolution=args.resolution
    )
    print(f"wrote a tiny random IP-FVR checkpoint to {path}")
    print("warning: its weights are random: it tests the plumbing and restores nothing", file=sys.stderr)
    return 0


def run_weights_convert(args: argparse.Namespace) -> int:
    if (args.output / "ipfvr" / "config.json").exists() and not args.overwrite:  # before torch is imported
        raise ConfigError(f"{args.output} already holds weights; pass --overwrite to replace them", field="output")
    from ipfvr_core.diffusion.convert import convert_faceid

    overrides: dict[str, object] = {"init_strength": args.init_strength, "identity_scale": args.identity_scale}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise ConfigError(f"expected FIELD=JSON, got {item!r}", field="set")
        try:
            overrides[field] = json.loads(value)
        except ValueError:
            overrides[field] = value  # a bare string, e.g. --set sampler=unipc
    report = convert_faceid(
        sd15=args.sd15,
        motion_adapter=args.motion_adapter,
        ip_adapter_faceid=args.ip_adapter_faceid,
        faceid_lora=args.faceid_lora,
        image_encoder=args.image_encoder,
        output=args.output,
        config_overrides=overrides,
    )
    print(json.dumps(report.to_dict(), indent=2))
    print(
        f"wrote {report.variant} weights to {report.output}; check them with: ipfvr weights check {args.output}",
        file=sys.stderr,
    )
    return 0


def run_weights_check(args: argparse.Namespace) -> int:
    from ipfvr_core.engines.ipfvr import IPFVREngine

    engine = IPFVREngine.from_pretrained(args.dir, device="cpu")
    print(json.dumps(engine.versions(), indent=2))
    for warning in engine.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
