"""Identity feedback learning: the suffix-weighted temporal reward (training only).

For per-frame identity similarities s_1..s_F (cosine of each frame's face embedding with the
reference), the reward averages the means of every suffix:

    R = (1/F) * sum_{k=1..F} mean(s_k, ..., s_F)

Frame f appears in the suffixes k = 1..f, each with weight 1/(F-k+1), so its total weight
(1/F) * sum_{k<=f} 1/(F-k+1) rises with f: later frames weigh more, which is the paper's cure for
intra-clip identity drift. The weights sum to 1, so a constant similarity s gives R = s.
"""

from __future__ import annotations

import torch


def suffix_weights(num_frames: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(F,) weights w_f with R = sum_f w_f * s_f; increasing in f and summing to 1."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    inverse_suffix_len = 1.0 / torch.arange(num_frames, 0, -1, dtype=torch.float64)  # (F,) 1/(F-k+1) for k=1..F
    return (torch.cumsum(inverse_suffix_len, dim=0) / num_frames).to(dtype)  # (F,)


def suffix_weighted_reward(similarities: torch.Tensor) -> torch.Tensor:
    """Scalar R = (1/F) * sum_k mean(s_k..s_F) of (F,) per-frame similarities; differentiable."""
    if similarities.ndim != 1 or similarities.shape[0] < 1:
        raise ValueError(f"similarities must have shape (F,) with F >= 1, got {tuple(similarities.shape)}")
    num_frames = similarities.shape[0]
    suffix_sums = torch.flip(torch.cumsum(torch.flip(similarities, [0]), dim=0), [0])  # (F,) sum of s_k..s_F
    suffix_lengths = torch.arange(num_frames, 0, -1, device=similarities.device, dtype=similarities.dtype)  # (F,)
    return (suffix_sums / suffix_lengths).mean()
