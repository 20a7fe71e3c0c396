"""Geometry of the face pipeline: alignment, paste-back, landmark smoothing, tracks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from ipfvr_core.errors import InputError
from ipfvr_core.faces.align import (
    FFHQ_TEMPLATE_512,
    affine_scale,
    estimate_affine,
    ffhq_template,
    invert_affine,
    native_size,
    transform_points,
    warp_face,
)
from ipfvr_core.faces.base import Face
from ipfvr_core.faces.paste import face_region_mask, paste_back, template_face_mask
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

# Astronaut (skimage.data.astronaut(), 512x512) landmarks, read once off dlib's 68-point model
# (eye centres, nose tip 30, mouth corners 48/54) and rounded: left eye, right eye, nose, mouth L/R.
ASTRONAUT_KPS = np.array([[203.0, 101.5], [246.5, 104.0], [225.0, 127.0], [201.0, 139.0], [246.0, 141.0]])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    image: np.ndarray = data.astronaut()  # (512, 512, 3) uint8 RGB
    return image


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def _gaussian_blob(shape: tuple[int, int], center: np.ndarray, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)  # (H, W) each
    return np.exp(-((xx - center[0]) ** 2 + (yy - center[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def _centroid(channel: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0 : channel.shape[0], 0 : channel.shape[1]]  # (H, W) each
    w = channel.astype(np.float64)
    return np.array([(xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()])


# ----------------------------------------------------------------------------------- align


def test_template_scales_with_size() -> None:
    np.testing.assert_allclose(ffhq_template(256), FFHQ_TEMPLATE_512 / 2)
    np.testing.assert_allclose(ffhq_template(512), FFHQ_TEMPLATE_512)


def test_estimate_affine_recovers_an_exact_similarity() -> None:
    truth = _similarity(17.0, 2.5, -300.0, 40.0)  # frame -> crop
    kps = transform_points(invert_affine(truth), ffhq_template(512))  # the template seen in a frame
    est = estimate_affine(kps, 512)
    np.testing.assert_allclose(est, truth, atol=1e-8)
    assert affine_scale(est) == pytest.approx(2.5)
    assert native_size(est, 512) == round(512 / 2.5)


def test_round_trip_estimate_invert_maps_points_back() -> None:
    a = estimate_affine(ASTRONAUT_KPS, 512)
    back = transform_points(invert_affine(a), transform_points(a, ASTRONAUT_KPS))
    np.testing.assert_allclose(back, ASTRONAUT_KPS, atol=1e-9)
    np.testing.assert_allclose(invert_affine(invert_affine(a)), a, atol=1e-9)


def test_warp_puts_astronaut_landmarks_on_the_template(astronaut: np.ndarray) -> None:
    a = estimate_affine(ASTRONAUT_KPS, 512)
    # A real face is not an exact similarity of the template; least squares lands each point near it.
    residual = np.linalg.norm(transform_points(a, ASTRONAUT_KPS) - ffhq_template(512), axis=1)
    assert residual.max() < 0.035 * 512
    # The crop's pixels follow the same transform: a blob drawn at each landmark in the frame
    # lands where transform_points says, to a small fraction of a pixel.
    for kp in ASTRONAUT_KPS:
        image = np.concatenate(
            [astronaut.astype(np.float32), _gaussian_blob(astronaut.shape[:2], kp, 1.5)[..., None]], axis=2
        )  # (H, W, 4)
        crop = warp_face(image, a, 512)
        assert crop.shape == (512, 512, 4)
        np.testing.assert_allclose(_centroid(crop[..., 3]), transform_points(a, kp), atol=0.1)
    # And the crop shows the face: the eyes are darker than the cheeks below them.
    crop = warp_face(astronaut, a, 512).astype(np.float32).mean(axis=2)  # (512, 512)
    for x, y in ffhq_template(512)[:2]:
        eye = crop[int(y) - 6 : int(y) + 6, int(x) - 10 : int(x) + 10].mean()
        cheek = crop[int(y) + 40 : int(y) + 52, int(x) - 10 : int(x) + 10].mean()
        assert eye < cheek - 30


def test_warp_is_resolution_independent_including_downscaling(astronaut: np.ndarray) -> None:
    ref = warp_face(astronaut, estimate_affine(ASTRONAUT_KPS, 512), 512).astype(np.float32)
    big = cv2.resize(astronaut, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # face ~680 px: the crop shrinks it
    a_big = estimate_affine(ASTRONAUT_KPS * 4 + 1.5, 512)  # cv2.resize pixel centres: x' = 4x + 1.5
    assert affine_scale(a_big) < 0.8
    crop_big = warp_face(big, a_big, 512).astype(np.float32)
    assert np.abs(crop_big - ref).mean() < 2.0
    # Without the anti-aliasing prefilter a 4x shrink of fine detail aliases; ours stays close to
    # an area (box) downscale of the same content.
    noise = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    shrink = np.array([[0.25, 0.0, -0.375], [0.0, 0.25, -0.375]])  # exact 4x downscale, pixel-centre aligned
    ours = warp_face(noise, shrink, 512).astype(np.float32)
    area = cv2.resize(noise, (512, 512), interpolation=cv2.INTER_AREA).astype(np.float32)
    naive = cv2.warpAffine(noise, shrink, (512, 512), flags=cv2.INTER_LINEAR).astype(np.float32)
    assert ours.std() < 0.5 * naive.std()
    assert np.abs(ours - area).mean() < 0.5 * np.abs(naive - area).mean()


def test_align_rejects_bad_input(astronaut: np.ndarray) -> None:
    with pytest.raises(InputError) as err:
        estimate_affine(np.zeros((4, 2)), 512)
    assert err.value.field == "kps" and err.value.code == "invalid_option"
    with pytest.raises(InputError):
        estimate_affine(np.ones((5, 2)), 512)  # degenerate: all points coincide
    with pytest.raises(InputError) as err:
        warp_face(astronaut, estimate_affine(ASTRONAUT_KPS), 512, border="wrap")  # type: ignore[arg-type]
    assert err.value.field == "border"
    with pytest.raises(InputError) as err:
        invert_affine(np.zeros((2, 3)))
    assert err.value.field == "affine"


# ----------------------------------------------------------------------------------- paste


def _frame_with_astronaut() -> tuple[np.ndarray, np.ndarray]:
    """A 720x1280 noisy frame with the astronaut at (300, 100); and the face's landmarks there."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    frame[100:612, 300:812] = data.astronaut()
    return frame, ASTRONAUT_KPS + np.array([300.0, 100.0])


