"""Upscaling the whole frame (``RestoreOptions.upscale``): the background under the restored faces.

Restoring a face at 2x or 4x is only half a job if the rest of the frame stays a blurry
enlargement, so the background is upscaled too, by one of two methods:

- ``realesrgan``: the pretrained Real-ESRGAN x4plus network (the same RRDBNet the baseline engine
  runs, shared when it is loaded). A frame is not fed to it whole: RRDBNet's activations take about
  64 channels x (4H x 4W) floats, so a 1080p frame would need tens of GB. The frame is cut into
  near-equal tiles of at most ``tile`` px a side; each tile is run with ``pad`` px of its
  neighbours around it (the network's convolutions near a tile edge then see real content, not
  zero padding), and the padding is cropped from the x4 output. Every window has the same shape,
  the largest tile plus ``pad`` on each side, clipped to the frame (windows at the frame's edge
  are shifted inwards, which gives their tile more context, never less), so memory is bounded by
  the tile size whatever the frame size, and windows batch without padding. For x2, each tile's
  x4 output is area-resized by 1/2 (a 2x2 box average; tile origins fall on multiples of 4 at x4,
  so this equals area-resizing the whole x4 frame).
  RRDBNet's receptive field is far wider than any affordable pad, but its weight is concentrated
  near the centre. Measured against the untiled network on a 96x40 carphone crop cut into 32 px
  tiles (absolute difference in grey levels, mean / 99th percentile / max): pad 0: 3.4 / 25 / 104
  (visible seams); pad 8: 1.1 / 9 / 34; pad 16: 0.21 / 2 / 11. Hence ``pad`` 16.
- ``bicubic``: ``cv2.INTER_CUBIC``, no network; also what the comparison video shows for the input.

Pixel-centre convention. Both methods map output pixel X to input coordinate (X + 0.5) / s - 0.5
(OpenCV's resize convention; RRDBNet's two nearest-neighbour x2 upsamplings put input pixel x at
the centre of output block [4x, 4x + 3]). :func:`upscaled_affine` uses the same mapping, so a face
pasted onto the upscaled frame lands where it was in the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ipfvr_core.errors import InputError
from ipfvr_core.options import job_option

if TYPE_CHECKING:
    import torch

    from ipfvr_core.limits import VideoLimits

NETWORK_SCALE = 4  # Real-ESRGAN x4plus upscales by 4


@dataclass(frozen=True)
class TilingConfig:
    """How a frame is cut for the network. Sides are input pixels."""

    # largest side of the part of the frame one window produces: a 224^2 (192 + 2 pad) fp32 window
    # grows the process by 0.64 GB on CPU (0.34 GB at 144^2, measured), and a 176x144 frame is one
    # window (tile 128 cuts it into 4 overlapping windows: ~3x the time, measured)
    tile: int = 192
    pad: int = 16  # context taken from the neighbours on every side of a tile; cropped after the network
    forward_batch: int = 4  # windows per network call on an accelerator
    cpu_forward_batch: int = 1  # windows per network call on CPU (batching gains nothing there)

    def __post_init__(self) -> None:
        if self.tile < 8:
            raise InputError(f"must be >= 8, got {self.tile}", field="tile", code="invalid_option")
        if self.pad < 0:
            raise InputError(f"must be >= 0, got {self.pad}", field="pad", code="invalid_option")
        for name in ("forward_batch", "cpu_forward_batch"):
            if getattr(self, name) < 1:
                raise InputError(f"must be >= 1, got {getattr(self, name)}", field=name, code="invalid_option")


def check_output_size(width: int, height: int, scale: int, limits: VideoLimits) -> None:
    """The upscaled output must respect the same size limits as an input (encoder time, memory, storage)."""
    out_w, out_h = width * scale, height * scale
    if out_w > limits.max_width or out_h > limits.max_height or out_w * out_h > limits.max_pixels:
        raise InputError(
            f"x{scale} of {width}x{height} is {out_w}x{out_h}, above the output limits "
            f"({limits.max_width}x{limits.max_height}, {limits.max_pixels} pixels); use a smaller factor",
            field="upscale",
            code="limit_exceeded",
        )


def upscaled_affine(affine: np.ndarray, scale: int) -> np.ndarray:
    """The frame -> crop affine (2, 3) of a face for the frame upscaled by ``scale``.

    An upscaled pixel X sits at input coordinate x = (X + 0.5) / s - 0.5, so
    crop = A[:, :2] (X / s + (0.5 / s - 0.5)) + A[:, 2].
    """
    a = np.asarray(affine, dtype=np.float64)
    if scale == 1:
        return a
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = a[:, :2] / scale
    out[:, 2] = a[:, 2] + a[:, :2] @ np.full(2, 0.5 / scale - 0.5)
    return out


def upscaled_points(points: np.ndarray, scale: int) -> np.ndarray:
    """Input-frame points (..., 2) in the frame upscaled by ``scale`` (same pixel-centre convention)."""
    p = np.asarray(points, dtype=np.float32)
    return p if scale == 1 else (p + 0.5) * scale - 0.5


def bicubic_upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (sH, sW, 3) uint8 with cv2.INTER_CUBIC (the image itself when scale is 1)."""
    if scale == 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)  # (sH, sW, 3)


