"""Faces over time: landmark smoothing, linking detections into tracks, choosing tracks."""

from __future__ import annotations

import numpy as np
import pytest

from ipfvr_core.errors import InputError
from ipfvr_core.faces.align import (
    ffhq_template,
)
from ipfvr_core.faces.base import Face
from ipfvr_core.faces.smoothing import (
    OneEuroFilter,
    SmoothingConfig,
    SmoothingMethod,
    gaussian_smooth,
    one_euro_smooth,
    smooth_landmarks,
)
from ipfvr_core.faces.targets import select_tracks, track_identity_distance
from ipfvr_core.faces.tracks import Track, bbox_iou, link_tracks

# ------------------------------------------------------------------------------- smoothing


def _second_difference_energy(x: np.ndarray) -> float:
    return float((np.diff(x, n=2, axis=0) ** 2).mean())


def _trajectory(t: int = 120) -> np.ndarray:
    f = np.arange(t, dtype=np.float64)
    centre = np.stack([300 + 1.5 * f, 200 + 20 * np.sin(f / 20)], axis=-1)  # (T, 2)
    return centre[:, None, :] + (ffhq_template(512) / 4)[None]  # (T, 5, 2)


def test_gaussian_smoothing_reduces_jitter_and_keeps_the_path() -> None:
    clean = _trajectory()
    noisy = clean + np.random.default_rng(2).normal(0, 1.5, clean.shape)
    smooth = gaussian_smooth(noisy, 5.0)
    assert smooth.shape == noisy.shape
    assert _second_difference_energy(smooth) < 0.01 * _second_difference_energy(noisy)
    assert np.abs(smooth - clean).mean() < 0.5 * np.abs(noisy - clean).mean()
    # Edges: the first/last frames follow the moving face, not pulled back towards the interior.
    assert np.abs(smooth - clean)[[0, 1, -2, -1]].mean() < np.abs(noisy - clean).mean()


def test_gaussian_smoothing_leaves_constant_and_linear_paths_alone() -> None:
    constant = np.broadcast_to(ffhq_template(512), (40, 5, 2)).copy()  # (T, 5, 2)
    for edge in ("linear", "renormalize"):
        np.testing.assert_allclose(gaussian_smooth(constant, 5.0, edge=edge), constant, atol=1e-9)
    ramp = np.repeat(np.arange(60.0)[:, None, None] * 3.0, 5, axis=1)  # (T, 5, 1) linear in time
    np.testing.assert_allclose(gaussian_smooth(ramp, 5.0), ramp, atol=1e-8)
    lagged = gaussian_smooth(ramp, 5.0, edge="renormalize")
    assert lagged[0, 0, 0] > ramp[0, 0, 0] + 5  # the one-sided mean drags the start forward
    np.testing.assert_allclose(lagged[20:40], ramp[20:40], atol=1e-8)  # identical in the interior


def test_gaussian_smoothing_short_tracks_gaps_and_weights() -> None:
    np.testing.assert_allclose(gaussian_smooth(np.array([[3.0, 4.0]]), 5.0), [[3.0, 4.0]])
    frames = np.array([0, 1, 2, 3, 10, 11, 12])
    values = frames * 2.0 + 1.0
    np.testing.assert_allclose(gaussian_smooth(values, 3.0, frames=frames), values, atol=1e-9)
    # A zero-weight outlier does not move its neighbours.
    spiky = np.zeros(21)
    spiky[10] = 100.0
    w = np.ones(21)
    w[10] = 0.0
    out = gaussian_smooth(spiky, 3.0, weights=w)
    np.testing.assert_allclose(np.delete(out, 10), 0.0, atol=1e-9)
    with pytest.raises(InputError) as err:
        gaussian_smooth(values, 3.0, frames=frames[::-1])
    assert err.value.field == "frames"


def test_one_euro_filter_basics() -> None:
    still = np.full((50, 5, 2), 10.0)
    np.testing.assert_allclose(one_euro_smooth(still, beta=1.0), still)
    rng = np.random.default_rng(3)
    noisy = still + rng.normal(0, 1.0, still.shape)
    assert _second_difference_energy(one_euro_smooth(noisy, min_cutoff=1.0)) < 0.2 * _second_difference_energy(noisy)
    # A step is followed (no steady-state error), and a larger beta follows a ramp with less lag.
    step = np.concatenate([np.zeros(10), np.full(60, 50.0)])
    assert one_euro_smooth(step)[-1] == pytest.approx(50.0, abs=0.5)
    ramp = np.arange(100, dtype=np.float64) * 2.0
    lag_slow = np.abs(one_euro_smooth(ramp, beta=0.0) - ramp)[-10:].mean()
    lag_fast = np.abs(one_euro_smooth(ramp, beta=0.5) - ramp)[-10:].mean()
    assert lag_fast < 0.5 * lag_slow
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    f.filter(np.zeros(2), 0.0)
    with pytest.raises(InputError):
        f.filter(np.ones(2), 0.0)  # time must increase


