"""Frame metrics for the evaluation suite: PSNR / SSIM (frame and face region) and E_warp.

Conventions, fixed here so every table means the same thing:

* Images are (H, W, 3) uint8 RGB. PSNR uses data range 255 and the mean squared error over all
  pixels and channels; identical images give ``float("inf")`` (written as the string "inf" in
  JSON and CSV by the report). A summary is the mean of per-frame values, so one identical frame
  makes the mean inf too - which is what it is.
* SSIM is skimage's ``structural_similarity`` with ``channel_axis=-1, data_range=255`` and its
  default 7x7 uniform window (shrunk to the largest odd size that fits a tiny face crop).
* The face region is the face box found on the *ground-truth* frame (see :func:`interpolate_boxes`)
  grown by a fixed margin and clipped to the frame; the same region is cut from every video.
* E_warp follows Lai et al., "Learning Blind Video Temporal Consistency" (ECCV 2018), as coded in
  github.com/phoenix104104/fast_blind_video_consistency (``compute_flow_occlusion.py``,
  ``utils.detect_occlusion``, ``evaluate_WarpError.py``), read for the directions and scaling:

  - flow comes from the ground truth (there: the input frames): ``fw`` from frame t-1 to t and
    ``bw`` from t to t-1; here OpenCV DIS (medium preset) on grey frames replaces FlowNet2;
  - ``W(O_t)`` samples O_t at x + fw(x) (bilinear, border clamped, like their Resample2d), so
    it lives in frame t-1's pixel grid;
  - a pixel x of frame t-1 is occluded when |fw(x) + bw(x + fw(x))|^2 > 0.01 (|fw|^2 +
    |bw(x + fw(x))|^2) + 0.5, **or** it lies on a motion boundary of fw:
    |du|^2 + |dv|^2 > 0.01 |fw|^2 + 0.002 with forward differences of fw's components (both
    terms as in ``detect_occlusion``, which is called as ``detect_occlusion(bw, fw)``);
  - one addition of ours: pixels whose x + fw(x) leaves the frame are occluded too. Their
    Resample2d clamps to the border and so compares against replicated border pixels;
    content that left the frame has no correspondence to compare;
  - per pair, E = sum((W(O_t) - O_{t-1})^2 * noc) / sum(noc) over pixels and channels, with
    images in [0, 1] (their mask is read as a 3-channel image, so the mean runs over channels
    too); when every pixel is occluded they divide by all pixels, and so do we;
  - the video's E_warp is the mean over its pairs. Their script prints and saves this raw mean
    (``np.savetxt(..., fmt="%f")``, no scaling). Raw values here are ~1e-4..1e-3, so the stdout
    and HTML tables show E_warp x 1e3 and say so in the header; JSON and CSV keep the raw value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from ipfvr_core.errors import InputError

BOX_DETECTED = "detected"  # the GT frame's own detection
BOX_INTERPOLATED = "interpolated"  # linear between the nearest detected GT frames before and after
BOX_HELD = "held"  # before the first / after the last detection: the nearest detection, held
BOX_NONE = "none"  # no GT frame of the clip has a face


@dataclass(frozen=True)
class WarpConfig:
    """The E_warp occlusion test (defaults: Lai et al. 2018's constants)."""

    fb_rel: float = 0.01  # forward-backward check: relative tolerance on |fw + W(bw)|^2
    fb_abs: float = 0.5  # forward-backward check: absolute tolerance (px^2)
    motion_boundaries: bool = True  # also exclude motion boundaries of the forward flow
    mb_rel: float = 0.01  # motion boundary: relative tolerance on the squared flow gradient
    mb_abs: float = 0.002  # motion boundary: absolute tolerance
    out_of_frame_occluded: bool = True  # pixels whose flow leaves the frame are occluded (ours)


@dataclass(frozen=True)
class MetricsConfig:
    """Everything that changes a number in the tables."""

    face_margin: float = 0.2  # face region = GT face box grown by this fraction of its width/height on each side
    gt_min_face_score: float = 0.0  # a GT detection counts at this dlib score or above (0 = dlib's boundary)
    warp: WarpConfig = field(default_factory=WarpConfig)  # E_warp's occlusion test


# ------------------------------------------------------------------------------ PSNR / SSIM
def _pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}", field="image")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise InputError(f"expected uint8 images, got {a.dtype} and {b.dtype}", field="image")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (data range 255); ``float("inf")`` when identical."""
    _pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean SSIM of two uint8 RGB images; None when a side is under 3 px (no window fits)."""
    _pair(a, b)
    side = min(a.shape[0], a.shape[1])
    if side < 3:
        return None
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255, win_size=win))


# ------------------------------------------------------------------------------ face region
def expand_box(box: np.ndarray, margin: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer (x0, y0, x1, y1) of ``box`` grown by ``margin`` x its size on each side, clipped
    to the frame; None when nothing of it is inside."""
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    ix0, iy0 = max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my)))
    ix1, iy1 = min(width, int(np.ceil(x1 + mx))), min(height, int(np.ceil(y1 + my)))
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    return ix0, iy0, ix1, iy1


