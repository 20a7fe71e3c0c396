"""The dlib face backend on its real pretrained weights (face_recognition_models): skimage's astronaut,
insightface's group photo t1.jpg and the carphone clips; and what every backend refuses.

Measured figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest

from face_helpers import _assert_face_geometry, _read_rgb
from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import Face, FaceAnalyzer
from ipfvr_core.faces.dlib_backend import DlibConfig, DlibFaceAnalyzer, five_points_from_68
from ipfvr_core.faces.insightface_backend import InsightFaceAnalyzer

# insightface 2.1's norm_crop calls a skimage API deprecated in 0.26 (the backend silences it outside pytest).
pytestmark = pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")


CARPHONE_FRAMES = (0, 30, 60, 90)  # frames of the carphone clips used for identity checks


# --------------------------------------------------------------------------- fixtures and helpers
def _read_frames(path: Path, indices: tuple[int, ...]) -> dict[int, np.ndarray]:
    wanted = set(indices)
    frames: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")  # (144, 176, 3)
            if len(frames) == len(wanted):
                break
    return frames


@pytest.fixture(scope="module")
def dlib_analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer()


@pytest.fixture(scope="module")
def pristine_frames(carphone_pristine: Path) -> dict[int, np.ndarray]:
    return _read_frames(carphone_pristine, CARPHONE_FRAMES)


@pytest.fixture(scope="module")
def distorted_frames(carphone_distorted: Path) -> dict[int, np.ndarray]:
    return _read_frames(carphone_distorted, CARPHONE_FRAMES)


# --------------------------------------------------------------------------- dlib
def test_dlib_astronaut_has_one_face_with_ordered_keypoints(
    dlib_analyzer: DlibFaceAnalyzer, astronaut_rgb: np.ndarray
) -> None:
    faces = dlib_analyzer.detect(astronaut_rgb)
    confident = [f for f in faces if f.score >= dlib_analyzer.confident_score]
    assert len(confident) == 1  # detect() favours recall; weaker hits are below confident_score
    assert faces[0] is confident[0]  # highest score first
    _assert_face_geometry(faces[0])
    assert faces[0].score > 0.5
    assert isinstance(dlib_analyzer, FaceAnalyzer)


def test_dlib_group_photo_finds_several_faces(insightface_t1: Path) -> None:
    image = _read_rgb(insightface_t1)  # (886, 1280, 3), 6 people
    analyzer = DlibFaceAnalyzer(DlibConfig(upsample=1))
    faces = analyzer.detect(image)
    default_count = len(DlibFaceAnalyzer().detect(image))
    print(f"\nMEASURED t1.jpg dlib HOG faces: {len(faces)} (upsample=1), {default_count} (defaults)")
    assert len(faces) >= 4
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True)
    centres = np.array([face.bbox.reshape(2, 2).mean(axis=0) for face in faces])  # (N, 2)
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(len(faces)) * 1e9  # (N, N)
    assert gaps.min() > 20, "two detections of the same face"


def test_dlib_identity_distances_on_carphone(
    dlib_analyzer: DlibFaceAnalyzer,
    astronaut_rgb: np.ndarray,
    pristine_frames: dict[int, np.ndarray],
    distorted_frames: dict[int, np.ndarray],
) -> None:
    pristine, distorted = {}, {}
    for index, frame in pristine_frames.items():
        faces = dlib_analyzer.detect(frame)
        assert len(faces) >= 1, f"no face in pristine frame {index}"
        pristine[index] = dlib_analyzer.embed(frame, faces[0])
        assert faces[0].embedding is pristine[index]
        # The degraded clip has the same geometry; dlib rarely finds its faces, so reuse the box.
        distorted[index] = dlib_analyzer.embed(distorted_frames[index], Face(faces[0].bbox, faces[0].kps, 0.0))
    astronaut = dlib_analyzer.detect(astronaut_rgb)[0]
    astronaut_vec = dlib_analyzer.embed(astronaut_rgb, astronaut)
    assert astronaut_vec.shape == (128,) and astronaut_vec.dtype == np.float32

    same = [dlib_analyzer.distance(pristine[a], pristine[b]) for a in CARPHONE_FRAMES for b in CARPHONE_FRAMES if a < b]
    other = [dlib_analyzer.distance(astronaut_vec, vec) for vec in pristine.values()]
    degraded = [dlib_analyzer.distance(distorted[i], pristine[i]) for i in CARPHONE_FRAMES]
    print(
        f"\nMEASURED dlib L2: pristine vs pristine {min(same):.3f}-{max(same):.3f}; "
        f"astronaut vs carphone {min(other):.3f}-{max(other):.3f}; "
        f"distorted vs pristine (same frame) {min(degraded):.3f}-{max(degraded):.3f} mean {np.mean(degraded):.3f}"
    )
    assert max(same) < dlib_analyzer.match_threshold == 0.6
    assert min(other) > dlib_analyzer.match_threshold
    assert dlib_analyzer.distance(pristine[0], pristine[0]) == 0.0


def test_dlib_downscaled_detection_maps_back_to_full_resolution(astronaut_rgb: np.ndarray) -> None:
    full = DlibFaceAnalyzer(DlibConfig(max_detect_side=None)).detect(astronaut_rgb)[0]
    small = DlibFaceAnalyzer(DlibConfig(max_detect_side=256, upsample=1, min_score=0.0)).detect(astronaut_rgb)
    assert len(small) == 1
    # Boxes found in a 2x smaller image differ by HOG's box quantisation, not by the scale.
    assert np.abs(small[0].bbox - full.bbox).max() < 12, (small[0].bbox, full.bbox)
    assert np.abs(small[0].kps - full.kps).max() < 6, (small[0].kps, full.kps)


def test_dlib_cnn_detector_finds_the_small_carphone_face(pristine_frames: dict[int, np.ndarray]) -> None:
    analyzer = DlibFaceAnalyzer(DlibConfig(detector="cnn"))  # 176x144 gets one doubling
    faces = analyzer.detect(pristine_frames[0])
    assert len(faces) == 1
    _assert_face_geometry(faces[0])


def test_dlib_detect_is_safe_from_several_threads(dlib_analyzer: DlibFaceAnalyzer, astronaut_rgb: np.ndarray) -> None:
    expected = dlib_analyzer.detect(astronaut_rgb)[0]
    results: list[list[Face]] = []

    def work() -> None:
        results.append(dlib_analyzer.detect(astronaut_rgb))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for faces in results:
        assert len(faces) >= 1
        np.testing.assert_array_equal(faces[0].bbox, expected.bbox)
        np.testing.assert_array_equal(faces[0].kps, expected.kps)


def test_five_points_from_68_picks_eye_centres_nose_tip_and_mouth_corners() -> None:
    points = np.zeros((68, 2), dtype=np.float32)
    points[36:42] = [[0, 0], [2, 0], [4, 0], [6, 0], [4, 2], [2, 2]]  # image-left eye
    points[42:48] = [[10, 0], [12, 0], [14, 0], [16, 0], [14, 2], [12, 2]]  # image-right eye
    points[30] = [8, 5]
    points[48] = [3, 9]
    points[54] = [13, 9]
    kps = five_points_from_68(points)
    expected = np.array([[3, 2 / 3], [13, 2 / 3], [8, 5], [3, 9], [13, 9]], dtype=np.float32)  # (5, 2)
    np.testing.assert_allclose(kps, expected, rtol=1e-6)
    assert kps.dtype == np.float32
    with pytest.raises(InputError):
        five_points_from_68(np.zeros((5, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"detector": "mtcnn"}, "detector"),
        ({"upsample": -1}, "upsample"),
        ({"max_detect_side": 10}, "max_detect_side"),
        ({"num_jitters": -2}, "num_jitters"),
        ({"match_threshold": 0.0}, "match_threshold"),
    ],
)
def test_dlib_config_names_the_bad_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        DlibConfig(**options)  # type: ignore[arg-type]
    assert info.value.field == field and info.value.code == "config_invalid"


def test_dlib_missing_weights_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        DlibFaceAnalyzer(DlibConfig(dlib_models_dir=tmp_path))
    assert info.value.field == "dlib_models_dir" and info.value.code == "weights_invalid"


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((32, 32), dtype=np.uint8),
        np.zeros((32, 32, 3), dtype=np.float32),
        np.zeros((32, 32, 4), dtype=np.uint8),
    ],
)
def test_backends_reject_non_rgb_images(
    dlib_analyzer: DlibFaceAnalyzer, tiny_analyzer: InsightFaceAnalyzer, image: np.ndarray
) -> None:
    for analyzer in (dlib_analyzer, tiny_analyzer):
        with pytest.raises(InputError) as info:
            analyzer.detect(image)
        assert info.value.field == "image"