def test_smooth_landmarks_dispatch() -> None:
    clean = _trajectory(50)
    noisy = clean + np.random.default_rng(4).normal(0, 1.0, clean.shape)
    methods: tuple[SmoothingMethod, ...] = ("gaussian", "one_euro")
    for method in methods:
        out = smooth_landmarks(noisy, SmoothingConfig(method=method))
        assert out.shape == (50, 5, 2)
        assert _second_difference_energy(out) < 0.5 * _second_difference_energy(noisy)
    np.testing.assert_array_equal(smooth_landmarks(noisy, SmoothingConfig(method="none")), noisy)
    with pytest.raises(InputError) as err:
        SmoothingConfig(sigma=0.0)
    assert err.value.field == "sigma"


# ---------------------------------------------------------------------------------- tracks


def _face(cx: float, cy: float, side: float = 100.0, emb: np.ndarray | None = None) -> Face:
    bbox = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)
    kps = (ffhq_template(512) - 256) * (side / 300) + np.array([cx, cy])  # (5, 2)
    return Face(bbox=bbox, kps=kps.astype(np.float32), score=0.9, embedding=emb)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


IDENTITY_A = np.array([1.0, 0.0, 0.0, 0.0])
IDENTITY_B = np.array([0.0, 1.0, 0.0, 0.0])
IDENTITY_C = np.array([0.0, 0.0, 1.0, 0.0])
IDENTITY_D = np.array([0.0, 0.0, 0.0, 1.0])


