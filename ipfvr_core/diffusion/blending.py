"""Exponential inter-clip blending (pure functions).

At every denoising step, after the scheduler update, frame j of the current clip's overlap
(j = 0..m-1) is pulled toward the previous clip's cached latent of the same frame at the same step:

    z_k[j] <- a_j * z_{k-1}[F-m+j] + (1 - a_j) * z_k[j],   a_j = fade(t) * exp(-beta * (j + offset))

With ``offset = 0`` (the design text) a_0 = 1, so the first overlap frame is pinned to the previous
clip and beta -> inf leaves only that pin; with ``offset = 1`` every a_j < 1 and beta -> inf turns
blending off entirely. ``beta = 0`` copies the whole overlap. In pixels, the overlap frames of the two
clips' outputs are cross-faded with a linear ramp.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def blend_weights(overlap: int, beta: float, index_offset: int = 0) -> torch.Tensor:
    """(overlap,) float32 weights a_j = exp(-beta * (j + index_offset)) of the previous clip's latents."""
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if beta < 0 or math.isnan(beta):
        raise ValueError(f"beta must be >= 0, got {beta}")
    weights = []
    for j in range(overlap):
        k = j + index_offset
        weights.append(1.0 if k == 0 else math.exp(-beta * k))  # k == 0: exp(-inf * 0) is 1 by continuity in beta
    return torch.tensor(weights, dtype=torch.float32)


def step_fade(step_index: int, num_steps: int, fade_steps: int) -> float:
    """Factor on the blending weights at step ``step_index`` (0-based): 1, then to 0 over the last ``fade_steps``."""
    if fade_steps <= 0:
        return 1.0
    remaining = num_steps - 1 - step_index  # steps still to come after this one
    return min(1.0, max(0.0, remaining / fade_steps))


def blend_overlap(current: torch.Tensor, previous: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Blend the first m frames of ``current`` (B, C, F, h, w) with ``previous`` (B, C, m, h, w); returns a new tensor.

    ``weights`` is (m,), the weight of ``previous`` per overlap frame. Frames past m are unchanged.
    """
    m = weights.shape[0]
    if previous.shape[2] != m or current.shape[2] < m:
        raise ValueError(
            f"overlap mismatch: weights {m}, previous {previous.shape[2]} frames, current {current.shape[2]}"
        )
    if m == 0:
        return current
    a = weights.to(device=current.device, dtype=current.dtype).view(1, 1, m, 1, 1)  # (1, 1, m, 1, 1)
    head = a * previous.to(current.dtype) + (1 - a) * current[:, :, :m]  # (B, C, m, h, w)
    return torch.cat([head, current[:, :, m:]], dim=2)  # (B, C, F, h, w)


def crossfade_weights(overlap: int) -> np.ndarray:
    """(overlap,) float32 weights of the *previous* clip's output frames: a linear ramp from m/(m+1) to 1/(m+1)."""
    return np.array([(overlap - j) / (overlap + 1) for j in range(overlap)], dtype=np.float32)


def crossfade(previous: np.ndarray, current: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Cross-fade float frames ``previous`` and ``current`` (m, H, W, 3) with per-frame weights of ``previous``."""
    if previous.shape != current.shape or previous.shape[0] != weights.shape[0]:
        raise ValueError(f"cross-fade shape mismatch: {previous.shape}, {current.shape}, {weights.shape}")
    w = weights.reshape(-1, 1, 1, 1)  # (m, 1, 1, 1)
    return (w * previous + (1.0 - w) * current).astype(np.float32)
