"""Paste a restored aligned face back into its frame: inverse warp, feathered mask, colour match.

Mask. The blended region is a fixed ellipse in template coordinates that covers forehead, cheeks
and chin of an FFHQ-aligned face and stays clear of the crop's corners and edges (which hold
background, or frame content mirrored by the reflect border). It is eroded by
``mask_shrink`` + the feather radius and then Gaussian-blurred with sigma ``feather`` (both as
fractions of the crop side, so the look does not depend on the crop resolution). The erosion is
exactly the blur's kernel radius, so the soft mask is exactly zero outside the ellipse: pixels
outside :func:`face_region_mask` are never written and stay bit-identical.

Colour matching (our choice). Diffusion restorers drift in colour, and a global shift shows as a
seam at the mask edge and as flicker between clips. We replace the low frequencies of the warped
restored face by those of the ORIGINAL frame inside the mask, and keep its high frequencies:
``restored + lowpass_w(original - restored)``, where ``lowpass_w`` is a mask-weighted (normalised)
Gaussian blur with sigma ``color_sigma`` x the face's native size. This is the "low-frequency
transfer" that StableSR / Upscale-A-Video apply for the same reason (wavelet colour fix), done in
frame space so the mask weights exclude surrounding background. We prefer it over matching
per-channel mean/std in LAB: std matching would copy the LOW contrast of a blurred input face
onto the restored one (undoing the restoration), and a global mean cannot follow a lighting
gradient across the face. The low frequencies of the input video are temporally stable, so the
transfer also removes slow colour flicker of the restored stream. Turn it off
(``color_match=False``) when the restorer is meant to change colours (e.g. colourisation).

Only the bounding box of the mask in the frame is warped and blended, so the cost scales with
the face, not the frame.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ipfvr_core.errors import InputError
from ipfvr_core.faces.align import invert_affine, native_size, transform_points, warp_affine_antialiased

DEFAULT_FEATHER = 0.02  # Gaussian sigma of the mask edge, as a fraction of the crop side (10 px at 512)
DEFAULT_MASK_SHRINK = 0.0  # extra erosion of the face ellipse before feathering, fraction of the crop side
DEFAULT_COLOR_SIGMA = 0.04  # sigma of the colour-transfer low-pass, as a fraction of the face's native size

# Face ellipse in template coordinates, as fractions of the crop side (FFHQ alignment: eyes at
# y ~ 0.47, mouth at y ~ 0.725, chin at y ~ 0.9). Its 0.5 level (after the default feather)
# runs about 0.06 inside this outline.
_ELLIPSE_CENTER = (0.5, 0.52)  # (x, y)
_ELLIPSE_AXES = (0.42, 0.46)  # semi-axes (x, y)


def _check_mask_params(feather: float, mask_shrink: float) -> None:
    if not np.isfinite(feather) or not 0.0 < feather <= 0.1:
        raise InputError(
            f"feather must be in (0, 0.1] (fraction of crop side), got {feather!r}",
            field="feather",
            code="invalid_option",
        )
    if not np.isfinite(mask_shrink) or not 0.0 <= mask_shrink <= 0.2:
        raise InputError(
            f"mask_shrink must be in [0, 0.2] (fraction of crop side), got {mask_shrink!r}",
            field="mask_shrink",
            code="invalid_option",
        )


@lru_cache(maxsize=8)
def _template_mask(size: int, feather: float, mask_shrink: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Soft mask (size, size) float32 in [0, 1], read-only, and the bbox (x0, y0, x1, y1) of its support."""
    sigma = feather * size
    radius = int(np.ceil(3.0 * sigma))  # half-width of the separable (square-support) blur kernel
    hard = np.zeros((size, size), dtype=np.uint8)
    center = (round(_ELLIPSE_CENTER[0] * size), round(_ELLIPSE_CENTER[1] * size))
    axes = (round(_ELLIPSE_AXES[0] * size), round(_ELLIPSE_AXES[1] * size))
    cv2.ellipse(hard, center, axes, 0.0, 0.0, 360.0, 1, thickness=-1)
    # Chebyshev distance to the outside: {dist > r} dilated by the square kernel support stays inside.
    dist = cv2.distanceTransform(hard, cv2.DIST_C, 3)  # (size, size) float32
    core = (dist > radius + mask_shrink * size).astype(np.float32)
    soft = cv2.GaussianBlur(core, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_CONSTANT)
    soft = np.clip(soft, 0.0, 1.0)
    # The far tail moves a pixel by under one grey level; dropping it tightens the region.
    soft[soft < 1.0 / 255.0] = 0.0
    ys, xs = np.nonzero(soft > 0)
    if ys.size == 0:
        raise InputError(
            "the face mask is empty: mask_shrink/feather too large", field="mask_shrink", code="invalid_option"
        )
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    soft.setflags(write=False)
    return soft, bbox