def interpolate_boxes(detected: list[np.ndarray | None]) -> tuple[list[np.ndarray | None], list[str]]:
    """Fill the frames without a GT detection: linear in time between the nearest detected
    frames on both sides, the nearest detection held at the ends. Returns (boxes, sources)."""
    known = [i for i, b in enumerate(detected) if b is not None]
    if not known:
        return [None] * len(detected), [BOX_NONE] * len(detected)
    boxes: list[np.ndarray | None] = []
    sources: list[str] = []
    for i, box in enumerate(detected):
        if box is not None:
            boxes.append(np.asarray(box, np.float64))
            sources.append(BOX_DETECTED)
            continue
        before = [k for k in known if k < i]
        after = [k for k in known if k > i]
        if before and after:
            k0, k1 = before[-1], after[0]
            w = (i - k0) / (k1 - k0)
            boxes.append((1 - w) * np.asarray(detected[k0], np.float64) + w * np.asarray(detected[k1], np.float64))
            sources.append(BOX_INTERPOLATED)
        else:
            k = before[-1] if before else after[0]
            boxes.append(np.asarray(detected[k], np.float64))
            sources.append(BOX_HELD)
    return boxes, sources


def crop(image: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = region
    return image[y0:y1, x0:x1]  # (y1 - y0, x1 - x0, 3)


# ------------------------------------------------------------------------------ E_warp
def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # (H, W) uint8


def dis_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """DIS optical flow (medium preset) from grey ``src`` to grey ``dst``: src(x) ~ dst(x + flow(x)).

    A fresh instance per call: DIS keeps no state between calls we rely on, and this keeps the
    function safe to call from several threads.
    """
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(src, dst, None)  # (H, W, 2) float32: (dx, dy)


def _sample_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))  # (H, W) each
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at x + flow(x), bilinear, coordinates clamped to the border (as Resample2d)."""
    map_x, map_y = _sample_grid(flow)
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def occlusion_mask(fw: np.ndarray, bw: np.ndarray, config: WarpConfig | None = None) -> np.ndarray:
    """(H, W) bool, True where a pixel of frame t-1 has no reliable match in frame t."""
    config = config or WarpConfig()
    bw_w = warp(bw, fw)  # (H, W, 2): bw sampled at x + fw(x), in frame t-1's grid
    fb = np.sum((fw + bw_w) ** 2, axis=-1)  # (H, W)
    occluded = fb > config.fb_rel * (np.sum(fw**2, axis=-1) + np.sum(bw_w**2, axis=-1)) + config.fb_abs
    if config.motion_boundaries:
        grad = np.zeros(fw.shape[:2], np.float64)  # (H, W): |du|^2 + |dv|^2 over both components
        for c in range(2):
            dx = np.zeros(fw.shape[:2], np.float64)
            dy = np.zeros(fw.shape[:2], np.float64)
            dx[:, :-1] = fw[:, :-1, c] - fw[:, 1:, c]
            dy[:-1, :] = fw[:-1, :, c] - fw[1:, :, c]
            grad += dx**2 + dy**2
        occluded |= grad > config.mb_rel * np.sum(fw**2, axis=-1) + config.mb_abs
    if config.out_of_frame_occluded:
        h, w = fw.shape[:2]
        map_x, map_y = _sample_grid(fw)
        occluded |= (map_x < 0) | (map_x > w - 1) | (map_y < 0) | (map_y > h - 1)
    return occluded


@dataclass
class FlowPair:
    """The ground truth's motion from frame t-1 to frame t, shared by every video judged."""

    fw: np.ndarray  # (H, W, 2) float32 flow t-1 -> t
    valid: np.ndarray  # (H, W) bool, not occluded


def gt_flow_pair(prev_gt: np.ndarray, cur_gt: np.ndarray, config: WarpConfig | None = None) -> FlowPair:
    """Flow and non-occlusion mask of one GT frame pair (RGB uint8 frames)."""
    g0, g1 = grey(prev_gt), grey(cur_gt)
    fw = dis_flow(g0, g1)
    bw = dis_flow(g1, g0)
    return FlowPair(fw=fw, valid=~occlusion_mask(fw, bw, config))


def warp_error(prev_out: np.ndarray, cur_out: np.ndarray, pair: FlowPair) -> float:
    """E_warp of one pair: mean of (W(O_t) - O_{t-1})^2 over non-occluded pixels and channels, in [0, 1] units."""
    _pair(prev_out, cur_out)
    if prev_out.shape[:2] != pair.valid.shape:
        raise InputError(f"frame {prev_out.shape[:2]} and flow {pair.valid.shape} differ in size", field="image")
    o0 = prev_out.astype(np.float32) / 255.0  # (H, W, 3)
    o1_w = warp(cur_out.astype(np.float32) / 255.0, pair.fw)  # (H, W, 3), frame t-1's grid
    sq = (o1_w - o0) ** 2  # (H, W, 3)
    n = int(pair.valid.sum())
    if n == 0:
        return float(sq.mean())
    return float(sq[pair.valid].sum() / (n * sq.shape[2]))


def video_warp_error(frames: list[np.ndarray], gt_frames: list[np.ndarray], config: WarpConfig | None = None) -> float:
    """E_warp of a whole (short, in-memory) video against its ground truth's flow; mean over pairs."""
    if len(frames) != len(gt_frames) or len(frames) < 2:
        raise InputError(
            f"need two or more frames and equal counts, got {len(frames)} and {len(gt_frames)}", field="frames"
        )
    errors = [
        warp_error(frames[t - 1], frames[t], gt_flow_pair(gt_frames[t - 1], gt_frames[t], config))
        for t in range(1, len(frames))
    ]
    return float(np.mean(errors))


# ------------------------------------------------------------------------------ summaries
def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the values that are not None (inf propagates); None when there are none."""
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize to (height, width) - how a smaller input is compared with its ground truth."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)  # (height, width, 3)