def _noisy(emb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return emb + rng.normal(0, 0.05, emb.shape)


def test_bbox_iou() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(bbox_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_faces_crossing_paths_stay_separate() -> None:
    # A moves right and B left; they pass through each other around frame 20.
    dets = [[_face(100 + 10 * t, 300), _face(500 - 10 * t, 300)] for t in range(40)]
    tracks = link_tracks(dets)
    assert len(tracks) == 2
    for tr in tracks:
        xs = tr.bboxes()[:, 0]
        assert len(tr) == 40 and np.all(np.sign(np.diff(xs)) == np.sign(xs[-1] - xs[0]))


def test_embeddings_keep_identities_when_faces_meet_and_turn_back() -> None:
    # A and B walk towards each other, meet at x = 300 (identical boxes) and walk back. Motion
    # alone predicts that they pass through; the identity embeddings say they turned back.
    rng = np.random.default_rng(5)
    xs_a = [200 + 10 * t for t in range(11)] + [300 - 10 * t for t in range(1, 11)]
    dets = [
        [_face(xa, 300, emb=_noisy(IDENTITY_A, rng)), _face(600 - xa, 300, emb=_noisy(IDENTITY_B, rng))] for xa in xs_a
    ]
    motion_only = link_tracks(dets)
    assert all(len({int(np.argmax(e)) for e in tr.embeddings()}) == 2 for tr in motion_only)  # swapped at the meeting
    tracks = link_tracks(dets, distance_fn=_cosine, max_embedding_distance=0.5)
    assert len(tracks) == 2
    for tr in tracks:
        ids = {int(np.argmax(e)) for e in tr.embeddings()}
        assert len(ids) == 1 and len(tr) == len(xs_a)


def test_short_gap_is_bridged_by_interpolation() -> None:
    dets: list[list[Face]] = [[_face(100 + 4 * t, 200)] for t in range(20)]
    for t in (8, 9, 10):
        dets[t] = []
    tracks = link_tracks(dets, max_gap=5)
    assert len(tracks) == 1
    tr = tracks[0]
    assert tr.frames == list(range(20))
    assert [t for t, i in enumerate(tr.interpolated) if i] == [8, 9, 10]
    assert tr.num_detected == 17
    # Linear between frames 7 and 11: exactly where a face moving at constant speed would be.
    np.testing.assert_allclose(tr.kps()[9], _face(100 + 4 * 9, 200).kps, atol=1e-4)
    np.testing.assert_allclose(tr.bboxes()[10], _face(100 + 4 * 10, 200).bbox, atol=1e-4)
    assert tr.faces[9].embedding is None and tr.face_at(9) is tr.faces[9] and tr.face_at(25) is None


def test_gap_longer_than_max_gap_splits_the_track() -> None:
    dets: list[list[Face]] = [[_face(200, 200)] for _ in range(30)]
    for t in range(10, 17):  # 7 missed frames
        dets[t] = []
    tracks = link_tracks(dets, max_gap=5)
    assert [(t.start, t.end) for t in tracks] == [(0, 9), (17, 29)]
    assert not any(any(t.interpolated) for t in tracks)


def test_select_tracks_picks_the_reference_identity() -> None:
    rng = np.random.default_rng(6)
    dets: list[list[Face]] = [[] for _ in range(60)]
    for t in range(0, 20):  # A, first appearance
        dets[t].append(_face(200, 200, emb=_noisy(IDENTITY_A, rng)))
    for t in range(40, 60):  # A comes back elsewhere
        dets[t].append(_face(800, 300, emb=_noisy(IDENTITY_A, rng)))
    for t in range(0, 60):  # B is there throughout
        dets[t].append(_face(500, 500, emb=_noisy(IDENTITY_B, rng)))
    for t in range(5, 15):  # a poster of A (slightly less similar) while A is on screen
        dets[t].append(_face(900, 100, emb=_noisy(0.8 * IDENTITY_A + 0.4 * IDENTITY_C, rng)))
    tracks = link_tracks(dets, distance_fn=_cosine, max_embedding_distance=0.5)
    assert len(tracks) == 4
    refs = [IDENTITY_A, _noisy(IDENTITY_A, rng)]
    chosen = select_tracks(tracks, refs, _cosine, threshold=0.4, mode="target")
    assert [(t.start, t.end) for t in chosen] == [(0, 19), (40, 59)]
    poster = next(t for t in tracks if t.start == 5)
    poster_dist = track_identity_distance(poster, np.stack(refs), _cosine)
    assert poster_dist is not None and poster_dist < 0.4  # it passes the threshold; the overlap rule drops it
    assert select_tracks(tracks, [IDENTITY_D], _cosine, threshold=0.4) == []  # nobody on screen matches
    everyone = select_tracks(tracks, refs, _cosine, threshold=0.4, mode="all", min_length=11)
    assert [(t.start, t.end) for t in everyone] == [(0, 19), (0, 59), (40, 59)]
    with pytest.raises(InputError) as err:
        select_tracks(tracks, refs, _cosine, threshold=0.4, mode="best")  # type: ignore[arg-type]
    assert err.value.field == "mode"


def test_track_helpers() -> None:
    rng = np.random.default_rng(7)
    faces = [_face(100, 100, emb=_noisy(IDENTITY_A, rng)) for _ in range(3)]
    tr = Track(id=0, frames=[4, 5, 6], faces=faces)
    assert tr.interpolated == [False] * 3 and tr.start == 4 and tr.end == 6
    assert tr.kps().shape == (3, 5, 2) and tr.embeddings().shape == (3, 4)
    mean = tr.mean_embedding(normalize=True)
    assert mean is not None and np.linalg.norm(mean) == pytest.approx(1.0, abs=1e-5)
    moved = tr.with_kps(tr.kps() + 1.0)
    np.testing.assert_allclose(moved.kps(), tr.kps() + 1.0)
    assert tr.overlaps(Track(id=1, frames=[6, 7], faces=faces[:2]))
    assert not tr.overlaps(Track(id=2, frames=[7, 8], faces=faces[:2]))
    with pytest.raises(InputError):
        Track(id=3, frames=[2, 1], faces=faces[:2])


def test_faces_to_embed_samples_but_keeps_track_starts_and_crowded_faces() -> None:
    from ipfvr_core.faces.tracks import faces_to_embed

    face = np.array([100, 100, 200, 200], dtype=np.float64)  # (4,)
    far = face + 1000  # a second face far away
    recent = np.stack([face + 5, far])  # (2, 4): both seen in the last frames
    assert faces_to_embed(np.stack([face, far]), recent, sampled=True) == [0, 1]
    assert faces_to_embed(np.stack([face, far]), recent, sampled=False) == []  # both continue, far apart
    assert faces_to_embed(np.stack([face, far + 300]), recent, sampled=False) == [1]  # a new face starts a track
    assert faces_to_embed(np.stack([face]), np.zeros((0, 4)), sampled=False) == [0]  # first frame
    near = face + np.array([120, 0, 120, 0])  # centres 120 px apart, widths 100: could swap
    assert faces_to_embed(np.stack([face, near]), np.stack([face, near]), sampled=False) == [0, 1]
    assert faces_to_embed(np.zeros((0, 4)), recent, sampled=False) == []
