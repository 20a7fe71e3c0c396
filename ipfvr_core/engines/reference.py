"""The ``reference`` engine: bring back the person's own detail from their reference photos.

A degraded face has lost its fine bands (compression blocks, blur, a handful of pixels); a
general super-resolution network can only invent them, and on a face it cannot see it invents
somebody else. The reference photos hold exactly those bands for this person. The engine
registers a reference to every aligned crop and transfers its fine bands under a per-pixel
confidence, keeping the crop's own coarse bands (pose, expression, lighting, colour):

1. **Base restoration** (optional, ``base="realesrgan"``): the baseline engine's Real-ESRGAN at the
   face's native scale cleans blocking and ringing; it supplies the kept coarse bands.
2. **Degrade the reference like the input**: area-downscale the aligned reference to the face's
   native size and back, so that registration compares like with like.
3. **Register**: DIS optical flow from the crop to the degraded reference, at a coarse side
   (``flow_side``, 64 px). Measured on carphone (dlib L2 of the tracked frames to ground truth):
   flow at 256 px 0.56, at 128 px 0.475, at 64 px 0.45 — fine-scale flow on a degraded face
   follows compression blocks, not the face. The flow is Gaussian-smoothed in space and
   exponentially smoothed along the track (the crops are already stabilised by the pipeline's
   landmark smoothing, so what is left moves slowly), which keeps the transferred detail still.
4. **Choose the reference** nearest in pose: the one whose registration agrees best with the
   crop (``agreement`` below), chosen once per clip so that the detail does not switch per frame.
5. **Fuse**: ``out = base + c * (lowpass(base) + highpass(warped reference) - base)``, with the cut at
   ``detail_cutoff`` native pixels and ``c = gate * exp(-(d / confidence_scale)^2)``, where ``d`` is
   the coarse-scale disagreement between the warped degraded reference and the crop. Where the
   expression or an occlusion differs, ``d`` is large and the base restoration stays.

**Hijack guard** (a reference of someone else must not change who the person is). ``agreement``
is the normalised cross-correlation of the band-passed crop and warped degraded reference inside
the face ellipse; no face-recognition network is involved (the evaluation's judges, dlib's ResNet
and FaceNet, are never used here). Measured on carphone crops: the person's own frame 0 scores
0.64 (median), the astronaut and four t1.jpg faces 0.29-0.45. The track's running median agreement
sets ``gate`` (0 below ``gate_low``, 1 above ``gate_high``, linear between), so a face that matches
no reference is restored like the baseline and gets no transfer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from ipfvr_core.engines.base import (
    CancelFn,
    CropNote,
    Engine,
    EngineSession,
    IdentityCondition,
    ProgressFn,
    check_canceled,
    check_push,
)
from ipfvr_core.errors import ConfigError
from ipfvr_core.faces.paste import template_face_mask

BASES = ("realesrgan", "none")  # base restorations the engine can fuse onto


@dataclass(frozen=True)
class ReferenceConfig:
    """Settings of the reference engine. Lengths are fractions of the crop side unless named otherwise."""

    face_size: int = 512  # side S of the aligned crops the pipeline pushes and gets back
    clip_length: int = 8  # crops per push; the reference is chosen once per clip
    base: str = "realesrgan"  # restoration the detail is fused onto: "realesrgan" (baseline network) or "none"
    flow_side: int = 64  # side at which the crop is registered to the reference (coarse is robust, see docstring)
    flow_sigma: float = 1 / 64  # spatial Gaussian smoothing of the flow field
    flow_momentum: float = 0.5  # weight of the previous frame's flow along a track (0 = none)
    detail_cutoff: float = 1.5  # low-pass sigma splitting kept (coarse) from transferred (fine) bands, native px
    confidence_scale: float = 30.0  # grey levels of coarse disagreement at which confidence falls to 1/e
    gate_low: float = 0.45  # track agreement at or below which nothing is transferred
    gate_high: float = 0.55  # track agreement at or above which the transfer is full
    agreement_band: tuple[float, float] = (1.0, 6.0)  # band-pass (fine, coarse) sigmas of the agreement, native px

    def __post_init__(self) -> None:
        if self.face_size < 64:
            raise ConfigError(f"must be >= 64, got {self.face_size}", field="face_size")
        if self.clip_length < 1:
            raise ConfigError(f"must be >= 1, got {self.clip_length}", field="clip_length")
        if self.base not in BASES:
            raise ConfigError(f"must be one of {', '.join(BASES)}, got {self.base!r}", field="base")
        if not 16 <= self.flow_side <= self.face_size:
            raise ConfigError(f"must be in [16, face_size], got {self.flow_side}", field="flow_side")
        if not 0.0 <= self.flow_momentum < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.flow_momentum}", field="flow_momentum")
        for name in ("flow_sigma", "detail_cutoff", "confidence_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0, got {getattr(self, name)}", field=name)
        if not -1.0 <= self.gate_low < self.gate_high <= 1.0:
            raise ConfigError(
                f"need -1 <= gate_low < gate_high <= 1, got {self.gate_low}, {self.gate_high}", field="gate_low"
            )
        fine, coarse = self.agreement_band
        if not 0 < fine < coarse:
            raise ConfigError(f"need 0 < fine < coarse, got {self.agreement_band}", field="agreement_band")


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)  # (S, S)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones run on an area-reduced copy (sigma >= 4 px), which costs a fraction."""
    if sigma < 4.0:
        return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    h, w = x.shape[:2]
    k = sigma / 2.0  # reduction factor: the reduced blur keeps a sigma of 2 px
    small = cv2.resize(x, (max(1, round(w / k)), max(1, round(h / k))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 2.0, borderType=cv2.BORDER_REFLECT_101)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))  # (S, S) each
    gx.setflags(write=False)
    gy.setflags(write=False)
    return gx, gy


