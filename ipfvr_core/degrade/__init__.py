"""Seeded, temporally consistent video degradation: blur -> noise -> downscale -> noise -> x264 -> resize.

Why this order and these stages
    Restoration models are trained and judged on synthetic low-quality video whose recipe mirrors
    how real footage goes bad. We follow KEEP (``basicsr/data/vfhq_real_degradation2_dataset.py``,
    whose docstring names the order "blur-noise-downsample-crf-upsample"): blur with one Gaussian
    kernel, add Gaussian noise, downsample with a randomly chosen interpolation, add noise again,
    then a real H.264 round trip (libx264, yuv420p, random CRF) through PyAV in memory, and for the
    blind VFHQ-test setting a bicubic resize back to the input size so ground truth and degraded
    video line up pixel for pixel.

Why parameters are sampled once per video
    KEEP samples one kernel, one resize mode and one CRF per clip: a real camera or codec does not
    change its blur from frame to frame, and per-frame random blur would add a flicker that no real
    video has (and that a temporal model would learn to "fix"). So :func:`sample_params` draws every
    parameter once from ``numpy.random.default_rng(seed)``; only the noise *realisation* is drawn
    per frame (from the same generator, so the whole video is a pure function of the seed, up to
    x264: on one thread it was measured to encode the same input differently about once in 100-300
    runs on a loaded machine, a few frames some 35 dB apart; everything before and after it is
    bit-exact).

Where the ranges come from (see shared/research/models-training-eval.md)
    * DicFace on KEEP's VFHQ data: x4; blur kernel 21, iso/aniso p 0.7/0.3, sigma in [0.1, 10];
      noise sigma [0, 10]; CRF [18, 25].
    * RealBasicVSR stage 1: blur kernels 7-21 with sigma in [0.2, 3]; noise sigma [1, 30];
      resize scale [0.15, 1.5]; a video codec at a low bitrate.
    :data:`SEVERITIES` stays inside those blur and noise ranges and pushes CRF higher (into the high
    30s), because the evaluation wants visibly compressed video whose faces are still
    *detectable-ish*: finding the face is part of what is judged.

Every stage takes and returns ``(T, H, W, 3) uint8`` RGB arrays; stages can be used alone (e.g. in
a training data loader) or chained by :func:`degrade_video`. ``recipe`` holds the ranges and the draw,
``stages`` the stages, ``chain`` the whole chain.
"""

from ipfvr_core.degrade.chain import degrade_video
from ipfvr_core.degrade.recipe import SEVERITIES, DegradationConfig, DegradationParams, sample_params
from ipfvr_core.degrade.stages import (
    RESIZE_MODES,
    add_noise,
    blur,
    downscale,
    downscaled_size,
    gaussian_kernel,
    resize,
    x264_roundtrip,
)

__all__ = [
    "RESIZE_MODES",
    "SEVERITIES",
    "DegradationConfig",
    "DegradationParams",
    "add_noise",
    "blur",
    "degrade_video",
    "downscale",
    "downscaled_size",
    "gaussian_kernel",
    "resize",
    "sample_params",
    "x264_roundtrip",
]
