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
a training data loader) or chained by :func:`degrade_video`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from ipfvr_core.errors import ConfigError, InputError, IPFVRError
from ipfvr_core.video_io import X264_PRESETS

# Interpolations a downscale may use (KEEP picks among area, bilinear and bicubic), as OpenCV flags.
RESIZE_MODES: dict[str, int] = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


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


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------


def _check_frames(frames: np.ndarray, field: str = "frames") -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise InputError(f"must be a (T, H, W, 3) uint8 array, got {shape} {dtype}", field=field, code="invalid_option")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise InputError(
            f"must hold at least one non-empty frame, got {frames.shape}", field=field, code="invalid_option"
        )


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Round to nearest (not truncate, which would darken by half a level on average) and clip."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, angle_deg: float = 0.0) -> np.ndarray:
    """(size, size) float32 Gaussian summing to 1; anisotropic when ``sigma_y`` differs, rotated by ``angle_deg``."""
    if size < 1 or size % 2 == 0:
        raise InputError(f"must be a positive odd integer, got {size!r}", field="kernel_size", code="invalid_option")
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if not (sigma_x > 0 and sigma_y > 0):
        raise InputError(f"sigmas must be positive, got {sigma_x!r}, {sigma_y!r}", field="sigma", code="invalid_option")
    theta = math.radians(angle_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T  # (2, 2)
    inverse = np.linalg.inv(covariance)
    half = size // 2
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1]  # (size, size) each
    points = np.stack([xs, ys], axis=-1).astype(np.float64)  # (size, size, 2) as (x, y)
    exponent = np.einsum("...i,ij,...j->...", points, inverse, points)  # (size, size)
    kernel = np.exp(-0.5 * exponent)
    return (kernel / kernel.sum()).astype(np.float32)


def blur(frames: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every frame with one 2-D ``kernel`` (reflected borders, as cv2.filter2D in KEEP)."""
    _check_frames(frames)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise InputError(
            f"must be a 2-D kernel with odd sides, got {kernel.shape}", field="kernel", code="invalid_option"
        )
    kernel = kernel.astype(np.float32)
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        # filter2D correlates; flip so this is a true convolution (matters only for asymmetric kernels)
        filtered = cv2.filter2D(frame.astype(np.float32), -1, kernel[::-1, ::-1], borderType=cv2.BORDER_REFLECT_101)
        out[t] = _to_uint8(filtered)
    return out


def resize(frames: np.ndarray, size: tuple[int, int], mode: str = "bicubic") -> np.ndarray:
    """Resize every frame to ``size`` = (width, height) with ``mode`` (area | bilinear | bicubic)."""
    _check_frames(frames)
    if mode not in RESIZE_MODES:
        raise InputError(f"must be one of {sorted(RESIZE_MODES)}, got {mode!r}", field="mode", code="invalid_option")
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"must be positive, got {size!r}", field="size", code="invalid_option")
    if (width, height) == (frames.shape[2], frames.shape[1]):
        return frames.copy()
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)  # (T, h, w, 3)
    for t, frame in enumerate(frames):
        out[t] = cv2.resize(frame, (width, height), interpolation=RESIZE_MODES[mode])
    return out


def downscaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """(width, height) divided by ``factor``, floored to even numbers (yuv420p needs even sides), at least 2."""
    if not factor >= 1.0:
        raise InputError(f"must be >= 1, got {factor!r}", field="factor", code="invalid_option")
    return max(2, 2 * int(width / factor / 2)), max(2, 2 * int(height / factor / 2))


def downscale(frames: np.ndarray, factor: float, mode: str = "area") -> np.ndarray:
    """Shrink every frame by ``factor`` (size floored to even, see :func:`downscaled_size`)."""
    _check_frames(frames)
    return resize(frames, downscaled_size(frames.shape[2], frames.shape[1], factor), mode)


def add_noise(frames: np.ndarray, sigma: float, rng: np.random.Generator, *, gray: bool = False) -> np.ndarray:
    """Add zero-mean Gaussian noise of ``sigma`` (0-255 units), drawn frame by frame from ``rng``.

    ``gray`` adds one noise plane to all three channels (luminance-only noise, as a camera sensor's
    gain noise after demosaicing mostly is); otherwise each channel gets its own.
    """
    _check_frames(frames)
    if not (isinstance(sigma, (int, float)) and 0.0 <= sigma <= 255.0):
        raise InputError(f"must be in [0, 255], got {sigma!r}", field="sigma", code="invalid_option")
    if sigma == 0:
        return frames.copy()
    _, height, width, _ = frames.shape
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        noise = rng.standard_normal((height, width, 1 if gray else 3), dtype=np.float32)  # (H, W, 1|3)
        out[t] = _to_uint8(frame.astype(np.float32) + np.float32(sigma) * noise)  # broadcasts (H, W, 3)
    return out


def x264_roundtrip(frames: np.ndarray, crf: int, *, preset: str = "medium", fps: float = 25.0) -> np.ndarray:
    """Encode with libx264 (yuv420p, CRF ``crf``) into an in-memory mp4 and decode it back.

    This is a real codec pass, not a simulation: blocking, ringing, chroma subsampling and the
    temporal smearing of P/B-frames all come from x264 itself. Every input frame comes back, in
    order (checked); the frame rate matters because x264's rate control spends bits per second.
    x264 runs on one thread: its decisions depend on the thread count, and one thread makes a
    seeded degradation the same on every machine (at the small sizes used here it costs little).
    RGB -> yuv420p is converted explicitly (swscale defaults, undone by the decoder's ``rgb24``).
    """
    _check_frames(frames)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise InputError(f"must be an integer from 0 to 51, got {crf!r}", field="crf", code="invalid_option")
    if preset not in X264_PRESETS:
        raise InputError(
            f"must be one of {', '.join(X264_PRESETS)}, got {preset!r}", field="preset", code="invalid_option"
        )
    n_frames, height, width, _ = frames.shape
    if width % 2 or height % 2:
        raise InputError(f"yuv420p needs even sides, got {width}x{height}", field="frames", code="invalid_option")
    rate = Fraction(fps).limit_denominator(1001)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        options = {"crf": str(int(crf)), "preset": preset, "threads": "1"}
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            # Convert here, not inside encode(): PyAV's implicit per-stream conversion gave a different
            # picture about once in 60 runs of the same input.
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    buffer.seek(0)
    decoded = []
    with av.open(buffer, mode="r", format="mp4") as container:
        for frame in container.decode(video=0):
            decoded.append(frame.to_ndarray(format="rgb24"))  # (H, W, 3)
    if len(decoded) != n_frames:
        raise IPFVRError(f"x264 round trip returned {len(decoded)} frames for {n_frames}")
    return np.stack(decoded)  # (T, H, W, 3)


# ----------------------------------------------------------------------------------------------
# The whole chain
# ----------------------------------------------------------------------------------------------


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


def degrade_video(
    frames: np.ndarray, config: DegradationConfig, seed: int, *, fps: float = 25.0
) -> tuple[np.ndarray, DegradationParams]:
    """Degrade a whole clip with one recipe drawn from ``seed``; returns (frames, the recipe).

    Same frames, config and seed give the same output, up to x264's rare variance (module
    docstring). ``fps`` is the clip's frame rate,
    passed to x264 (its rate control depends on it).
    """
    _check_frames(frames)
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
