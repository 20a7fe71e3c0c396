"""Ground-truth videos from still photos, and reference photos that are not the judged frame.

Why synthetic camera motion
    Real face videos with a clean ground truth and a separate clean photo of the same person are
    rare and never shipped with packages. A still photo moved along a smooth camera path gives a
    video whose every frame is known exactly, with the motion (pan, zoom, a little roll) that makes
    temporal consistency and tracking matter. The path is a sum of a few low-frequency sinusoids
    per degree of freedom: smooth like a hand-held or slowly driven camera, seeded, and defined
    frame by frame so the first N frames of a longer path are the path of N frames.

Why reference variants
    A reference photo identical to a judged frame would let an engine score by copying it. The
    variants keep the identity and change what a second photo of a person changes: the side the
    face is seen from (``flip``), the lighting (``relight``), the framing (``recrop``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ipfvr_core.errors import InputError

REFERENCE_KINDS: tuple[str, ...] = ("flip", "relight", "recrop")  # accepted kinds of reference_variant

# Sinusoids summed per degree of freedom of the camera path.
_PATH_COMPONENTS = 3
# Their periods, in frames: the slowest drifts over 4 s at 24 fps, the fastest sways over 1 s.
_PATH_PERIODS = (24.0, 96.0)


def camera_path(
    n_frames: int,
    seed: int,
    *,
    pan_px: float = 12.0,
    zoom_range: tuple[float, float] = (0.92, 1.1),
    max_rotation_deg: float = 4.0,
) -> np.ndarray:
    """(n_frames, 2, 3) float64 affines of a smooth camera: pan, zoom and roll about the face centre.

    Each affine maps a point relative to the face centre (source pixels) to a point relative to
    the output frame's centre: ``[[z cos a, -z sin a, px], [z sin a, z cos a, py]]``. Guarantees:
    ``|px|, |py| <= pan_px``, ``zoom_range[0] <= z <= zoom_range[1]``, ``|a| <= max_rotation_deg``.
    Each degree of freedom is a normalised sum of sinusoids with periods of 24-96 frames, so
    consecutive frames differ by a few percent of the range at most.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise InputError(f"must be a positive integer, got {n_frames!r}", field="n_frames", code="invalid_option")
    if not (math.isfinite(pan_px) and pan_px >= 0):
        raise InputError(f"must be a finite number >= 0, got {pan_px!r}", field="pan_px", code="invalid_option")
    lo, hi = zoom_range
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise InputError(f"must satisfy 0 < low <= high, got {zoom_range!r}", field="zoom_range", code="invalid_option")
    if not (math.isfinite(max_rotation_deg) and 0 <= max_rotation_deg <= 45):
        raise InputError(
            f"must be in [0, 45] degrees, got {max_rotation_deg!r}", field="max_rotation_deg", code="invalid_option"
        )
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames, dtype=np.float64)[:, None]  # (T, 1)
    signals = []
    for _ in range(4):  # pan x, pan y, zoom, roll
        periods = rng.uniform(*_PATH_PERIODS, size=_PATH_COMPONENTS)  # (K,)
        phases = rng.uniform(0.0, 2 * math.pi, size=_PATH_COMPONENTS)  # (K,)
        weights = rng.uniform(0.3, 1.0, size=_PATH_COMPONENTS)  # (K,)
        wave = np.sin(2 * math.pi * t / periods + phases) @ weights  # (T, K) @ (K,) -> (T,)
        signals.append(wave / weights.sum())  # in [-1, 1] for every T, so prefixes agree
    pan_x, pan_y, zoom_s, roll_s = signals
    zoom = np.exp(math.log(lo) + (zoom_s + 1) / 2 * (math.log(hi) - math.log(lo)))  # (T,) geometric in range
    angle = np.radians(max_rotation_deg * roll_s)  # (T,)
    affines = np.empty((n_frames, 2, 3), dtype=np.float64)
    affines[:, 0, 0] = zoom * np.cos(angle)
    affines[:, 0, 1] = -zoom * np.sin(angle)
    affines[:, 1, 0] = zoom * np.sin(angle)
    affines[:, 1, 1] = zoom * np.cos(angle)
    affines[:, 0, 2] = pan_px * pan_x
    affines[:, 1, 2] = pan_px * pan_y
    return affines


def _check_image(image: np.ndarray, field: str = "image") -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise InputError(f"must be an (H, W, 3) uint8 RGB array, got {shape}", field=field, code="invalid_option")
    if min(image.shape[:2]) < 8:
        raise InputError(f"is too small ({image.shape[1]}x{image.shape[0]})", field=field, code="invalid_option")


