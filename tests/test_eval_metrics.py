"""Metric definitions of ``ipfvr eval`` on cases with known answers, and the two identity judges."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from ipfvr_core.errors import ConfigError
from ipfvr_core.evaluation import metrics as M
from ipfvr_core.evaluation.judges import (
    FACENET_SHA256,
    DlibJudge,
    FaceNetConfig,
    FaceNetJudge,
    default_facenet_path,
    prewhiten,
    strip_control_inputs,
)


def texture(h: int, w: int, seed: int, sigma: float = 2.0, lo: int = 40, hi: int = 200) -> np.ndarray:
    """(h, w, 3) uint8 smooth random texture in [lo, hi] (DIS needs texture to track)."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), sigma)
    return cv2.normalize(t, None, lo, hi, cv2.NORM_MINMAX)


def translating(n: int, step: int, h: int = 96, w: int = 128, seed: int = 0) -> list[np.ndarray]:
    """n frames of a camera panning left over a texture: content moves right by ``step`` px per frame."""
    big = texture(h, w + step * n, seed)
    x0 = step * n
    return [np.ascontiguousarray(big[:, x0 - step * t : x0 - step * t + w]) for t in range(n)]


# ---------------------------------------------------------------------------------- PSNR / SSIM
def test_identical_frames_give_psnr_inf_and_ssim_one():
    a = texture(40, 50, 1)
    assert M.psnr(a, a.copy()) == math.inf
    assert M.ssim(a, a.copy()) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_constant_offset_gives_the_known_psnr(k):
    a = texture(40, 50, 2)  # values in [40, 200], so +k never clips
    b = (a.astype(np.int16) + k).astype(np.uint8)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / k**2), abs=1e-9)
    assert M.psnr(b, a) == M.psnr(a, b)


def test_ssim_fits_a_window_to_tiny_crops_and_refuses_none():
    a = texture(5, 9, 3)
    b = np.clip(a.astype(int) + 7, 0, 255).astype(np.uint8)
    assert 0 < M.ssim(a, b) < 1  # a 5x5 window on a 5-px-high crop
    assert M.ssim(a[:2], b[:2]) is None  # no odd window of 3+ fits 2 rows


# ---------------------------------------------------------------------------------- face region
def test_expand_box_grows_and_clips():
    assert M.expand_box(np.array([10, 20, 30, 60]), 0.25, 100, 100) == (5, 10, 35, 70)
    assert M.expand_box(np.array([-10, -5, 20, 15]), 0.0, 16, 12) == (0, 0, 16, 12)
    assert M.expand_box(np.array([200, 200, 220, 230]), 0.1, 100, 100) is None


def test_interpolate_boxes_between_detections_and_holds_at_the_ends():
    a, b = np.array([0.0, 0, 10, 10]), np.array([10.0, 20, 30, 30])
    boxes, sources = M.interpolate_boxes([None, a, None, None, b, None])
    assert sources == ["held", "detected", "interpolated", "interpolated", "detected", "held"]
    np.testing.assert_allclose(boxes[0], a)
    np.testing.assert_allclose(boxes[2], a + (b - a) / 3)
    np.testing.assert_allclose(boxes[3], a + 2 * (b - a) / 3)
    np.testing.assert_allclose(boxes[5], b)
    assert M.interpolate_boxes([None, None]) == ([None, None], ["none", "none"])


# ---------------------------------------------------------------------------------- E_warp
def test_identical_static_video_has_zero_warp_error():
    frames = [texture(60, 80, 4)] * 4
    assert M.video_warp_error(frames, frames) == 0.0


def test_warp_error_of_gt_plus_frame_varying_offset_is_the_offsets_step():
    """Static GT (flow 0, nothing occluded): W(O_t) - O_{t-1} = c_t - c_{t-1} at every pixel."""
    gt = texture(60, 80, 5)
    offsets = [0, 3, -2, 5, 5]
    out = [(gt.astype(np.int16) + c).astype(np.uint8) for c in offsets]
    expected = np.mean([((offsets[t] - offsets[t - 1]) / 255) ** 2 for t in range(1, len(offsets))])
    assert M.video_warp_error(out, [gt] * len(out)) == pytest.approx(expected, rel=1e-6)


def test_warp_direction_follows_the_ground_truth_motion():
    """On a pan, the GT warped by its own flow matches (E ~ 0); a video moving the other way does not."""
    gt = translating(4, 3)
    own = M.video_warp_error(gt, gt)
    assert own < 2e-5
    backwards = gt[::-1]  # the same frames played backwards move left, against the GT's flow
    assert M.video_warp_error(backwards, gt) > 50 * own + 1e-3


def test_occlusion_marks_the_strip_that_leaves_the_frame():
    f0, f1 = translating(2, 4, h=96, w=128, seed=7)
    pair = M.gt_flow_pair(f0, f1)
    np.testing.assert_allclose(np.median(pair.fw[..., 0]), 4.0, atol=0.05)  # content moves right by 4
    occluded = ~pair.valid
    assert occluded[:, -4:].mean() == 1.0  # x + 4 leaves the 128-px frame
    assert occluded[:, 8:-8].mean() < 0.02