def template_face_mask(
    size: int = 512, *, feather: float = DEFAULT_FEATHER, mask_shrink: float = DEFAULT_MASK_SHRINK
) -> np.ndarray:
    """The soft paste mask in crop coordinates: (size, size) float32 in [0, 1], read-only."""
    _check_mask_params(feather, mask_shrink)
    return _template_mask(int(size), float(feather), float(mask_shrink))[0]


def _frame_mask(
    frame_hw: tuple[int, int], affine: np.ndarray, size: int, feather: float, mask_shrink: float
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Box (x0, y0, x1, y1) in the frame holding the mask's support, and the soft mask there (h, w) float32."""
    _check_mask_params(feather, mask_shrink)
    tmask, (tx0, ty0, tx1, ty1) = _template_mask(int(size), float(feather), float(mask_shrink))
    inv = invert_affine(affine)
    # Pixel (i, j) of the mask covers [i - 0.5, i + 0.5]; map the support's corners with that half-pixel.
    corners = np.array(
        [[tx0 - 0.5, ty0 - 0.5], [tx1 - 0.5, ty0 - 0.5], [tx0 - 0.5, ty1 - 0.5], [tx1 - 0.5, ty1 - 0.5]]
    )  # (4, 2)
    pts = transform_points(inv, corners)  # (4, 2) frame coordinates
    h, w = frame_hw
    x0 = max(0, int(np.floor(pts[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(pts[:, 1].min())) - 1)
    x1 = min(w, int(np.ceil(pts[:, 0].max())) + 2)
    y1 = min(h, int(np.ceil(pts[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    inv_roi = inv.copy()
    inv_roi[:, 2] -= (x0, y0)  # crop -> ROI coordinates
    mask = cv2.warpAffine(
        tmask, inv_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
    )
    if not np.any(mask > 0):
        return None
    return (x0, y0, x1, y1), mask


def face_region_mask(
    frame_shape: tuple[int, ...],
    affine: np.ndarray,
    size: int = 512,
    *,
    feather: float = DEFAULT_FEATHER,
    mask_shrink: float = DEFAULT_MASK_SHRINK,
) -> np.ndarray:
    """(H, W) bool: the pixels :func:`paste_back` may change for this affine (mask weight > 0)."""
    h, w = int(frame_shape[0]), int(frame_shape[1])
    out = np.zeros((h, w), dtype=bool)
    region = _frame_mask((h, w), affine, size, feather, mask_shrink)
    if region is not None:
        (x0, y0, x1, y1), mask = region
        out[y0:y1, x0:x1] = mask > 0
    return out


def _masked_lowpass(x: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Weighted Gaussian low-pass of ``x`` (h, w, C) float32 under ``weight`` (h, w): G(x w) / G(w).

    For a wide sigma the work is done at a reduced resolution (area-downsampled by about
    sigma / 2, then bilinear back up): the result only holds frequencies far below that rate.
    """
    h, w = weight.shape
    factor = max(1, int(sigma // 2.0))
    num = x * weight[..., None]  # (h, w, C)
    den = weight
    if factor > 1:
        small = (max(1, round(w / factor)), max(1, round(h / factor)))
        num = cv2.resize(num, small, interpolation=cv2.INTER_AREA)
        den = cv2.resize(den, small, interpolation=cv2.INTER_AREA)
        sigma_small = sigma * small[0] / w
    else:
        sigma_small = sigma
    ksize = 2 * int(np.ceil(3.0 * sigma_small)) + 1
    num = cv2.GaussianBlur(num, (ksize, ksize), sigma_small, borderType=cv2.BORDER_REFLECT_101)
    den = cv2.GaussianBlur(den, (ksize, ksize), sigma_small, borderType=cv2.BORDER_REFLECT_101)
    if num.ndim == 2:
        num = num[..., None]  # (h', w', 1): cv2 drops a singleton channel
    low: np.ndarray = num / np.maximum(den, 1e-6)[..., None]  # (h', w', C)
    if factor > 1:
        low = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
        if low.ndim == 2:
            low = low[..., None]  # (h, w, 1)
    return low


def paste_back(
    frame: np.ndarray,
    restored_face: np.ndarray,
    affine: np.ndarray,
    *,
    feather: float = DEFAULT_FEATHER,
    color_match: bool = True,
    mask_shrink: float = DEFAULT_MASK_SHRINK,
    color_sigma: float = DEFAULT_COLOR_SIGMA,
    inplace: bool = False,
) -> np.ndarray:
    """Blend ``restored_face`` (the aligned crop, (S, S, 3) uint8) back into ``frame`` ((H, W, 3) uint8).

    ``affine`` is the frame -> crop transform the crop was taken with (:func:`estimate_affine`).
    Returns a new uint8 frame (or ``frame`` itself, modified, when ``inplace``); pixels outside
    :func:`face_region_mask` ``(frame.shape, affine, S, feather=..., mask_shrink=...)`` are
    unchanged. The arithmetic is float32.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(
            f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}", field="frame", code="invalid_option"
        )
    if (
        restored_face.dtype != np.uint8
        or restored_face.ndim != 3
        or restored_face.shape[2] != 3
        or restored_face.shape[0] != restored_face.shape[1]
    ):
        raise InputError(
            f"restored_face must be a square (S, S, 3) uint8 crop, got {restored_face.shape} {restored_face.dtype}",
            field="restored_face",
            code="invalid_option",
        )
    if not np.isfinite(color_sigma) or not 0.0 < color_sigma <= 1.0:
        raise InputError(
            f"color_sigma must be in (0, 1], got {color_sigma!r}", field="color_sigma", code="invalid_option"
        )
    size = restored_face.shape[0]
    out = frame if inplace else frame.copy()
    region = _frame_mask(frame.shape[:2], affine, size, feather, mask_shrink)
    if region is None:
        return out
    (x0, y0, x1, y1), mask = region
    inv_roi = invert_affine(affine)
    inv_roi[:, 2] -= (x0, y0)  # crop -> ROI coordinates
    warped = warp_affine_antialiased(restored_face, inv_roi, (x1 - x0, y1 - y0), border="reflect")  # (h, w, 3) uint8
    roi = out[y0:y1, x0:x1]  # (h, w, 3) view into the output
    original = roi.astype(np.float32)  # (h, w, 3)
    delta = warped.astype(np.float32)
    delta -= original  # restored - original
    if color_match:
        # restored + lowpass(original - restored) - original == delta - lowpass(delta): the filter is linear.
        sigma_px = max(1.0, color_sigma * native_size(affine, size))
        delta -= _masked_lowpass(delta, mask, sigma_px)
    delta *= mask[..., None]
    delta += original  # the blend; equals ``original`` exactly where mask == 0
    np.rint(delta, out=delta)
    np.clip(delta, 0.0, 255.0, out=delta)
    np.copyto(roi, delta.astype(np.uint8), where=(mask > 0)[..., None])
    return out
