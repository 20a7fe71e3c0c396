"""The whole chain: blur -> noise -> downscale -> noise -> x264 -> resize, with one recipe drawn from a seed."""

from __future__ import annotations

import numpy as np

from ipfvr_core.degrade.recipe import DegradationConfig, DegradationParams, sample_params
from ipfvr_core.degrade.stages import add_noise, blur, check_frames, gaussian_kernel, resize, x264_roundtrip
from ipfvr_core.errors import InputError


def degrade_video(
    frames: np.ndarray, config: DegradationConfig, seed: int, *, fps: float = 25.0
) -> tuple[np.ndarray, DegradationParams]:
    """Degrade a whole clip with one recipe drawn from ``seed``; returns (frames, the recipe).

    Same frames, config and seed give the same output, up to x264's rare variance (module
    docstring). ``fps`` is the clip's frame rate,
    passed to x264 (its rate control depends on it).
    """
    check_frames(frames)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"must be a non-negative integer, got {seed!r}", field="seed", code="invalid_option")
    _, height, width, _ = frames.shape
    rng = np.random.default_rng(int(seed))
    params = sample_params(config, (width, height), rng, int(seed))
    kernel = gaussian_kernel(params.kernel_size, params.blur_sigma_x, params.blur_sigma_y, params.blur_angle_deg)
    out = blur(frames, kernel)
    out = add_noise(out, params.noise_sigma_pre, rng, gray=params.gray_noise_pre)
    out = resize(out, params.lr_size, params.downscale_mode)
    out = add_noise(out, params.noise_sigma_post, rng, gray=params.gray_noise_post)
    out = x264_roundtrip(out, params.crf, preset=params.x264_preset, fps=fps)
    out = resize(out, params.out_size, "bicubic")
    return out, params
