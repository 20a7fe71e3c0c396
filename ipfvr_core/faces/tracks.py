"""Face tracks: link per-frame detections over time and bridge short misses (``targets`` picks the ones to restore).

Linking is frame by frame. Each live track predicts its box at the current frame (constant
velocity from its last two detections), and detections are assigned to tracks by the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``) on ``1 - IoU``, with pairs below
``iou_threshold`` forbidden. When identity embeddings and a distance function are given, the
distance between the track's mean embedding and the detection's is added to the cost (a
tie-breaker for faces that cross or touch) and pairs farther apart than
``max_embedding_distance`` are forbidden (a veto against swapping identities).

A track survives up to ``max_gap`` frames without a detection. When it is matched again, the
missed frames are filled with faces whose bbox and landmarks are interpolated linearly, marked
in :attr:`Track.interpolated`, so a brief detector miss does not make the face flicker back to the
degraded original. A longer miss ends the track; the person's next appearance starts a new one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ipfvr_core.errors import InputError
from ipfvr_core.faces.base import Face

DistanceFn = Callable[[np.ndarray, np.ndarray], float]

_FORBIDDEN = 1e6  # assignment cost of a pair that must not be linked


@dataclass
class Track:
    """One face followed over time: ``faces[i]`` is the face in frame ``frames[i]`` (strictly increasing)."""

    id: int  # unique within one link_tracks() result, in order of first appearance
    frames: list[int]  # frame indices, strictly increasing, contiguous where gaps were bridged
    faces: list[Face]  # the face in each of those frames
    interpolated: list[bool] = field(default_factory=list)  # True where the face was filled in, not detected

    def __post_init__(self) -> None:
        if not self.frames:
            raise InputError("a track needs at least one frame", field="track", code="invalid_option")
        if not self.interpolated:
            self.interpolated = [False] * len(self.frames)
        if not (len(self.frames) == len(self.faces) == len(self.interpolated)):
            raise InputError(
                "frames, faces and interpolated must have the same length", field="track", code="invalid_option"
            )
        if any(b <= a for a, b in zip(self.frames, self.frames[1:], strict=False)):
            raise InputError("track frames must be strictly increasing", field="track", code="invalid_option")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def start(self) -> int:
        """First frame of the track."""
        return self.frames[0]

    @property
    def end(self) -> int:
        """Last frame of the track (inclusive)."""
        return self.frames[-1]

    @property
    def num_detected(self) -> int:
        """Number of frames with a real detection (not interpolated)."""
        return len(self.interpolated) - sum(self.interpolated)

    def kps(self) -> np.ndarray:
        """Landmarks of every entry: (T, 5, 2) float32."""
        return np.stack([np.asarray(f.kps, dtype=np.float32) for f in self.faces])  # (T, 5, 2)

    def bboxes(self) -> np.ndarray:
        """Boxes of every entry: (T, 4) float32 x0, y0, x1, y1."""
        return np.stack([np.asarray(f.bbox, dtype=np.float32) for f in self.faces])  # (T, 4)

    def embeddings(self) -> np.ndarray:
        """Embeddings of the detected entries that have one: (N, D) float32; (0, 0) when none."""
        embs = [
            np.asarray(f.embedding, dtype=np.float32)
            for f, interp in zip(self.faces, self.interpolated, strict=True)
            if f.embedding is not None and not interp
        ]
        return np.stack(embs) if embs else np.zeros((0, 0), dtype=np.float32)  # (N, D)

    def mean_embedding(self, *, normalize: bool = False) -> np.ndarray | None:
        """Mean of :meth:`embeddings` (D,) float32, L2-normalised if ``normalize``; None when there are none."""
        embs = self.embeddings()
        if embs.shape[0] == 0:
            return None
        mean: np.ndarray = embs.mean(axis=0)  # (D,)
        if normalize:
            mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return mean.astype(np.float32)

    def face_at(self, frame: int) -> Face | None:
        """The face in ``frame``, or None when the track has no entry there."""
        i = bisect_left(self.frames, frame)
        return self.faces[i] if i < len(self.frames) and self.frames[i] == frame else None

    def with_kps(self, kps: np.ndarray) -> Track:
        """A copy whose faces carry ``kps`` (T, 5, 2) (e.g. smoothed); boxes, scores and embeddings are kept."""
        new = np.asarray(kps, dtype=np.float32)
        if new.shape != (len(self), 5, 2):
            raise InputError(f"kps must be ({len(self)}, 5, 2), got {new.shape}", field="kps", code="invalid_option")
        faces = [
            Face(bbox=f.bbox, kps=k.copy(), score=f.score, embedding=f.embedding, attributes=dict(f.attributes))
            for f, k in zip(self.faces, new, strict=True)
        ]
        return Track(id=self.id, frames=list(self.frames), faces=faces, interpolated=list(self.interpolated))

    def overlaps(self, other: Track) -> bool:
        """Whether the two tracks share at least one frame."""
        if self.end < other.start or other.end < self.start:
            return False
        return not set(self.frames).isdisjoint(other.frames)


def bbox_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) (x0, y0, x1, y1) -> (N, M) float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)  # (N, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)  # (M, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)  # (N, M)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)  # (N,)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # (M,)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _interpolate_face(a: Face, b: Face, w: float) -> Face:
    """The face a fraction ``w`` of the way from ``a`` to ``b`` (bbox and landmarks linear)."""
    bbox = ((1.0 - w) * np.asarray(a.bbox, np.float64) + w * np.asarray(b.bbox, np.float64)).astype(np.float32)
    kps = ((1.0 - w) * np.asarray(a.kps, np.float64) + w * np.asarray(b.kps, np.float64)).astype(np.float32)
    return Face(bbox=bbox, kps=kps, score=min(a.score, b.score), embedding=None, attributes={"interpolated": True})


class _LiveTrack:
    """Mutable state of a track while linking."""

    def __init__(self, track_id: int, frame: int, face: Face) -> None:
        self.track = Track(id=track_id, frames=[frame], faces=[face], interpolated=[False])
        self.last_frame = frame
        self.velocity = np.zeros(4)  # (4,) bbox change per frame
        self.emb_sum: np.ndarray | None = None
        self.emb_count = 0
        self._add_embedding(face)

    def _add_embedding(self, face: Face) -> None:
        if face.embedding is None:
            return
        emb = np.asarray(face.embedding, dtype=np.float64)
        self.emb_sum = emb.copy() if self.emb_sum is None else self.emb_sum + emb
        self.emb_count += 1

    @property
    def embedding(self) -> np.ndarray | None:
        return None if self.emb_sum is None else self.emb_sum / self.emb_count

    def predicted_bbox(self, frame: int) -> np.ndarray:
        last = np.asarray(self.track.faces[-1].bbox, dtype=np.float64)
        return last + self.velocity * (frame - self.last_frame)

    def add(self, frame: int, face: Face) -> None:
        prev = self.track.faces[-1]
        gap = frame - self.last_frame
        for k in range(1, gap):  # bridge the missed frames
            self.track.frames.append(self.last_frame + k)
            self.track.faces.append(_interpolate_face(prev, face, k / gap))
            self.track.interpolated.append(True)
        self.velocity = (np.asarray(face.bbox, np.float64) - np.asarray(prev.bbox, np.float64)) / gap
        self.track.frames.append(frame)
        self.track.faces.append(face)
        self.track.interpolated.append(False)
        self.last_frame = frame
        self._add_embedding(face)


def _embedding_cost(
    live: list[_LiveTrack], faces: list[Face], distance_fn: DistanceFn, max_distance: float | None, weight: float
) -> np.ndarray:
    """(L, F) added cost, with ``_FORBIDDEN`` where the identity veto applies; 0 where an embedding is missing."""
    cost = np.zeros((len(live), len(faces)))
    scale = max_distance if max_distance is not None else 1.0
    for i, lt in enumerate(live):
        t_emb = lt.embedding
        if t_emb is None:
            continue
        for j, face in enumerate(faces):
            if face.embedding is None:
                continue
            d = float(distance_fn(t_emb, np.asarray(face.embedding, dtype=np.float64)))
            if max_distance is not None and d > max_distance:
                cost[i, j] = _FORBIDDEN
            else:
                cost[i, j] = weight * d / scale
    return cost


def faces_to_embed(
    boxes: np.ndarray,
    recent_boxes: np.ndarray,
    *,
    sampled: bool,
    iou_threshold: float = 0.3,
    crowd_factor: float = 1.5,
) -> list[int]:
    """Which faces of a frame need an identity embedding when embeddings are sampled over time.

    ``boxes`` (F, 4) are this frame's faces, ``recent_boxes`` (R, 4) those of the last few frames. On a
    ``sampled`` frame, every face. Otherwise the faces IoU linking alone could get wrong: one that
    overlaps no recent box by ``iou_threshold`` (a track starts or comes back), and faces whose centres
    are closer than ``crowd_factor`` times their mean width (tracks that could swap).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # (F, 4)
    if sampled or len(boxes) == 0:
        return list(range(len(boxes)))
    recent = np.asarray(recent_boxes, dtype=np.float64).reshape(-1, 4)  # (R, 4)
    wanted: set[int] = set()
    if len(recent) == 0:
        wanted.update(range(len(boxes)))
    else:
        best = bbox_iou(boxes, recent).max(axis=1)  # (F,)
        wanted.update(int(i) for i in np.flatnonzero(best < iou_threshold))
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (F, 2)
    widths = boxes[:, 2] - boxes[:, 0]  # (F,)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if np.linalg.norm(centres[i] - centres[j]) < crowd_factor * (widths[i] + widths[j]) / 2:
                wanted.update((i, j))
    return sorted(wanted)


