"""GPU check of the IP-FVR pipeline at real SD-1.5 + AnimateDiff shapes, with random weights.

Builds the pipeline through the same assembly code as the weights loader (widened conv_in, identity
processors, identity encoder), on the GPU, with random seeded stock components of SD-1.5 shapes
(U-Net blocks 320/640/1280/1280, cross-attention 768, motion modules). For one 24-frame 512x512
clip with 1 + S conditions it reports, in fp32 and in half precision:

* seconds per denoising step (wall, and the U-Net's share), peak GPU memory, frames per second;
* orchestration overhead: 1 - (summed U-Net time / denoising-loop time);
* S negative streams batched in one U-Net call against one call per condition;
* U-Net frame-evaluations per output frame for a 100-frame video in 24-frame clips at overlap 8.

It fails (exit 1) when half precision and fp32 disagree beyond tolerance: the relative L2 error of
one U-Net evaluation on identical inputs, and the mean absolute difference of the decoded frames.
Without a CUDA device it prints a message and exits 0. ``--device cpu --size tiny`` runs the same
code on the tiny shapes as a smoke test.

    python bench/gpu_check.py [--steps 10] [--streams 3] [--compile] [--json out.json] [--weights DIR]

``--weights DIR`` measures a weights folder (e.g. one ``ipfvr weights convert`` wrote) instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipfvr_core.diffusion.clips import unet_frame_evaluations
from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.diffusion.guidance import frame_condition_embeds
from ipfvr_core.diffusion.pipeline_ipfvr import IPFVRPipeline
from ipfvr_core.diffusion.random_backbone import random_backbone
from ipfvr_core.diffusion.weights import assemble_pipeline, load_pipeline

NEGATIVES = ["blurry, low quality, jpeg artifacts, noise, deformed face", "woman, child", "cartoon, painting", "hat"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class UNetTimer:
    """Wraps the pipeline's U-Net call; sums the synchronised wall time of every call."""

    def __init__(self, pipe: IPFVRPipeline, device: torch.device) -> None:
        self.inner: Callable[..., Any] = pipe._unet_forward
        self.device = device
        self.seconds = 0.0
        self.calls = 0
        pipe._unet_forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _sync(self.device)
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        _sync(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def run_once(
    pipe: IPFVRPipeline, lq: np.ndarray, emb: np.ndarray, streams: int, device: torch.device
) -> dict[str, Any]:
    """One pipeline call with timing of the loop, the U-Net calls and peak memory."""
    timer = UNetTimer(pipe, device)
    stamps: list[float] = []

    def on_step(_p: IPFVRPipeline, _i: int, _t: torch.Tensor, _k: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        _sync(device)
        stamps.append(time.perf_counter())
        return {}

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    out = pipe(
        lq,
        prompt="a close-up video of a middle-aged man, sharp focus, high quality",
        negative_prompts=NEGATIVES[:streams],
        guidance_weights=[1.0] * streams,
        id_embeddings=emb,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=on_step,
    )
    _sync(device)
    total = time.perf_counter() - start
    pipe._unet_forward = timer.inner
    steps = len(stamps)
    loop = stamps[-1] - stamps[0] if steps > 1 else total
    per_step = loop / (steps - 1) if steps > 1 else total
    unet_in_loop = (
        timer.seconds * (steps - 1) / steps if steps > 1 else timer.seconds
    )  # the first step precedes stamps[0]
    return {
        "frames": out.frames,
        "total_s": total,
        "s_per_step": per_step,
        "unet_s_per_step": timer.seconds / max(steps, 1),
        "unet_calls_per_step": timer.calls / max(steps, 1),
        "orchestration_overhead": max(0.0, 1.0 - unet_in_loop / loop) if steps > 1 else float("nan"),
        "fps": lq.shape[0] / total,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def train_step_probe(
    pipe: IPFVRPipeline, stage: str, frames: int, device: torch.device, dtype: torch.dtype, steps: int = 3
) -> dict[str, Any]:
    """Seconds per optimizer step and peak memory of one training stage on random data, fp32 weights
    under ``dtype`` autocast with gradient checkpointing (what ``ipfvr train`` runs at this shape).

    ``restore``: the diffusion loss, trained adapters (LQ conv_in, identity K/V and projection);
    ``identity``: the same loss, a LoRA psi_id alone; ``feedback``: one U-Net step with gradients
    to x0, a differentiable VAE decode of every frame and FaceNet on them (the rollout without
    gradients before that step is inference, timed above).
    """
    from torch.nn import functional as F

    from ipfvr_core.diffusion.lora import add_identity_lora, delete_identity_lora
    from ipfvr_core.training.model import RestoreModel, decode_latents, trainable_parameters

    unet, encoder = pipe.unet, pipe.identity_encoder
    if stage == "identity":
        add_identity_lora(unet, "probe", pipe.ipfvr_config)
        unet.set_adapters(["probe"])
    params = trainable_parameters(unet, encoder, motion=False, lora="probe" if stage == "identity" else None)
    unet.enable_gradient_checkpointing()
    model = RestoreModel(unet, encoder).train()
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    judge = None
    if stage == "feedback":
        from ipfvr_core.identity_nets.facenet import load_facenet

        judge = load_facenet().to(device).requires_grad_(False)
    gen = torch.Generator().manual_seed(7)
    size = pipe.ipfvr_config.resolution // pipe.vae_scale_factor
    model_input = torch.randn(1, 2 * pipe.latent_channels, frames, size, size, generator=gen).to(device)
    target = torch.randn(1, pipe.latent_channels, frames, size, size, generator=gen).to(device)
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen).to(device)
    embedding = torch.randn(1, pipe.ipfvr_config.id_embedding_dim, generator=gen).to(device)
    timesteps, keep = torch.tensor([500], device=device), torch.ones(1, device=device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps + 1):  # the first step warms up
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            predicted = model(model_input, timesteps, text, embedding, keep)  # (1, C, F, h, w)
            if judge is None:
                loss = F.mse_loss(predicted.float(), target)
            else:
                faces = F.interpolate(decode_latents(pipe, predicted), size=judge.input_size, mode="bilinear")
                loss = 1.0 - judge(faces.float()).mean(dim=0).norm()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - start)
    unet.disable_gradient_checkpointing()
    unet.requires_grad_(False)
    encoder.requires_grad_(False)
    if stage == "identity":
        delete_identity_lora(unet, "probe")
    return {
        "s_per_step": float(np.median(times[1:])),
        "trained_params_m": sum(p.numel() for p in params) / 1e6,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


@torch.no_grad()
def unet_probe(
    pipe: IPFVRPipeline, frames: int, streams: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """One U-Net evaluation on fixed seeded inputs (identical across dtypes), returned as float32 on CPU."""
    gen = torch.Generator().manual_seed(123)
    size = pipe.ipfvr_config.resolution // pipe.vae_scale_factor
    sample = torch.randn(1 + streams, 2 * pipe.latent_channels, frames, size, size, generator=gen)  # (1+S, 2C, F, h, w)
    text = torch.randn(
        1 + streams, 77 + pipe.ipfvr_config.num_identity_tokens, pipe.unet.config.cross_attention_dim, generator=gen
    )
    states = frame_condition_embeds(text, frames)  # ((1+S)*F, L+N, D)
    out = pipe.unet(sample.to(device, dtype), 500, encoder_hidden_states=states.to(device, dtype)).sample
    return out.float().cpu()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--streams", type=int, default=3, help="negative streams S (0-4)")
    parser.add_argument("--half", choices=("float16", "bfloat16"), default="float16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the U-Net")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--unet-tolerance", type=float, default=2e-2, help="max relative L2 error of one U-Net eval")
    parser.add_argument("--frame-tolerance", type=float, default=2e-2, help="max mean |frame difference| in [0, 1]")
    parser.add_argument("--skip-unbatched", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="a weights folder (e.g. from `ipfvr weights convert`) instead of random --size weights",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="also time one optimizer step of each training stage (restore, identity, feedback)",
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device available; nothing measured (run on a GPU machine, or --device cpu --size tiny)"
        )
        return 0
    if not 0 <= args.streams <= len(NEGATIVES):
        parser.error(f"--streams must be in [0, {len(NEGATIVES)}]")
    half = getattr(torch, args.half)
    config = IPFVRConfig(
        resolution=args.resolution,
        num_inference_steps=args.steps,
        clip_length=args.frames,
        overlap=min(8, args.frames - 1),
        id_embedding_dim=512,
        channels_last=device.type == "cuda" and not args.no_channels_last,
        compile=args.compile,
        vae_slice_frames=8,
    ).validate()
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "size": args.size,
        "resolution": args.resolution,
        "frames": args.frames,
        "steps": args.steps,
        "conditions": 1 + args.streams,
        "compile": args.compile,
        "channels_last": config.channels_last,
        "sdpa_flash": bool(device.type == "cuda" and torch.backends.cuda.flash_sdp_enabled()),
        "unet_frame_evals_per_output_frame_100f_overlap8": unet_frame_evaluations(100, 24, 8) / 100,
    }
    report["unet_frame_evals_per_output_frame_all_conditions"] = report[
        "unet_frame_evals_per_output_frame_100f_overlap8"
    ] * (1 + args.streams)

    build_start = time.perf_counter()
    if args.weights is not None:  # the folder's own config, with this run's shape and runtime fields
        fields = (
            "resolution",
            "num_inference_steps",
            "clip_length",
            "overlap",
            "channels_last",
            "compile",
            "vae_slice_frames",
        )
        pipe = load_pipeline(
            args.weights, device=device, dtype=torch.float32, overrides={f: getattr(config, f) for f in fields}
        )
        report["size"] = f"weights:{args.weights.name}"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            parts = random_backbone(
                args.size, resolution=args.resolution, tokenizer_dir=Path(tmp) / "tokenizer", seed=0, device=device
            )
        pipe = assemble_pipeline(parts, config, device=device, dtype=torch.float32, seed=0)
        del parts
    report["build_s"] = time.perf_counter() - build_start
    report["unet_params_m"] = sum(p.numel() for p in pipe.unet.parameters()) / 1e6

    rng = np.random.RandomState(0)
    lq = rng.randint(0, 256, size=(args.frames, args.resolution, args.resolution, 3), dtype=np.uint8)
    emb = rng.randn(1, pipe.ipfvr_config.id_embedding_dim).astype(np.float32)
    results: dict[str, dict[str, Any]] = {}
    probes: dict[str, torch.Tensor] = {}
    for name, dtype in (("float32", torch.float32), (args.half, half)):
        if dtype != torch.float32:
            pipe.to(dtype)
        warm = pipe.with_config(num_inference_steps=2)
        run_once(warm, lq[: min(4, args.frames)], emb, args.streams, device)  # warm-up (and compile)
        probes[name] = unet_probe(pipe, args.frames, args.streams, device, dtype)
        batched = run_once(pipe, lq, emb, args.streams, device)
        frames = batched.pop("frames")
        entry = {k: v for k, v in batched.items()}
        if not args.skip_unbatched and args.streams > 0:
            unbatched = run_once(pipe.with_config(condition_batch_size=1), lq, emb, args.streams, device)
            unbatched.pop("frames")
            entry["unbatched_s_per_step"] = unbatched["s_per_step"]
            entry["batched_speedup"] = unbatched["s_per_step"] / batched["s_per_step"]
        entry["frames_out"] = frames
        results[name] = entry

    ref, low = probes["float32"], probes[args.half]
    unet_rel = float((ref - low).norm() / ref.norm().clamp_min(1e-12))
    frames_diff = float(np.abs(results["float32"]["frames_out"] - results[args.half]["frames_out"]).mean())
    finite = bool(np.isfinite(results[args.half]["frames_out"]).all() and torch.isfinite(low).all())
    for entry in results.values():
        entry.pop("frames_out")
    report["results"] = results
    report["agreement"] = {
        "unet_relative_l2": unet_rel,
        "frames_mean_abs_diff": frames_diff,
        "finite": finite,
        "unet_tolerance": args.unet_tolerance,
        "frame_tolerance": args.frame_tolerance,
    }
    ok = finite and unet_rel <= args.unet_tolerance and frames_diff <= args.frame_tolerance
    report["ok"] = ok

    print(
        f"gpu_check on {report['device']} ({report['size']}, {args.frames} frames at {args.resolution}px, "
        f"{1 + args.streams} conditions, {args.steps} steps, U-Net {report['unet_params_m']:.0f}M params)"
    )
    for name, entry in results.items():
        peak = "n/a" if entry["peak_gib"] is None else f"{entry['peak_gib']:.2f} GiB"
        line = (
            f"  {name:9s} {entry['s_per_step']:.3f} s/step (U-Net {entry['unet_s_per_step']:.3f}), "
            f"{entry['fps']:.2f} fps, peak {peak}, overhead {entry['orchestration_overhead']:.1%}"
        )
        if "batched_speedup" in entry:
            line += f", unbatched {entry['unbatched_s_per_step']:.3f} s/step (batched x{entry['batched_speedup']:.2f})"
        print(line)
    print(
        f"  U-Net frame-evals per output frame (100 frames, 24-frame clips, overlap 8): "
        f"{report['unet_frame_evals_per_output_frame_100f_overlap8']:.2f} per condition, "
        f"{report['unet_frame_evals_per_output_frame_all_conditions']:.2f} with all conditions"
    )
    print(
        f"  {args.half} vs float32: U-Net rel L2 {unet_rel:.2e} (tol {args.unet_tolerance:.0e}), "
        f"frames mean |diff| {frames_diff:.2e} (tol {args.frame_tolerance:.0e}), finite={finite}"
    )
    if args.train:
        pipe.to(torch.float32)
        report["training"] = {
            stage: train_step_probe(pipe, stage, args.frames, device, half)
            for stage in ("restore", "identity", "feedback")
        }
        for stage, entry in report["training"].items():
            peak = "n/a" if entry["peak_gib"] is None else f"{entry['peak_gib']:.2f} GiB"
            print(
                f"  train {stage:8s} {entry['s_per_step']:.3f} s/step ({args.half} autocast, gradient "
                f"checkpointing, {entry['trained_params_m']:.3g}M trained), peak {peak}"
            )
    print("  OK" if ok else "  FAIL: half precision disagrees with float32")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
