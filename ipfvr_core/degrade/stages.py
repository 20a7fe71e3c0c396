"""The stages of a degradation, each usable alone: every one takes and returns (T, H, W, 3) uint8 RGB frames."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import cv2
import numpy as np

from ipfvr_core.errors import InputError, IPFVRError
from ipfvr_core.video_io import X264_PRESETS

# Interpolations a downscale may use (KEEP picks among area, bilinear and bicubic), as OpenCV flags.
RESIZE_MODES: dict[str, int] = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def check_frames(frames: np.ndarray, field: str = "frames") -> None:
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
    check_frames(frames)
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
    check_frames(frames)
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
    check_frames(frames)
    return resize(frames, downscaled_size(frames.shape[2], frames.shape[1], factor), mode)


def add_noise(frames: np.ndarray, sigma: float, rng: np.random.Generator, *, gray: bool = False) -> np.ndarray:
    """Add zero-mean Gaussian noise of ``sigma`` (0-255 units), drawn frame by frame from ``rng``.

    ``gray`` adds one noise plane to all three channels (luminance-only noise, as a camera sensor's
    gain noise after demosaicing mostly is); otherwise each channel gets its own.
    """
    check_frames(frames)
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
    check_frames(frames)
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