@lru_cache(maxsize=8)
def _face_weight(size: int) -> np.ndarray:
    """Soft face ellipse of the paste-back, (S, S) float32: where agreement and confidence are measured."""
    return template_face_mask(size).astype(np.float32)


def degrade_like(reference: np.ndarray, native: int) -> np.ndarray:
    """The aligned reference as the video would show it: area-down to ``native`` px and cubic back up."""
    size = reference.shape[0]
    if native >= size:
        return reference
    small = cv2.resize(reference, (native, native), interpolation=cv2.INTER_AREA)  # (n, n, 3)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)  # (S, S, 3)


def register(crop_grey: np.ndarray, ref_grey: np.ndarray, side: int, sigma_px: float) -> np.ndarray:
    """Flow (S, S, 2) float32 taking each crop pixel to where it lies in the reference, found at ``side``."""
    size = crop_grey.shape[0]
    a = cv2.resize(crop_grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.uint8)  # (s, s)
    b = cv2.resize(ref_grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.uint8)  # (s, s)
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(a, b, None)  # (s, s, 2) in coarse pixels
    flow = cv2.resize(flow, (size, size), interpolation=cv2.INTER_LINEAR) * (size / side)  # (S, S, 2)
    return _blur(flow, sigma_px)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at (x, y) + flow, float32, reflecting at the border."""
    gx, gy = _grid(flow.shape[0])
    src = image.astype(np.float32)
    return cv2.remap(src, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def agreement(crop_grey: np.ndarray, warped_ref_grey: np.ndarray, native: int, band: tuple[float, float]) -> float:
    """Normalised cross-correlation of the two band-passed images inside the face ellipse, in [-1, 1]."""
    size = crop_grey.shape[0]
    fine, coarse = (b * size / native for b in band)
    weight = _face_weight(size)

    def bandpass(x: np.ndarray) -> np.ndarray:
        return (_blur(x, fine) - _blur(x, coarse)) * weight

    a, b = bandpass(crop_grey), bandpass(warped_ref_grey)
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def gate(track_agreement: float, low: float, high: float) -> float:
    """How much transfer a track gets: 0 at or below ``low``, 1 at or above ``high``, linear between."""
    return float(np.clip((track_agreement - low) / (high - low), 0.0, 1.0))


class ReferenceEngine(Engine):
    """Reference-guided detail transfer on top of an optional base restoration; see the module docstring."""

    name = "reference"

    def __init__(
        self,
        config: ReferenceConfig | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str | None = None,
    ) -> None:
        self.config = config if config is not None else ReferenceConfig()
        self.face_size = self.config.face_size
        self.clip_length = self.config.clip_length
        self.base = None
        if self.config.base == "realesrgan":
            from ipfvr_core.engines.baseline import BaselineConfig, BaselineEngine

            self.base = BaselineEngine(BaselineConfig(face_size=self.face_size), device=device, dtype=dtype)

    @property
    def model(self) -> torch.nn.Module | None:
        """The base restoration network (Real-ESRGAN x4plus), shared with background upscaling; None without a base."""
        return None if self.base is None else self.base.model

    def open_session(self, identity: IdentityCondition, *, seed: int | None = None) -> EngineSession:
        """A session for one track; the transfer is deterministic, so ``seed`` has no effect."""
        del seed
        return ReferenceSession(self, identity.aligned_references)

    def versions(self) -> dict[str, str]:
        out = {"engine": self.name, "base": self.config.base, "opencv": cv2.__version__}
        if self.base is not None:
            out["base_weights"] = self.base.versions()["weights"]
        return out

    def restore_base(self, clip: np.ndarray, native: int) -> np.ndarray:
        """(T, S, S, 3) uint8 -> the base restoration of each crop (the crops themselves without a base)."""
        if self.base is None:
            return clip
        side = self.base.input_side(native, clip.shape[1])
        return np.concatenate([self.base.restore_batch(clip[i : i + 1], side) for i in range(len(clip))])


class ReferenceSession(EngineSession):
    """One track: registration state (previous flow, agreement history) and the prepared references."""

    def __init__(self, engine: ReferenceEngine, references: list[np.ndarray]) -> None:
        self._engine = engine
        self._cfg = engine.config
        self._references = [np.ascontiguousarray(r) for r in references]  # (S_r, S_r, 3) uint8 each
        self._prepared: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._previous_flow: np.ndarray | None = None  # (S, S, 2) of the last frame, for temporal smoothing
        self._previous_reference: int | None = None
        self._agreements: list[float] = []  # the chosen reference's agreement, per frame so far
        self._notes: deque[CropNote] = deque()
        self._crop_size = engine.face_size

    # -------------------------------------------------------------- references
    def _reference(self, index: int, size: int, native: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clean (S, S, 3) float32, degraded (S, S, 3) float32, degraded grey (S, S)) of reference ``index``."""
        key = (index, native)
        if key not in self._prepared:
            clean = self._references[index]
            if clean.shape[0] != size:
                clean = cv2.resize(
                    clean, (size, size), interpolation=cv2.INTER_AREA if clean.shape[0] > size else cv2.INTER_CUBIC
                )
            degraded = degrade_like(clean, native)
            self._prepared[key] = (clean.astype(np.float32), degraded.astype(np.float32), _grey(degraded))
        return self._prepared[key]

    # -------------------------------------------------------------- the clip
    def push(
        self,
        clip: np.ndarray,
        *,
        native_size: int | None = None,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:
        check_push(clip, native_size)
        size = clip.shape[1]
        self._crop_size = size
        native = min(size, int(native_size)) if native_size is not None else size
        check_canceled(should_cancel)
        base = self._engine.restore_base(clip, native)  # (T, S, S, 3) uint8
        if progress is not None:
            progress(0, len(clip))
        if not self._references:
            self._notes.extend(CropNote(reference=None, confidence=0.0) for _ in clip)
            return base
        crops_grey = [_grey(c) for c in clip]  # T x (S, S)
        choice = self._choose_reference(crops_grey, size, native)
        clean, degraded, degraded_grey = self._reference(choice, size, native)
        out = np.empty_like(clip)  # (T, S, S, 3)
        for t in range(len(clip)):
            check_canceled(should_cancel)
            flow = register(crops_grey[t], degraded_grey, self._cfg.flow_side, self._cfg.flow_sigma * size)
            if self._previous_flow is not None and self._previous_reference == choice:
                m = self._cfg.flow_momentum
                flow = m * self._previous_flow + (1.0 - m) * flow
            self._previous_flow, self._previous_reference = flow, choice
            warped_degraded = warp(degraded, flow)  # (S, S, 3) float32
            self._agreements.append(
                agreement(crops_grey[t], _grey(warped_degraded.astype(np.uint8)), native, self._cfg.agreement_band)
            )
            track_gate = gate(float(np.median(self._agreements)), self._cfg.gate_low, self._cfg.gate_high)
            out[t], confidence = self._fuse(base[t], clip[t], warp(clean, flow), warped_degraded, native, track_gate)
            self._notes.append(CropNote(reference=choice if track_gate > 0 else None, confidence=confidence))
            if progress is not None:
                progress(t + 1, len(clip))
        return out

    def _choose_reference(self, crops_grey: list[np.ndarray], size: int, native: int) -> int:
        """The reference whose registration agrees best with the clip (its middle crop), nearest in pose."""
        if len(self._references) == 1:
            return 0
        middle = crops_grey[len(crops_grey) // 2]
        scores = []
        for i in range(len(self._references)):
            _, degraded, degraded_grey = self._reference(i, size, native)
            flow = register(middle, degraded_grey, self._cfg.flow_side, self._cfg.flow_sigma * size)
            scores.append(
                agreement(middle, _grey(warp(degraded, flow).astype(np.uint8)), native, self._cfg.agreement_band)
            )
        return int(np.argmax(scores))

    def _fuse(
        self,
        base: np.ndarray,
        crop: np.ndarray,
        warped_clean: np.ndarray,
        warped_degraded: np.ndarray,
        native: int,
        track_gate: float,
    ) -> tuple[np.ndarray, float]:
        """Base's coarse bands + the warped reference's fine bands under confidence; returns (crop, mean confidence)."""
        size = base.shape[0]
        if track_gate <= 0.0:
            return base, 0.0
        cutoff = self._cfg.detail_cutoff * size / native
        b = base.astype(np.float32)
        fine = warped_clean - _blur(warped_clean, cutoff)  # (S, S, 3): the reference's lost bands
        coarse = _blur(b, cutoff)  # (S, S, 3): the video's own pose, expression and light
        disagreement = np.abs(_blur(warped_degraded, 2 * cutoff) - _blur(crop.astype(np.float32), 2 * cutoff))
        confidence = track_gate * np.exp(-((disagreement.mean(axis=-1) / self._cfg.confidence_scale) ** 2))  # (S, S)
        fused = b + confidence[..., None] * (coarse + fine - b)
        weight = _face_weight(size)
        mean_confidence = float((confidence * weight).sum() / weight.sum())
        return np.clip(fused, 0, 255).round().astype(np.uint8), round(mean_confidence, 4)

    def flush(
        self,
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:
        """Nothing is buffered: an empty (0, S, S, 3) array."""
        del progress, should_cancel
        return np.empty((0, self._crop_size, self._crop_size, 3), dtype=np.uint8)

    def crop_notes(self, n: int) -> list[CropNote | None]:
        return [self._notes.popleft() for _ in range(n)]
