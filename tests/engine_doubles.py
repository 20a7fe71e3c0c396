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

    def push(
        self,
        clip: np.ndarray,
        *,
        native_size: int | None = None,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:
        check_canceled(should_cancel)
        assert clip.ndim == 4 and clip.shape[1:] == (self.engine.face_size, self.engine.face_size, 3)
        self.engine.pushed += len(clip)
        self.engine.native_sizes.append(native_size)
        self.held.extend(clip)
        out, self.held = (
            self.held[: -self.engine.delay or None],
            self.held[-self.engine.delay :] if self.engine.delay else [],
        )
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


def stamp(session: int, position: int, size: int, amplitude: int = 40) -> np.ndarray:
    """(S, S) int16: the +-``amplitude`` pattern of 4-px blocks that names crop ``position`` of ``session``.

    Seeded noise: the paste's colour match (a low-pass transfer) keeps it, and two different stamps
    are uncorrelated, so the crop pasted on a frame can be named by correlation.
    """
    rng = np.random.default_rng(1000 * session + position)
    blocks = rng.choice(np.array([-amplitude, amplitude], np.int16), size=(size // 4 + 1, size // 4 + 1))
    return np.kron(blocks, np.ones((4, 4), np.int16))[:size, :size]  # (S, S)


class StampSessionDouble(EngineSession):
    """Adds to each crop the :func:`stamp` naming its session and position; holds ``delay`` crops back."""

    def __init__(self, index: int, face_size: int, delay: int) -> None:
        self.index = index
        self.face_size = face_size
        self.delay = delay
        self.received = 0
        self.held: list[np.ndarray] = []

    def push(
        self,
        clip: np.ndarray,
        *,
        native_size: int | None = None,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:
        for crop in clip:
            marked = crop.astype(np.int16) + stamp(self.index, self.received, self.face_size)[..., None]  # (S, S, 3)
            self.held.append(np.clip(marked, 0, 255).astype(np.uint8))
            self.received += 1
        cut = len(self.held) - self.delay
        out, self.held = self.held[: max(cut, 0)], self.held[max(cut, 0) :]
        return np.stack(out) if out else np.zeros((0, self.face_size, self.face_size, 3), np.uint8)

    def flush(self, *, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None) -> np.ndarray:
        out, self.held = self.held, []
        return np.stack(out) if out else np.zeros((0, self.face_size, self.face_size, 3), np.uint8)


class StampEngineDouble(Engine):
    """An engine double whose every output crop says which crop it is (:func:`stamp`).

    Session ``i`` holds back ``delays[i % len(delays)]`` crops, so tracks restored side by side
    fall behind by different amounts and their outputs arrive out of step with the frames.
    """

    name = "stamp-double"

    def __init__(self, *, face_size: int = 128, clip_length: int = 3, delays: tuple[int, ...] = (0, 4)) -> None:
        self.face_size = face_size
        self.clip_length = clip_length
        self.delays = delays
        self.sessions = 0

    def open_session(self, identity: IdentityCondition, *, seed: int | None = None) -> EngineSession:
        session = StampSessionDouble(self.sessions, self.face_size, self.delays[self.sessions % len(self.delays)])
        self.sessions += 1
        return session