def test_forward_backward_check_marks_background_covered_by_a_moving_square():
    bg, square = texture(120, 160, 8), texture(50, 50, 9, sigma=1.5)

    def frame(x: int) -> np.ndarray:
        f = bg.copy()
        f[35:85, x : x + 50] = square
        return f

    f0, f1 = frame(40), frame(48)  # the square moves right by 8 px
    fw = M.dis_flow(M.grey(f0), M.grey(f1))
    bw = M.dis_flow(M.grey(f1), M.grey(f0))
    fb_only = M.occlusion_mask(fw, bw, M.WarpConfig(motion_boundaries=False, out_of_frame_occluded=False))
    covered = np.zeros(fb_only.shape, bool)
    covered[35:85, 90:98] = True  # background of frame t-1 under the square at t
    assert fb_only[covered].mean() > 0.6
    assert fb_only[:, :30].mean() < 0.02 and fb_only[45:75, 50:80].mean() < 0.02
    full = M.occlusion_mask(fw, bw)
    assert full[covered].mean() >= fb_only[covered].mean()  # motion boundaries only add


# ---------------------------------------------------------------------------------- judges
@pytest.fixture(scope="module")
def t1_faces(insightface_t1):
    """t1.jpg (6 different people) and three of its faces, found by dlib at full resolution."""
    from ipfvr_core.faces.dlib_backend import DlibConfig, DlibFaceAnalyzer
    from ipfvr_core.image_io import read_image

    image = read_image(insightface_t1)
    analyzer = DlibFaceAnalyzer(DlibConfig(max_detect_side=None))
    faces = sorted((f for f in analyzer.detect(image) if f.score >= 0), key=lambda f: -f.score)
    assert len(faces) == 6
    return image, [f.bbox.astype(np.float64) for f in faces[:3]], analyzer


@pytest.fixture(scope="module")
def facenet():
    return FaceNetJudge()


def _mirror(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = image.shape[1]
    return np.ascontiguousarray(image[:, ::-1]), np.array([w - box[2], box[1], w - box[0], box[3]])


def test_judges_score_the_same_face_as_identical(t1_faces, facenet):
    image, boxes, analyzer = t1_faces
    dlib = DlibJudge(analyzer)
    assert dlib.compare(dlib.embed(image, boxes[0]), dlib.embed(image, boxes[0])) == pytest.approx(0.0, abs=1e-6)
    e = facenet.embed(image, boxes[0])
    assert e.shape == (512,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    assert facenet.compare(e, facenet.embed(image, boxes[0])) == pytest.approx(1.0, abs=1e-5)


def test_judges_separate_different_people(t1_faces, facenet):
    image, boxes, analyzer = t1_faces
    dlib = DlibJudge(analyzer)
    d = [dlib.embed(image, b) for b in boxes]
    f = [facenet.embed(image, b) for b in boxes]
    pairs = [(0, 1), (0, 2), (1, 2)]
    assert min(dlib.compare(d[i], d[j]) for i, j in pairs) > 0.6  # dlib's same-person threshold
    # The same person, mirrored, is the same-person reference value for FaceNet.
    same = [facenet.compare(f[i], facenet.embed(*_mirror(image, boxes[i]))) for i in range(3)]
    different = [facenet.compare(f[i], f[j]) for i, j in pairs]
    assert min(same) > 0.85
    assert max(different) < min(same) - 0.3


def test_facenet_refuses_a_file_with_another_sha256(tmp_path):
    with pytest.raises(ConfigError, match="sha256") as info:
        FaceNetJudge(FaceNetConfig(expected_sha256="0" * 64))
    assert info.value.code == "weights_invalid" and info.value.field == "facenet_model"
    fake = tmp_path / "graph_final.pb"
    fake.write_bytes(b"not a graph")
    with pytest.raises(ConfigError, match="sha256"):
        FaceNetJudge(FaceNetConfig(model_path=fake))
    with pytest.raises(ConfigError, match="missing"):
        FaceNetJudge(FaceNetConfig(model_path=tmp_path / "absent.pb"))


def test_pinned_hash_is_the_installed_file():
    import hashlib

    assert hashlib.sha256(default_facenet_path().read_bytes()).hexdigest() == FACENET_SHA256


def test_strip_control_inputs_removes_only_control_dependencies():
    def field(number: int, payload: bytes) -> bytes:
        return bytes([(number << 3) | 2, len(payload)]) + payload

    node_a = field(1, b"a") + field(2, b"Const") + field(3, b"^b")
    node_c = field(1, b"c") + field(2, b"Conv2D") + field(3, b"input:0") + field(3, b"a")
    versions = bytes([(4 << 3) | 2, 2, 8, 27])  # GraphDef.versions {producer: 27}
    graph = field(1, node_a) + field(1, node_c) + versions
    stripped = strip_control_inputs(graph)
    assert stripped == field(1, field(1, b"a") + field(2, b"Const")) + field(1, node_c) + versions
    assert strip_control_inputs(stripped) == stripped


def test_prewhiten_standardises_and_floors_the_std():
    x = texture(8, 8, 10)
    y = prewhiten(x)
    assert abs(float(y.mean())) < 1e-5 and float(y.std()) == pytest.approx(1.0, abs=1e-5)
    flat = np.full((4, 4, 3), 7, np.uint8)
    assert np.all(prewhiten(flat) == 0)  # std 0 is floored at 1/sqrt(n), no division by zero