def _tile_bounds(length: int, tile: int) -> list[tuple[int, int]]:
    """[start, stop) of ceil(length / tile) near-equal tiles covering [0, length)."""
    count = max(1, math.ceil(length / tile))
    cuts = [round(i * length / count) for i in range(count + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _window_start(start: int, pad: int, window: int, length: int) -> int:
    """Where a ``window``-long window around tile [start, ...) begins: ``pad`` before it, kept inside."""
    return min(max(0, start - pad), length - window)


class BackgroundUpscaler:
    """Upscales whole RGB frames by 2 or 4 with Real-ESRGAN x4plus in tiles, or bicubic.

    ``model`` (required for ``realesrgan``) is a loaded x4plus RRDBNet (or any module mapping
    (B, 3, h, w) in [0, 1] to (B, 3, 4h, 4w)); frames go to its device in its dtype. The Restorer
    passes the baseline engine's own network when that engine is loaded, so no second copy is made.
    """

    def __init__(
        self,
        scale: int,
        method: str = "realesrgan",
        *,
        model: torch.nn.Module | None = None,
        config: TilingConfig | None = None,
    ) -> None:
        job_option("upscale").check(scale)
        job_option("background").check(method)
        if scale == 1:
            raise InputError("x1 needs no upscaler", field="upscale", code="invalid_option")
        if method == "realesrgan" and model is None:
            raise InputError(
                "the realesrgan background needs the x4plus network", field="background", code="invalid_option"
            )
        self.scale = scale
        self.method = method
        self.config = config or TilingConfig()
        self._model = model
        self.peak_input_shape: tuple[int, ...] | None = None  # largest (B, 3, h, w) given to the network so far
        self.windows_run = 0  # windows run through the network so far
        first = next(model.parameters(), None) if model is not None else None
        self._device = first.device if first is not None else None  # None: CPU
        self._dtype = first.dtype if first is not None else None  # None: float32

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (sH, sW, 3) uint8."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                f"expected an (H, W, 3) uint8 frame, got {image.shape} {image.dtype}",
                field="frame",
                code="invalid_option",
            )
        if self.method == "bicubic":
            return bicubic_upscale(image, self.scale)
        return self._tiled(image)

    # ------------------------------------------------------------------ Real-ESRGAN in tiles
    def _tiled(self, image: np.ndarray) -> np.ndarray:
        cfg = self.config
        h, w = image.shape[:2]
        s = self.scale
        rows, cols = _tile_bounds(h, cfg.tile), _tile_bounds(w, cfg.tile)
        # one window shape for all: the largest tile plus its padding, clipped to the frame
        win_h = min(h, max(b - a for a, b in rows) + 2 * cfg.pad)
        win_w = min(w, max(b - a for a, b in cols) + 2 * cfg.pad)
        on_cpu = self._device is None or self._device.type == "cpu"
        batch = cfg.cpu_forward_batch if on_cpu else cfg.forward_batch
        # (y0, y1, x0, x1) of each tile and (wy, wx) of its window, row by row
        jobs = [
            ((y0, y1, x0, x1), (_window_start(y0, cfg.pad, win_h, h), _window_start(x0, cfg.pad, win_w, w)))
            for y0, y1 in rows
            for x0, x1 in cols
        ]
        out = np.empty((h * s, w * s, 3), dtype=np.uint8)  # (sH, sW, 3)
        k = NETWORK_SCALE
        for first in range(0, len(jobs), batch):
            group = jobs[first : first + batch]
            windows = np.stack([image[wy : wy + win_h, wx : wx + win_w] for _, (wy, wx) in group])  # (B, wh, ww, 3)
            big = self._forward(windows)  # (B, 4wh, 4ww, 3) uint8
            for ((y0, y1, x0, x1), (wy, wx)), up in zip(group, big, strict=True):
                part = up[(y0 - wy) * k : (y1 - wy) * k, (x0 - wx) * k : (x1 - wx) * k]  # (4th, 4tw, 3)
                if s != k:  # (s th, s tw, 3): a 2x2 box average of the x4 tile
                    part = cv2.resize(part, ((x1 - x0) * s, (y1 - y0) * s), interpolation=cv2.INTER_AREA)
                out[y0 * s : y1 * s, x0 * s : x1 * s] = part
        return out

    def _forward(self, windows: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) uint8 -> (B, 4h, 4w, 3) uint8 through the network."""
        import torch  # here, not at import: the CLI sets OpenMP's wait policy before torch loads

        assert self._model is not None
        with torch.inference_mode():
            x = torch.from_numpy(windows)
            if self._device is not None:
                x = x.to(self._device)
            x = x.permute(0, 3, 1, 2)  # (B, 3, h, w), channels-last strides
            x = x.to(self._dtype or torch.float32).div_(255.0)
            shape = tuple(x.shape)
            if self.peak_input_shape is None or math.prod(shape) > math.prod(self.peak_input_shape):
                self.peak_input_shape = shape
            y = self._model(x).clamp_(0.0, 1.0).mul_(255.0).round_()  # (B, 3, 4h, 4w)
            self.windows_run += shape[0]
            return y.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, 4h, 4w, 3)
