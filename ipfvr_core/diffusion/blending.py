"""Exponential inter-clip blending (pure functions).

At every denoising step, after the scheduler update, frame j of the current clip's overlap
(j = 0..m-1) is pulled toward the previous clip's cached latent of the same frame at the same step:

    z_k[j] <- a_j * z_{k-1}[F-m+j] + (1 - a_j) * z_k[j],   a_j = fade(t) * exp(-beta * (j + offset))

With ``offset = 0`` (the design text) a_0 = 1, so the first overlap frame is pinned to the previous
clip and beta -> inf leaves only that pin; with ``offset = 1`` every a_j < 1 and beta -> inf turns
blending off entirely. ``beta = 0`` copies the whole overlap. In pixels, the overlap frames of the two
clips' outputs are cross-faded with a linear ramp.

What the weight means. ``a_j`` is a *per-step* weight, not the final mixing weight. Write
w_ij = fade_i * a_j for the weight applied after step i. When the sampler step maps the difference
between the two clips' latents linearly and alike in both clips (exact for a per-frame linear
denoiser, such as the ideal denoiser of Gaussian data, under DDIM; to first order otherwise), every
blend shrinks that difference by (1 - w_ij), and the final overlap frame is

    z_k[j] = W_j * z_{k-1}[F-m+j] + (1 - W_j) * z_k'[j],   W_j = 1 - prod_i (1 - w_ij)

where z_{k-1} is the previous clip's final latents and z_k' the current clip's without blending
(:func:`effective_blend_weights`): with K blended steps and no fade, W_j = 1 - (1 - a_j)**K, e.g.
beta 0.5 and K = 2 turn a_j = 0.61/0.37/0.22 into W_j = 0.85/0.60/0.40. With
``IPFVRConfig.blend_calibrated`` the per-step weights are instead chosen so that W_j = a_j
(:func:`calibrated_step_weights`); ``a_0 = 1`` stays a pin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def effective_blend_weights(step_weights: torch.Tensor) -> torch.Tensor:
    """(m,) final weights W_j = 1 - prod_i (1 - w_ij) of the previous clip, from per-step weights (n, m)."""
    return 1.0 - torch.prod(1.0 - step_weights.double(), dim=0).float()  # (m,)


def calibrated_step_weights(alphas: torch.Tensor, fades: Sequence[float]) -> torch.Tensor:
    """(n, m) per-step weights fade_i * c_j with c_j in [0, 1] such that the final weight is ``alphas[j]``.

    ``fades`` (n,) are the step factors (:func:`step_fade`). c_j solves prod_i (1 - fade_i c_j) = 1 - alpha_j
    (bisection; the product falls with c); where even c_j = 1 cannot reach alpha_j (every fade < 1),
    c_j = 1. With no fade, c_j = 1 - (1 - alpha_j)**(1/n).
    """
    f = torch.tensor(list(fades), dtype=torch.float64)  # (n,)
    targets = 1.0 - alphas.double()  # (m,) the current clip's final share
    lo = torch.zeros_like(targets)  # (m,)
    hi = torch.ones_like(targets)  # (m,)
    for _ in range(60):  # interval 2**-60: exact in float32
        mid = (lo + hi) / 2
        keep = torch.prod(1.0 - f[:, None] * mid[None, :], dim=0)  # (m,) share left to the current clip
        too_weak = keep > targets
        lo = torch.where(too_weak, mid, lo)
        hi = torch.where(too_weak, hi, mid)
    c = torch.where(targets <= 0.0, torch.ones_like(hi), hi)  # alpha_j = 1: a pin
    c = torch.where(targets >= 1.0, torch.zeros_like(c), c)  # alpha_j = 0: no blending at all
    return (f[:, None] * c[None, :]).float()  # (n, m)


def step_blend_weights(alphas: torch.Tensor, num_steps: int, fade_steps: int, *, calibrated: bool) -> torch.Tensor:
    """(n, m) weights of the previous clip applied after each of ``num_steps`` steps.

    ``fade_i * alphas`` (the design text), or with ``calibrated`` the per-step weights whose
    compounded final weight is ``alphas`` (:func:`calibrated_step_weights`).
    """
    fades = [step_fade(i, num_steps, fade_steps) for i in range(num_steps)]
    if calibrated:
        return calibrated_step_weights(alphas, fades)  # (n, m)
    return torch.tensor(fades, dtype=torch.float32)[:, None] * alphas[None, :]  # (n, m)


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
    previous = previous.to(device=current.device, dtype=current.dtype)
    head = a * previous + (1 - a) * current[:, :, :m]  # (B, C, m, h, w)
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
