"""Geometry of a face in one frame: alignment to the FFHQ template and paste-back."""

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
from ipfvr_core.faces.paste import face_region_mask, paste_back, template_face_mask

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
