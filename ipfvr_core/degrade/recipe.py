"""A degradation recipe: the ranges a video's parameters are drawn from, the named severities, one video's draw."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ipfvr_core.degrade.stages import RESIZE_MODES, downscaled_size
from ipfvr_core.errors import ConfigError
from ipfvr_core.video_io import X264_PRESETS


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges a video's degradation parameters are drawn from (uniformly, once per video)."""

    blur_kernel_size: int = 21  # odd side of the blur kernel in pixels (KEEP/DicFace: 21)
    blur_sigma_range: tuple[float, float] = (0.2, 3.0)  # Gaussian sigma in input pixels (RealBasicVSR: [0.2, 3])
    anisotropic_prob: float = 0.0  # chance the kernel is anisotropic (own sigma per axis, random angle; DicFace 0.3)
    downscale_range: tuple[float, float] = (4.0, 4.0)  # downscale factor (x2-x4); sizes are floored to even
    downscale_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")  # interpolations picked from uniformly
    noise_sigma_range: tuple[float, float] = (0.0, 10.0)  # Gaussian noise sigma in 0-255 units, both noise stages
    gray_noise_prob: float = 0.5  # chance a noise stage adds the same noise to R, G and B (KEEP: 0.5)
    crf_range: tuple[int, int] = (18, 25)  # x264 CRF, both ends included (DicFace: [18, 25]; 51 = worst)
    x264_preset: str = "medium"  # x264 speed preset of the round trip (FFmpeg's default)
    resize_back: bool = True  # bicubic back to the input size (VFHQ-test blind setting) so GT and output align

    def __post_init__(self) -> None:
        k = self.blur_kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0 or k > 99:
            raise ConfigError(f"must be an odd integer from 3 to 99, got {k!r}", field="blur_kernel_size")
        _check_range(self.blur_sigma_range, "blur_sigma_range", low=0.0, high=50.0, low_open=True)
        _check_probability(self.anisotropic_prob, "anisotropic_prob")
        _check_range(self.downscale_range, "downscale_range", low=1.0, high=8.0)
        modes = self.downscale_modes
        if not isinstance(modes, tuple) or not modes or any(m not in RESIZE_MODES for m in modes):
            raise ConfigError(
                f"must be a non-empty tuple drawn from {sorted(RESIZE_MODES)}, got {modes!r}", field="downscale_modes"
            )
        _check_range(self.noise_sigma_range, "noise_sigma_range", low=0.0, high=100.0)
        _check_probability(self.gray_noise_prob, "gray_noise_prob")
        crf = self.crf_range
        if not (isinstance(crf, tuple) and len(crf) == 2 and all(type(c) is int for c in crf)):
            raise ConfigError(f"must be a (low, high) tuple of integers, got {crf!r}", field="crf_range")
        if not 0 <= crf[0] <= crf[1] <= 51:
            raise ConfigError(f"must satisfy 0 <= low <= high <= 51, got {crf!r}", field="crf_range")
        if self.x264_preset not in X264_PRESETS:
            raise ConfigError(
                f"must be one of {', '.join(X264_PRESETS)}, got {self.x264_preset!r}", field="x264_preset"
            )
        if not isinstance(self.resize_back, bool):
            raise ConfigError(f"must be a bool, got {self.resize_back!r}", field="resize_back")


def _check_range(value: object, field: str, *, low: float, high: float, low_open: bool = False) -> None:
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise ConfigError(f"must be a (low, high) tuple of finite numbers, got {value!r}", field=field)
    lo, hi = value
    if (lo <= low if low_open else lo < low) or hi > high or lo > hi:
        bound = f"{low} < low" if low_open else f"{low} <= low"
        raise ConfigError(f"must satisfy {bound} <= high <= {high}, got {value!r}", field=field)


def _check_probability(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"must be a probability in [0, 1], got {value!r}", field=field)


# Named recipes for evaluation. Blur and noise stay inside the DicFace/RealBasicVSR ranges above;
# scale goes x2 -> x3 -> x4 and CRF climbs from DicFace's [18, 25] into the high 30s. "severe" at
# 176x144 leaves a 44x36 frame, about the limit where a face is still found now and then.
# Measured on pristine carphone (every 2nd frame, 4 seeds, dlib HOG in recall mode, every 8th
# frame checked): a face was found in 0/50/75/88 % of checked frames for "severe", 88-100 % for
# "moderate" (the shipped carphone_distorted: 60 %).
SEVERITIES: dict[str, DegradationConfig] = {
    "mild": DegradationConfig(
        blur_sigma_range=(0.4, 1.2),
        downscale_range=(2.0, 2.0),
        noise_sigma_range=(0.0, 4.0),
        crf_range=(20, 26),
    ),
    "moderate": DegradationConfig(
        blur_sigma_range=(0.8, 2.0),
        anisotropic_prob=0.3,
        downscale_range=(3.0, 3.0),
        noise_sigma_range=(2.0, 8.0),
        crf_range=(27, 33),
    ),
    "severe": DegradationConfig(
        blur_sigma_range=(1.0, 2.5),
        anisotropic_prob=0.3,
        downscale_range=(4.0, 4.0),
        noise_sigma_range=(3.0, 10.0),
        crf_range=(32, 38),
    ),
}


