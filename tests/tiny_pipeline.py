"""Inputs and runs of the tiny random IP-FVR pipeline that several test modules share.

Its fixtures (``one_torch_thread``, ``tiny_dir``, ``pipe``) are in conftest.py.
"""

from __future__ import annotations

import numpy as np
import torch

from ipfvr_core.diffusion.pipeline_ipfvr import IPFVRPipeline

FRAMES = 6


def lq(n: int = FRAMES, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(n, 64, 64, 3) * 255).astype(np.uint8)


def emb(seed: int = 0, dim: int = 128) -> np.ndarray:
    return np.random.RandomState(seed).randn(1, dim).astype(np.float32)


def run(pipe: IPFVRPipeline, seed: int = 0, **kwargs: object) -> np.ndarray:
    args: dict[str, object] = {
        "prompt": "a man",
        "negative_prompts": ["blurry", "woman"],
        "guidance_weights": [1.0, 0.5],
        "id_embeddings": emb(),
        "generator": torch.Generator().manual_seed(seed),
    }
    args.update(kwargs)
    frames = args.pop("frames", FRAMES)
    return pipe(lq(frames), **args).frames  # type: ignore[arg-type]