def test_paste_of_unmodified_crop_is_near_identity() -> None:
    frame, kps = _frame_with_astronaut()
    a = estimate_affine(kps, 512)
    crop = warp_face(frame, a, 512)
    region = face_region_mask(frame.shape, a, 512)
    for color_match in (True, False):
        out = paste_back(frame, crop, a, color_match=color_match)
        assert out.dtype == np.uint8 and out.shape == frame.shape
        diff = np.abs(out.astype(np.int16) - frame).max(axis=2)[region]  # (N,)
        assert diff.mean() < 3.0
        assert np.percentile(diff, 99) < 20  # a 3x up- then down-sampling softens single-pixel highlights only


def test_paste_changes_nothing_outside_the_region() -> None:
    frame, kps = _frame_with_astronaut()
    a = estimate_affine(kps, 512)
    region = face_region_mask(frame.shape, a, 512)
    black = np.zeros((512, 512, 3), dtype=np.uint8)
    out = paste_back(frame, black, a, color_match=False)
    assert np.array_equal(out[~region], frame[~region])
    changed = np.any(out != frame, axis=2)
    assert changed[region].mean() > 0.95  # the region is what paste_back writes, not a loose superset
    # The face centre is fully replaced; the crop's corners are not part of the region.
    centre = np.round(transform_points(invert_affine(a), [256, 300])).astype(int)
    assert out[centre[1], centre[0]].max() == 0
    for corner in ([4, 4], [507, 4], [4, 507], [507, 507]):
        x, y = np.round(transform_points(invert_affine(a), corner)).astype(int)
        assert not region[y, x]
    # The template mask itself: soft edge, zero at the crop border, one in the face.
    m = template_face_mask(512)
    assert m[300, 256] == pytest.approx(1.0) and m[0].max() == 0 and m[-1].max() == 0 and m[:, 0].max() == 0
    row = m[300, :256]  # from the crop's left edge to the face centre
    assert np.all(np.diff(row) >= -1e-6) and np.count_nonzero((row > 0.02) & (row < 0.98)) >= 20  # a soft ramp


def test_paste_input_is_untouched_unless_inplace() -> None:
    frame, kps = _frame_with_astronaut()
    a = estimate_affine(kps, 512)
    before = frame.copy()
    out = paste_back(frame, np.zeros((512, 512, 3), np.uint8), a, color_match=False)
    assert np.array_equal(frame, before) and out is not frame
    same = paste_back(frame, np.zeros((512, 512, 3), np.uint8), a, color_match=False, inplace=True)
    assert same is frame and np.array_equal(frame, out)


def test_color_match_removes_a_colour_shift() -> None:
    frame, kps = _frame_with_astronaut()
    a = estimate_affine(kps, 512)
    crop = warp_face(frame, a, 512).astype(np.int16)
    crop[..., 0] += 30  # red cast
    shifted = np.clip(crop, 0, 255).astype(np.uint8)
    region = face_region_mask(frame.shape, a, 512)
    original_mean = frame[region].astype(np.float64).mean(axis=0)  # (3,)
    matched = paste_back(frame, shifted, a, color_match=True)[region].astype(np.float64).mean(axis=0)
    unmatched = paste_back(frame, shifted, a, color_match=False)[region].astype(np.float64).mean(axis=0)
    assert unmatched[0] - original_mean[0] > 15  # the cast shows without matching
    np.testing.assert_allclose(matched, original_mean, atol=1.5)


def test_paste_handles_faces_at_the_frame_edge_and_other_crop_sizes() -> None:
    frame, kps = _frame_with_astronaut()
    kps = kps - np.array([300.0 + 200.0, 100.0 + 95.0])  # face centre near the top-left corner
    a = estimate_affine(kps, 256)
    crop = warp_face(frame, a, 256)
    assert crop.shape == (256, 256, 3)
    region = face_region_mask(frame.shape, a, 256)
    out = paste_back(frame, np.full((256, 256, 3), 200, np.uint8), a, color_match=False)
    assert region[0, 0] and region.sum() > 1000
    assert np.array_equal(out[~region], frame[~region])
    far = estimate_affine(kps - 5000.0, 256)  # entirely outside the frame
    assert not face_region_mask(frame.shape, far, 256).any()
    assert np.array_equal(paste_back(frame, crop, far), frame)
    with pytest.raises(InputError) as err:
        paste_back(frame, np.zeros((256, 128, 3), np.uint8), a)
    assert err.value.field == "restored_face"


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
