"""The restore pass's engine side: each selected track's crops, streamed through its own engine session.

A :class:`TrackStreamer` aligns the selected faces of each decoded frame, collects every track's
crops into clips of the engine's length, pushes them through one :class:`EngineSession` per
track, and hands frames back in order once every face in them has come back. Frames wait in a
short queue meanwhile, which bounds memory by the engine's clip length, not by the video.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ipfvr_core.engines.base import CancelFn, CropNote, Engine, EngineSession, IdentityCondition
from ipfvr_core.faces.align import estimate_affine, native_size, warp_face
from ipfvr_core.faces.base import Face
from ipfvr_core.faces.tracks import Track
from ipfvr_core.restore.stages import Stages
from ipfvr_core.video_io import VideoFrame


@dataclass(frozen=True)
class RestoredFace:
    face: Face  # as the analysis found it (its geometry in the input frame)
    affine: np.ndarray  # (2, 3) input frame -> aligned crop
    crop: np.ndarray  # (S, S, 3) uint8, restored
    note: CropNote | None  # what the engine says about it


@dataclass(frozen=True)
class RestoredFrame:
    frame: VideoFrame  # as decoded
    faces: list[RestoredFace]  # every selected face in it


@dataclass
class _TrackState:
    """One selected track on its way through the engine."""

    faces: list[Face]  # the track's faces, one per frame of the track
    landmarks: np.ndarray  # (T, 5, 2) the smoothed landmarks the crops are aligned on
    last_frame: int
    session: EngineSession | None = None  # open from the first push to the final flush
    crops: list[np.ndarray] = field(default_factory=list)  # (S, S, 3) aligned, not yet pushed
    natives: list[int] = field(default_factory=list)  # each crop's side at the source resolution
    restored: deque[np.ndarray] = field(default_factory=deque)  # back from the engine, not yet handed out
    notes: deque[CropNote | None] = field(default_factory=deque)  # the engine's note on each restored crop


class TrackStreamer:
    """Streams the selected tracks through ``engine``, one session per track, and returns frames in order."""

    def __init__(
        self,
        engine: Engine,
        identity: IdentityCondition,
        tracks: Sequence[Track],
        landmarks: dict[int, np.ndarray],
        face_size: int,
        *,
        seed: int | None,
        stages: Stages,
        should_cancel: CancelFn | None,
    ) -> None:
        self._engine = engine
        self._identity = identity
        self._face_size = face_size
        self._seed = seed
        self._stages = stages
        self._should_cancel = should_cancel
        self._tracks = {
            t.id: _TrackState(faces=t.faces, landmarks=landmarks[t.id], last_frame=t.frames[-1]) for t in tracks
        }
        self._at_frame: dict[int, list[tuple[int, int]]] = defaultdict(list)  # frame -> [(track id, position)]
        for t in tracks:
            for position, index in enumerate(t.frames):
                self._at_frame[index].append((t.id, position))
        self._waiting: deque[tuple[VideoFrame, list[tuple[int, np.ndarray, Face]]]] = deque()

    def add(self, frame: VideoFrame) -> list[RestoredFrame]:
        """Align the selected faces of ``frame`` and push every clip now full; returns the frames now complete."""
        t = time.perf_counter()
        here = self._at_frame.get(frame.index, [])
        faces: list[tuple[int, np.ndarray, Face]] = []  # (track id, affine (2, 3), face)
        for track_id, position in here:
            state = self._tracks[track_id]
            affine = estimate_affine(state.landmarks[position], self._face_size)
            state.crops.append(warp_face(frame.image, affine, self._face_size))
            state.natives.append(native_size(affine, self._face_size))
            faces.append((track_id, affine, state.faces[position]))
        self._stages.add("align", t)
        self._waiting.append((frame, faces))
        for track_id, _ in here:
            state = self._tracks[track_id]
            final = frame.index == state.last_frame
            if final or len(state.crops) >= self._engine.clip_length:
                self._push(state, final=final)
        return self._complete()

    def finish(self) -> list[RestoredFrame]:
        """Flush every session still open; returns the remaining frames."""
        for state in self._tracks.values():
            if state.session is not None or state.crops:
                self._push(state, final=True)
        done = self._complete()
        if self._waiting:
            raise RuntimeError(f"engine {self._engine.name!r} returned fewer crops than it was given")
        return done

    def _push(self, state: _TrackState, *, final: bool) -> None:
        t = time.perf_counter()
        if state.session is None:
            state.session = self._engine.open_session(self._identity, seed=self._seed)
        session = state.session
        if state.crops:
            clip = np.stack(state.crops)  # (T, S, S, 3)
            restored = session.push(clip, native_size=int(np.median(state.natives)), should_cancel=self._should_cancel)
            state.restored.extend(restored)
            state.notes.extend(session.crop_notes(len(restored)))
            state.crops.clear()
            state.natives.clear()
        if final:
            restored = session.flush(should_cancel=self._should_cancel)
            state.restored.extend(restored)
            state.notes.extend(session.crop_notes(len(restored)))
            state.session = None
        self._stages.add("engine", t)

    def _complete(self) -> list[RestoredFrame]:
        """The waiting frames, from the oldest, whose every face has come back from the engine."""
        done = []
        while self._waiting and all(self._tracks[track_id].restored for track_id, _, _ in self._waiting[0][1]):
            frame, faces = self._waiting.popleft()
            restored = []
            for track_id, affine, face in faces:
                state = self._tracks[track_id]
                restored.append(RestoredFace(face, affine, state.restored.popleft(), state.notes.popleft()))
            done.append(RestoredFrame(frame, restored))
        return done
