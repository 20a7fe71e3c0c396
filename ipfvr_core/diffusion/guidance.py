"""Multi-stream negative guidance (pure functions).

One positive condition c+ and S negative conditions c-_s with their own weights:

    eps = eps(c+) + sum_s w_s * (eps(c+) - eps(c-_s))

With W = sum_s w_s (W > 0) this is exactly classifier-free guidance at scale 1 + W against the
weighted mean negative prediction: eps = eps(c+) + W * (eps(c+) - sum_s (w_s / W) eps(c-_s)). So
S = 1 is CFG at scale 1 + w, and the engine's single knob (a job's ``guidance_scale`` g rescales
the stream weights to sum to g, keeping their ratios) is CFG at scale 1 + g, not g. A stream of
weight 0 changes nothing; the pipeline drops it before the U-Net call.

The 1+S conditions are stacked on the batch axis (positive first) so that one U-Net call per step
evaluates all of them; the helpers here build that batch and split the result back.
``condition_chunks`` splits the stack into several calls when memory asks for it
(``IPFVRConfig.condition_batch_size``); the result is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NegativeStream:
    """One negative condition: a name for reports, its text and its guidance weight."""

    name: str  # "quality" | "attribute" | "user" | caller-defined
    text: str
    weight: float


def active_streams(streams: Sequence[NegativeStream]) -> list[NegativeStream]:
    """The streams that change the result: non-empty text and a non-zero weight."""
    return [s for s in streams if s.text.strip() and s.weight != 0.0]


def combine_negative_guidance(predictions: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Combine stacked predictions (1+S, ...) (positive first) into one (...) prediction."""
    if predictions.shape[0] != 1 + len(weights):
        raise ValueError(f"expected {1 + len(weights)} stacked predictions, got {predictions.shape[0]}")
    positive = predictions[0]
    out = positive.clone()
    for s, weight in enumerate(weights):
        out = out + weight * (positive - predictions[1 + s])
    return out


def stack_latents(latents: torch.Tensor, num_conditions: int) -> torch.Tensor:
    """Repeat one clip's latents (1, C, F, h, w) for every condition: (num_conditions, C, F, h, w)."""
    if latents.shape[0] != 1:
        raise ValueError(f"expected a batch of one clip, got {latents.shape[0]}")
    return latents.expand(num_conditions, *latents.shape[1:])  # (N, C, F, h, w)


def frame_condition_embeds(condition_embeds: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Per-condition token sequences (N, L, D) repeated for every frame: (N*F, L, D), condition-major.

    UNetMotionModel folds frames into the batch as (B*F, ...) with B outer, so each condition's
    tokens repeat F times in a row.
    """
    return condition_embeds.repeat_interleave(num_frames, dim=0)  # (N*F, L, D)


def condition_chunks(num_conditions: int, batch_size: int) -> list[slice]:
    """Slices of the condition axis evaluated per U-Net call; ``batch_size`` 0 means all in one call."""
    size = num_conditions if batch_size <= 0 else batch_size
    return [slice(i, min(i + size, num_conditions)) for i in range(0, num_conditions, size)]
