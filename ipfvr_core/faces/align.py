"""Alignment of a face to the FFHQ 5-point template, and the affine helpers paste-back shares.

The transform is a similarity (rotation, uniform scale, translation) fitted by closed-form least
squares over all five points (Umeyama 1991), not ``cv2.estimateAffinePartial2D`` with LMEDS/RANSAC.
With five points and no outliers worth rejecting, a robust estimator only adds a data-dependent
choice of point subset, and that choice can switch from frame to frame and make the crop jitter
even when the (smoothed) landmarks move smoothly. Least squares over all points is deterministic
and a smooth function of the landmarks.

Conventions: an affine is a ``(2, 3)`` float64 matrix mapping source pixel coordinates (x, y) to
crop coordinates, ``crop = A[:, :2] @ src + A[:, 2]``, in OpenCV's pixel-centre convention (what
``cv2.warpAffine`` expects).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
from numpy.typing import ArrayLike

from ipfvr_core.errors import InputError

TEMPLATE_SIZE = 512  # side of the crop the reference template below is defined for

# The FFHQ 5-point template used by GFPGAN / CodeFormer (facexlib) for 512x512 crops:
# left eye, right eye, nose tip, left mouth corner, right mouth corner (image-left first).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)  # (5, 2)

BorderMode = Literal["reflect", "constant"]

_BORDER_FLAGS: dict[str, int] = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 16:
        raise InputError(f"crop size must be an integer >= 16, got {size!r}", field="size", code="invalid_option")


def _check_affine(affine: np.ndarray) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (2, 3) or not np.all(np.isfinite(a)):
        raise InputError(
            f"affine must be a finite (2, 3) matrix, got shape {a.shape}", field="affine", code="invalid_option"
        )
    if abs(np.linalg.det(a[:, :2])) < 1e-12:
        raise InputError("affine is singular (zero scale)", field="affine", code="invalid_option")
    return a


@lru_cache(maxsize=16)
def _template(size: int) -> np.ndarray:
    t = FFHQ_TEMPLATE_512 * (size / TEMPLATE_SIZE)  # (5, 2)
    t.setflags(write=False)
    return t


def ffhq_template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The FFHQ 5-point template scaled to a ``size`` x ``size`` crop; (5, 2) float64, read-only."""
    _check_size(size)
    return _template(int(size))


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``dst ~ s R src + t`` (no reflection) as a (2, 3) float64 matrix.

    ``src`` and ``dst`` are (N, 2) with N >= 2 corresponding points. Raises ``InputError`` when
    ``src`` is degenerate (all points equal).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    mu_s = src.mean(axis=0)  # (2,)
    mu_d = dst.mean(axis=0)  # (2,)
    sc = src - mu_s  # (N, 2)
    dc = dst - mu_d  # (N, 2)
    var_s = float((sc**2).sum()) / n
    if var_s < 1e-12:
        raise InputError("landmarks are degenerate (all points coincide)", field="kps", code="invalid_option")
    cov = dc.T @ sc / n  # (2, 2)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # forbid a reflection: flip the weakest axis
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt  # (2, 2)
    scale = float((d * sign).sum()) / var_s
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def estimate_affine(kps: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Similarity transform (2, 3) float64 mapping the 5 landmarks ``kps`` onto the FFHQ template at ``size``."""
    _check_size(size)
    pts = np.asarray(kps, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise InputError(
            f"kps must be a finite (5, 2) array, got shape {pts.shape}", field="kps", code="invalid_option"
        )
    return umeyama_similarity(pts, _template(int(size)))


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine (crop -> source for a face affine), float64."""
    a = _check_affine(affine)
    lin_inv = np.linalg.inv(a[:, :2])  # (2, 2)
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = lin_inv
    out[:, 2] = -lin_inv @ a[:, 2]
    return out


def transform_points(affine: np.ndarray, points: ArrayLike) -> np.ndarray:
    """Apply a (2, 3) affine to (..., 2) points; returns float64 of the same shape."""
    a = np.asarray(affine, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ a[:, :2].T + a[:, 2]


def affine_scale(affine: np.ndarray) -> float:
    """Uniform scale of the transform: crop pixels per source pixel (sqrt |det| of the linear part)."""
    a = _check_affine(affine)
    return float(np.sqrt(abs(np.linalg.det(a[:, :2]))))


def native_size(affine: np.ndarray, size: int = TEMPLATE_SIZE) -> int:
    """Side, in source pixels, of the region a ``size`` crop covers: ``round(size / scale)``, at least 1."""
    _check_size(size)
    return max(1, round(size / affine_scale(affine)))


def _roi_for_output(
    src_shape: tuple[int, int], inv: np.ndarray, dsize: tuple[int, int], margin: float
) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) in ``src`` of what an output of ``dsize`` (w, h) samples, clipped to src."""
    w, h = dsize
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])  # (4, 2)
    src_pts = transform_points(inv, corners)  # (4, 2)
    x0 = max(0, int(np.floor(src_pts[:, 0].min() - margin)))
    y0 = max(0, int(np.floor(src_pts[:, 1].min() - margin)))
    x1 = min(src_shape[1], int(np.ceil(src_pts[:, 0].max() + margin)) + 1)
    y1 = min(src_shape[0], int(np.ceil(src_pts[:, 1].max() + margin)) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def warp_affine_antialiased(
    src: np.ndarray,
    affine: np.ndarray,
    dsize: tuple[int, int],
    *,
    border: BorderMode = "reflect",
    border_value: float | tuple[float, ...] = 0.0,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """``cv2.warpAffine`` that does not alias when the transform shrinks.

    ``cv2.warpAffine`` samples each output pixel from a 2x2 (bilinear) neighbourhood, so a
    transform that shrinks by k > 1 skips source pixels and aliases (sharp restored detail
    shimmers from frame to frame). When it shrinks, the part of ``src`` the output samples is
    first Gaussian-filtered with sigma = (k - 1) / 2 source pixels (the anti-aliasing sigma of
    ``skimage.transform.rescale``), then warped once. A single resampling keeps more detail than
    an area resize followed by a second warp. ``dsize`` is (width, height).
    """
    a = _check_affine(affine)
    flag = _BORDER_FLAGS[border]
    shrink = 1.0 / float(np.sqrt(abs(np.linalg.det(a[:, :2]))))  # source pixels per output pixel
    sigma = (shrink - 1.0) / 2.0
    if sigma >= 0.25:
        radius = int(np.ceil(3.0 * sigma))
        roi = _roi_for_output(src.shape[:2], invert_affine(a), dsize, margin=radius + 2.0)
        if roi is not None:
            x0, y0, x1, y1 = roi
            # Reflect at the image's own edges matches the warp's reflect border; the ROI's inner
            # edges lie ``radius + 2`` pixels beyond anything the warp samples.
            src = cv2.GaussianBlur(
                src[y0:y1, x0:x1], (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT_101
            )
            a = a.copy()
            a[:, 2] += a[:, :2] @ np.array([x0, y0], dtype=np.float64)  # ROI -> output
    return cv2.warpAffine(src, a, dsize, flags=interpolation, borderMode=flag, borderValue=border_value)


def warp_face(
    image: np.ndarray,
    affine: np.ndarray,
    size: int = TEMPLATE_SIZE,
    *,
    border: BorderMode = "reflect",
) -> np.ndarray:
    """The aligned ``(size, size, C)`` crop of ``image`` under ``affine`` (same dtype as ``image``).

    Bilinear when the crop enlarges the face (the usual case for video), Gaussian-prefiltered when
    it shrinks it (see :func:`warp_affine_antialiased`). ``border="reflect"`` (default) mirrors the
    frame where the crop leaves it, which avoids a hard synthetic edge in the model's input for
    faces near the frame border; ``"constant"`` fills with black. Either way that part of the crop
    maps back outside the frame, so paste-back never writes it.
    """
    _check_size(size)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(
            f"image must be (H, W, C) with H, W >= 2, got shape {image.shape}", field="image", code="invalid_option"
        )
    if border not in _BORDER_FLAGS:
        raise InputError(
            f"border must be one of {sorted(_BORDER_FLAGS)}, got {border!r}", field="border", code="invalid_option"
        )
    out = warp_affine_antialiased(image, affine, (int(size), int(size)), border=border)
    return out.reshape(int(size), int(size), image.shape[2])  # (size, size, C): warpAffine drops a singleton channel