@dataclass(frozen=True)
class DegradationParams:
    """The recipe one video was degraded with (drawn by :func:`sample_params`); printable in reports."""

    seed: int  # seed of the generator everything (noise included) was drawn from
    kernel_size: int  # blur kernel side in pixels
    blur_sigma_x: float  # Gaussian sigma along the kernel's first axis, input pixels
    blur_sigma_y: float  # Gaussian sigma along the second axis (equal to blur_sigma_x when isotropic)
    blur_angle_deg: float  # rotation of the kernel's first axis from the image x axis (0 when isotropic)
    noise_sigma_pre: float  # noise sigma (0-255) added at input resolution
    gray_noise_pre: bool  # that noise is the same in R, G and B
    downscale_factor: float  # input size / low-resolution size, before even flooring
    downscale_mode: str  # interpolation of the downscale: area | bilinear | bicubic
    lr_size: tuple[int, int]  # (width, height) of the low-resolution frames, both even
    noise_sigma_post: float  # noise sigma (0-255) added at low resolution
    gray_noise_post: bool  # that noise is the same in R, G and B
    crf: int  # x264 CRF of the round trip
    x264_preset: str  # x264 preset of the round trip
    out_size: tuple[int, int]  # (width, height) of the returned frames

    @property
    def isotropic(self) -> bool:
        return self.blur_sigma_x == self.blur_sigma_y

    def describe(self) -> str:
        """One line naming every stage, e.g. for a report table."""
        if self.isotropic:
            blur = f"blur iso k{self.kernel_size} s={self.blur_sigma_x:.2f}"
        else:
            blur = (
                f"blur aniso k{self.kernel_size} s=({self.blur_sigma_x:.2f},{self.blur_sigma_y:.2f})"
                f" @{self.blur_angle_deg:.0f}deg"
            )
        pre = f"noise s={self.noise_sigma_pre:.1f}{' gray' if self.gray_noise_pre else ''}"
        post = f"noise s={self.noise_sigma_post:.1f}{' gray' if self.gray_noise_post else ''}"
        down = f"{self.downscale_mode} x{self.downscale_factor:g} to {self.lr_size[0]}x{self.lr_size[1]}"
        x264 = f"x264 crf {self.crf} {self.x264_preset}"
        stages = [blur, pre, down, post, x264]
        if self.out_size != self.lr_size:
            stages.append(f"bicubic to {self.out_size[0]}x{self.out_size[1]}")
        return f"seed {self.seed}: " + " -> ".join(stages)


def sample_params(
    config: DegradationConfig, size: tuple[int, int], rng: np.random.Generator, seed: int
) -> DegradationParams:
    """Draw one video's recipe from ``config`` for frames of ``size`` = (width, height).

    The draw order is fixed (changing it changes every seeded video: bump the evaluation
    suite's version when it does).
    """
    width, height = size
    lo, hi = config.blur_sigma_range
    sigma_x = float(rng.uniform(lo, hi))
    anisotropic = bool(rng.random() < config.anisotropic_prob)
    if anisotropic:
        sigma_y = float(rng.uniform(lo, hi))
        angle = float(rng.uniform(0.0, 180.0))
    else:
        sigma_y, angle = sigma_x, 0.0
    noise_pre = float(rng.uniform(*config.noise_sigma_range))
    gray_pre = bool(rng.random() < config.gray_noise_prob)
    factor = float(rng.uniform(*config.downscale_range))
    mode = config.downscale_modes[int(rng.integers(len(config.downscale_modes)))]
    noise_post = float(rng.uniform(*config.noise_sigma_range))
    gray_post = bool(rng.random() < config.gray_noise_prob)
    crf = int(rng.integers(config.crf_range[0], config.crf_range[1] + 1))
    lr_size = downscaled_size(width, height, factor)
    return DegradationParams(
        seed=seed,
        kernel_size=config.blur_kernel_size,
        blur_sigma_x=sigma_x,
        blur_sigma_y=sigma_y,
        blur_angle_deg=angle,
        noise_sigma_pre=noise_pre,
        gray_noise_pre=gray_pre,
        downscale_factor=factor,
        downscale_mode=mode,
        lr_size=lr_size,
        noise_sigma_post=noise_post,
        gray_noise_post=gray_post,
        crf=crf,
        x264_preset=config.x264_preset,
        out_size=(width, height) if config.resize_back else lr_size,
    )