def link_tracks(
    detections: Sequence[list[Face]],
    *,
    iou_threshold: float = 0.3,
    max_gap: int = 5,
    distance_fn: DistanceFn | None = None,
    max_embedding_distance: float | None = None,
    embedding_weight: float = 1.0,
) -> list[Track]:
    """Link ``detections`` (one list of faces per frame, frame index = list index) into tracks.

    ``iou_threshold``: least IoU between a track's predicted box and a detection to link them.
    ``max_gap``: most consecutive frames a track may miss and still continue (bridged by
    interpolation). ``distance_fn`` (e.g. ``FaceAnalyzer.distance``): when given, faces carrying
    embeddings add ``embedding_weight * distance / max_embedding_distance`` (or ``/ 1`` without a
    maximum) to the ``1 - IoU`` cost, and pairs beyond ``max_embedding_distance`` are never linked.
    Returns the tracks ordered by first frame.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(
            f"iou_threshold must be in (0, 1], got {iou_threshold!r}", field="iou_threshold", code="invalid_option"
        )
    if max_gap < 0:
        raise InputError(f"max_gap must be >= 0, got {max_gap!r}", field="max_gap", code="invalid_option")
    if embedding_weight < 0:
        raise InputError(
            f"embedding_weight must be >= 0, got {embedding_weight!r}", field="embedding_weight", code="invalid_option"
        )
    if max_embedding_distance is not None and max_embedding_distance <= 0:
        raise InputError(
            f"max_embedding_distance must be > 0, got {max_embedding_distance!r}",
            field="max_embedding_distance",
            code="invalid_option",
        )

    live: list[_LiveTrack] = []
    done: list[Track] = []
    next_id = 0
    for frame, faces in enumerate(detections):
        still = [lt for lt in live if frame - lt.last_frame <= max_gap + 1]
        done.extend(lt.track for lt in live if frame - lt.last_frame > max_gap + 1)
        live = still
        matched_faces: set[int] = set()
        if live and faces:
            pred = np.stack([lt.predicted_bbox(frame) for lt in live])  # (L, 4)
            boxes = np.stack([np.asarray(f.bbox, dtype=np.float64) for f in faces])  # (F, 4)
            iou = bbox_iou(pred, boxes)  # (L, F)
            cost = np.where(iou >= iou_threshold, 1.0 - iou, _FORBIDDEN)
            if distance_fn is not None:
                cost = cost + _embedding_cost(live, faces, distance_fn, max_embedding_distance, embedding_weight)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] < _FORBIDDEN:
                    live[r].add(frame, faces[c])
                    matched_faces.add(int(c))
        for j, face in enumerate(faces):
            if j not in matched_faces:
                live.append(_LiveTrack(next_id, frame, face))
                next_id += 1
    done.extend(lt.track for lt in live)
    return sorted(done, key=lambda t: (t.start, t.id))
