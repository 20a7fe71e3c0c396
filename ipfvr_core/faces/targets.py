"""Which face tracks a job restores: the reference's person (``faces="target"``) or every face.

:func:`select_tracks` is the identity rule: tracks close enough to the references, never two at
once. :func:`select_targets` is the job's policy around it: short or weak tracks are detector
noise; a face that does not stand out from another on screen at the same time is refused rather
than guessed; and when degradation has pushed even the right person past the identity gate, the
one face that dominates the video is taken, with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ipfvr_core.errors import InputError
from ipfvr_core.faces.base import Face, FaceAnalyzer
from ipfvr_core.faces.tracks import DistanceFn, Track, bbox_iou
from ipfvr_core.options import FaceMode


@dataclass(frozen=True)
class TargetRules:
    """How :func:`select_targets` chooses (RestoreOptions' fields of the same meaning)."""

    faces: FaceMode  # the reference's person only, or every face
    max_distance: float  # identity gate of a target track
    min_track_frames: int  # shorter tracks are detector noise
    min_track_score: float | None  # a track's best detection must reach this (None: any)
    margin: float  # with several faces on screen, the target must be this much closer than the rest


@dataclass(frozen=True)
class Selection:
    tracks: list[Track]  # to restore, ordered by first frame
    warning: str | None = None  # for the report, when the choice is not the plain rule


def default_target_distance(analyzer: FaceAnalyzer) -> float:
    """The identity gate when a job sets none."""
    # Degradation alone moves a face far from its clean self (carphone: dlib L2 ~0.72 against a
    # pristine frame, above dlib's 0.6 same-person threshold), so the target gate is looser than
    # the analyzer's same-person threshold. With several people, the closest track still wins.
    return analyzer.match_threshold * 1.25


def track_identity_distance(track: Track, references: np.ndarray, distance_fn: DistanceFn) -> float | None:
    """Median over the track's detected faces of the mean distance to ``references`` (R, D); None without embeddings."""
    embs = track.embeddings()  # (N, D)
    if embs.shape[0] == 0:
        return None
    per_face = [float(np.mean([distance_fn(e, r) for r in references])) for e in embs]
    return float(np.median(per_face))


def select_tracks(
    tracks: Sequence[Track],
    reference_embeddings: Sequence[np.ndarray] | np.ndarray,
    distance_fn: DistanceFn,
    threshold: float,
    mode: FaceMode = "target",
    *,
    min_length: int = 5,
) -> list[Track]:
    """The tracks to restore, ordered by first frame.

    ``"target"``: the tracks of the reference person. A track's distance is
    :func:`track_identity_distance` (median over its faces of the mean distance to the
    references). Candidates are the tracks under ``threshold``; taken from the closest up, a
    candidate is kept unless it shares a frame with a track already kept. One person is in a
    frame at most once, so a candidate overlapping a closer match in time is another person
    (a look-alike, a photo of them on the wall, a reflection), while the person leaving and coming
    back yields several non-overlapping tracks, all kept. Returns [] when no track is under the
    threshold; the caller decides what to do (pass frames through and report it).

    ``"all"``: every track with at least ``min_length`` entries (detected + bridged), whatever
    the identity; the references are not used.
    """
    if mode not in ("target", "all"):
        raise InputError(f"mode must be target or all, got {mode!r}", field="mode", code="invalid_option")
    if mode == "all":
        if min_length < 1:
            raise InputError(f"min_length must be >= 1, got {min_length!r}", field="min_length", code="invalid_option")
        return sorted((t for t in tracks if len(t) >= min_length), key=lambda t: (t.start, t.id))
    refs = [np.asarray(r, dtype=np.float64) for r in reference_embeddings]
    if not refs:
        raise InputError(
            "target mode needs at least one reference embedding", field="reference_embeddings", code="invalid_option"
        )
    scored: list[tuple[float, Track]] = []
    for track in tracks:
        dist = track_identity_distance(track, np.stack(refs), distance_fn)  # refs: (R, D)
        if dist is not None and dist < threshold:
            scored.append((dist, track))
    scored.sort(key=lambda item: (item[0], item[1].start, item[1].id))
    kept: list[Track] = []
    for _, track in scored:
        if not any(track.overlaps(k) for k in kept):
            kept.append(track)
    return sorted(kept, key=lambda t: (t.start, t.id))


def select_targets(
    tracks: Sequence[Track], references: Sequence[np.ndarray], analyzer: FaceAnalyzer, rules: TargetRules
) -> Selection:
    """The tracks to restore.

    With ``faces="target"``, tracks whose identity is within ``rules.max_distance`` of the
    references, closest first. Heavy degradation can push even the right person past any threshold
    (carphone_distorted: dlib L2 ~0.7 to its own clean frame, astronaut-like ~0.8), so when nothing
    is within it and the video never shows two faces at once, the one person on screen is taken as
    the target, with a warning. With two or more faces at once and no match, the job is refused:
    restoring the wrong person is worse than nothing.
    """
    if not tracks:
        return Selection([], "no face was found in the video; frames were copied unchanged")
    # Short tracks are detector noise; left in, one lucky frame could outrank a long track.
    # (A clip shorter than twice the minimum lowers it, or nothing could ever qualify.)
    frames_seen = max(t.end for t in tracks) + 1
    min_len = max(1, min(rules.min_track_frames, frames_seen // 2))
    long_enough = [t for t in tracks if len(t) >= min_len and _clears(t, rules.min_track_score)]
    if not long_enough:
        return Selection(
            [],
            f"faces were detected only in isolated frames (no track of {min_len}+ frames); "
            "frames were copied unchanged",
        )
    floor = analyzer.track_score
    steady = [t for t in long_enough if floor is None or _median_score(t) >= floor]
    if not steady:
        return Selection(
            [],
            f"only weak detections were found (no track's median face score reaches {floor}); "
            "frames were copied unchanged",
        )
    selected = select_tracks(steady, references, analyzer.distance, rules.max_distance, rules.faces, min_length=min_len)
    if rules.faces == "all":
        return Selection(selected)
    refs = np.stack(references)  # (R, D)
    dist = {t.id: track_identity_distance(t, refs, analyzer.distance) for t in steady}
    for chosen in selected:
        own = dist[chosen.id]
        assert own is not None, "select_tracks keeps only tracks with an identity distance"
        rivals = [
            d
            for t in steady
            if t.id != chosen.id and (d := dist[t.id]) is not None and _other_face_at_same_time(t, chosen)
        ]
        if rivals and min(rivals) - own < rules.margin:
            raise InputError(
                f"the reference does not single out one face: the closest is at identity distance "
                f"{own:.3f} and another face on screen at the same time at {min(rivals):.3f} "
                f"(margin needed {rules.margin}); use a clearer reference, or faces='all'",
                field="reference",
                code="target_not_found",
            )
    if selected:
        return Selection(selected)
    best = min((d for d in dist.values() if d is not None), default=float("inf"))
    dominant = _dominant_face(steady)
    if dominant:
        return Selection(
            dominant,
            (
                f"identity not verified: the closest face is at distance {best:.3f} from the reference "
                f"(limit {rules.max_distance:.3f}); one face dominates the video, so it was restored as the target"
            ),
        )
    raise InputError(
        f"no face in the video matches the reference (closest identity distance {best:.3f}, "
        f"limit {rules.max_distance:.3f}); use a reference of a person in the video, or faces='all'",
        field="reference",
        code="target_not_found",
    )


def _dominant_face(tracks: list[Track]) -> list[Track]:
    """The tracks of the one face that dominates the video, or [] when none does.

    A track's evidence is the sum over its detections of how far each score clears the weakest
    detection in the video (long, confident tracks win; the low-score false hits that a
    recall-oriented detector makes do not). If the strongest track has at least twice the evidence
    of any other face on screen with it, it is taken, and tracks at other times (the person leaving
    and coming back), strongest first, never two at once.
    """
    floor = min((f.score for t in tracks for f in _detected(t)), default=0.0)

    def evidence(t: Track) -> float:
        return sum(f.score - floor for f in _detected(t))

    ranked = sorted(tracks, key=evidence, reverse=True)
    if not ranked or not all(
        evidence(ranked[0]) >= 2 * evidence(t) for t in ranked[1:] if _other_face_at_same_time(t, ranked[0])
    ):
        return []
    picked: list[Track] = []
    for t in ranked:
        if not any(t.overlaps(c) for c in picked):
            picked.append(t)
    return sorted(picked, key=lambda t: t.start)


def _clears(track: Track, min_score: float | None) -> bool:
    """Whether the track's best real detection reaches ``min_score`` (always, when it is None)."""
    if min_score is None:
        return True
    return max((f.score for f in _detected(track)), default=float("-inf")) >= min_score


def _median_score(track: Track) -> float:
    """Median score of the track's real detections."""
    return float(np.median([f.score for f in _detected(track)]))


def _detected(track: Track) -> list[Face]:
    """The faces the detector found (not the ones bridged by interpolation)."""
    return [f for f, bridged in zip(track.faces, track.interpolated, strict=True) if not bridged]


def _other_face_at_same_time(a: Track, b: Track) -> bool:
    """Whether ``a`` is another face on screen with ``b``: they share frames with boxes apart.

    Two tracks whose boxes overlap in most shared frames are duplicate detections of one face.
    """
    shared = sorted(set(a.frames) & set(b.frames))
    if not shared:
        return False
    ia, ib = {f: i for i, f in enumerate(a.frames)}, {f: i for i, f in enumerate(b.frames)}
    apart = sum(bbox_iou(a.faces[ia[f]].bbox, b.faces[ib[f]].bbox) == 0.0 for f in shared)
    return apart > len(shared) / 2