def render_path(
    image: np.ndarray, center_xy: tuple[float, float], out_size: tuple[int, int], affines: np.ndarray
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of ``image`` seen along ``affines`` (from :func:`camera_path`).

    ``center_xy`` (source pixels) lands at the output centre plus the frame's pan; ``out_size`` is
    (width, height). Bicubic sampling; outside the photo the border is mirrored (reflect-101), so a
    pan near the photo's edge shows plausible texture instead of black bars.
    """
    _check_image(image)
    width, height = out_size
    if width < 2 or height < 2:
        raise InputError(f"must be at least 2x2, got {out_size!r}", field="out_size", code="invalid_option")
    if affines.ndim != 3 or affines.shape[1:] != (2, 3) or affines.shape[0] < 1:
        raise InputError(f"must have shape (T, 2, 3), got {affines.shape}", field="affines", code="invalid_option")
    cx, cy = center_xy
    if not (0 <= cx < image.shape[1] and 0 <= cy < image.shape[0]):
        raise InputError(f"{center_xy!r} lies outside the image", field="center_xy", code="invalid_option")
    pans = affines[:, :, 2]  # (T, 2): where the face centre lands, relative to the output centre
    if np.any(np.abs(pans[:, 0]) >= width / 2) or np.any(np.abs(pans[:, 1]) >= height / 2):
        raise InputError("a pan moves the face centre out of the frame", field="affines", code="invalid_option")
    to_origin = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])  # (3, 3) source -> face-centred
    frames = np.empty((affines.shape[0], height, width, 3), dtype=np.uint8)  # (T, H, W, 3)
    for t, affine in enumerate(affines):
        matrix = affine @ to_origin  # (2, 3): source pixel -> output pixel relative to the centre
        matrix[:, 2] += (width / 2 - 0.5, height / 2 - 0.5)  # pixel-centre convention of cv2
        frames[t] = cv2.warpAffine(
            image, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
        )
    return frames


def reference_variant(image: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A second photo of the person in ``image`` (a face crop with margin): flipped, re-lit or re-cropped.

    * ``flip``: mirrored left-right (the other side of the face; seed unused).
    * ``relight``: gamma in [0.74, 0.86] or [1.16, 1.35], times a smooth directional illumination ramp
      (+-15-30 % across the photo, random direction), times a colour cast of 3-8 % per channel.
    * ``recrop``: a crop of 72-88 % of each side, off-centre, rotated 3-8 degrees either way and
      rescaled by 0.8-1.25 (so even the face's pixel size differs).
    """
    _check_image(image)
    if kind not in REFERENCE_KINDS:
        raise InputError(f"must be one of {list(REFERENCE_KINDS)}, got {kind!r}", field="kind", code="invalid_option")
    if kind == "flip":
        return np.ascontiguousarray(image[:, ::-1])
    rng = np.random.default_rng(seed)
    if kind == "relight":
        return _relight(image, rng)
    return _recrop(image, rng)


def _relight(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    gamma = math.exp(rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3))  # never close to 1
    direction = rng.uniform(0.0, 2 * math.pi)
    strength = rng.uniform(0.15, 0.3)
    cast = 1.0 + rng.choice([-1.0, 1.0], size=3) * rng.uniform(0.03, 0.08, size=3)  # (3,)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)  # (H, W) each
    # signed distance along the light's direction, (H, W), in about [-0.7, 0.7]
    along = (xs / width - 0.5) * math.cos(direction) + (ys / height - 0.5) * math.sin(direction)
    ramp = 1.0 + strength * np.tanh(2.0 * along)  # (H, W): smooth, saturating, mean ~1
    linear = (image.astype(np.float64) / 255.0) ** gamma  # (H, W, 3)
    lit = linear * ramp[:, :, None] * cast[None, None, :]  # (H, W, 3)
    return np.clip(np.rint(lit * 255.0), 0, 255).astype(np.uint8)


def _recrop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    fraction = rng.uniform(0.72, 0.88)
    crop_w, crop_h = fraction * width, fraction * height
    # the crop centre moves off the photo's centre by up to the slack the crop leaves
    cx = width / 2 + rng.uniform(-0.5, 0.5) * (width - crop_w)
    cy = height / 2 + rng.uniform(-0.5, 0.5) * (height - crop_h)
    angle = rng.choice([-1.0, 1.0]) * rng.uniform(3.0, 8.0)
    scale = rng.uniform(0.8, 1.25)
    out_w, out_h = max(8, round(crop_w * scale)), max(8, round(crop_h * scale))
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)  # (2, 3): rotate and scale about the crop centre
    matrix[:, 2] += (out_w / 2 - cx, out_h / 2 - cy)  # then move the crop centre to the output centre
    return cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
