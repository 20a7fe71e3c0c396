"""Test doubles of the engine interface (tests only)."""

from __future__ import annotations

import numpy as np

from ipfvr_core.engines.base import CancelFn, Engine, EngineSession, IdentityCondition, ProgressFn, check_canceled


def checkerboard(size: int, amplitude: int = 40) -> np.ndarray:
    """A high-frequency pattern that colour matching (a low-pass transfer) cannot remove."""
    yy, xx = np.mgrid[0:size, 0:size]
    return np.where(((yy // 2) + (xx // 2)) % 2 == 0, amplitude, -amplitude).astype(np.int16)[..., None]  # (S, S, 1)


class CheckerboardSessionDouble(EngineSession):
    """Adds a checkerboard to each crop and holds the last ``delay`` crops back until flush."""

    def __init__(self, engine: CheckerboardEngineDouble) -> None:
        self.engine = engine
        self.held: list[np.ndarray] = []

    def _mark(self, crops: list[np.ndarray]) -> np.ndarray:
        size = self.engine.face_size
        if not crops:
            return np.zeros((0, size, size, 3), np.uint8)
        stack = np.stack(crops).astype(np.int16) + checkerboard(size)[None]  # (T, S, S, 3)
        return np.clip(stack, 0, 255).astype(np.uint8)

    def push(self, clip: np.ndarray, *, native_size: int | None = None, progress: ProgressFn | None = None,
             should_cancel: CancelFn | None = None) -> np.ndarray:
        check_canceled(should_cancel)
        assert clip.ndim == 4 and clip.shape[1:] == (self.engine.face_size, self.engine.face_size, 3)
        self.engine.pushed += len(clip)
        self.engine.native_sizes.append(native_size)
        self.held.extend(clip)
        out, self.held = self.held[: -self.engine.delay or None], self.held[-self.engine.delay:] if self.engine.delay else []
        return self._mark(out)

    def flush(self, *, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None) -> np.ndarray:
        out, self.held = self.held, []
        return self._mark(out)


class CheckerboardEngineDouble(Engine):
    """An engine double whose output is easy to find in the frame, with a configurable delay."""

    name = "checkerboard-double"

    def __init__(self, *, face_size: int = 128, clip_length: int = 5, delay: int = 3) -> None:
        self.face_size = face_size
        self.clip_length = clip_length
        self.delay = delay
        self.pushed = 0
        self.sessions = 0
        self.native_sizes: list[int | None] = []

    def open_session(self, identity: IdentityCondition, *, seed: int | None = None) -> EngineSession:
        assert identity.embeddings, "the pipeline must pass the reference embeddings"
        self.sessions += 1
        return CheckerboardSessionDouble(self)
