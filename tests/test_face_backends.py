"""The dlib and insightface face backends and the loader, on real images and a tiny real ONNX pack.

dlib runs its real pretrained weights (face_recognition_models) on skimage's astronaut,
insightface's group photo t1.jpg and the carphone clips. insightface runs through its own
model_zoo / SCRFD / ArcFace / Attribute code on tiny random ONNX models (tests/tiny_insightface.py):
those check plumbing, shapes, channel order and metrics, not recognition quality.
Measured figures are printed (run with ``-s`` to see them). The centerface backend has its own
file, tests/test_centerface.py; the loader tests here cover it too.
"""

from __future__ import annotations

import threading
from pathlib import Path

import av
import cv2
import numpy as np
import onnxruntime
import pytest
from insightface.utils import face_align

from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import Face, FaceAnalyzer
from ipfvr_core.faces.centerface_backend import CenterFaceAnalyzer
from ipfvr_core.faces.dlib_backend import DlibConfig, DlibFaceAnalyzer, five_points_from_68
from ipfvr_core.faces.insightface_backend import InsightFaceAnalyzer, InsightFaceConfig
from ipfvr_core.faces.loader import INSIGHTFACE_DIR_ENV, load_analyzer
from tiny_insightface import write_tiny_arcface, write_tiny_pack, write_tiny_scrfd

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


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])  # (H, W, 3) RGB


def _assert_face_geometry(face: Face) -> None:
    """Keypoints inside the box, in the documented order and a face-like vertical layout."""
    assert face.bbox.shape == (4,) and face.bbox.dtype == np.float32
    assert face.kps.shape == (5, 2) and face.kps.dtype == np.float32
    x0, y0, x1, y1 = face.bbox
    assert np.all((face.kps[:, 0] >= x0) & (face.kps[:, 0] <= x1)), (face.bbox, face.kps)
    assert np.all((face.kps[:, 1] >= y0) & (face.kps[:, 1] <= y1)), (face.bbox, face.kps)
    left_eye, right_eye, nose, left_mouth, right_mouth = face.kps
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    eyes_y = (left_eye[1] + right_eye[1]) / 2
    mouth_y = (left_mouth[1] + right_mouth[1]) / 2
    assert eyes_y < nose[1] < mouth_y


@pytest.fixture(scope="module")
def dlib_analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer()


@pytest.fixture(scope="module")
def pristine_frames(carphone_pristine: Path) -> dict[int, np.ndarray]:
    return _read_frames(carphone_pristine, CARPHONE_FRAMES)


@pytest.fixture(scope="module")
def distorted_frames(carphone_distorted: Path) -> dict[int, np.ndarray]:
    return _read_frames(carphone_distorted, CARPHONE_FRAMES)


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_pack(tmp_path_factory.mktemp("buffalo_tiny"))


@pytest.fixture(scope="module")
def tiny_analyzer(tiny_pack: Path) -> InsightFaceAnalyzer:
    return InsightFaceAnalyzer(InsightFaceConfig(insightface_dir=tiny_pack))


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


# --------------------------------------------------------------------------- insightface (tiny pack)
def test_insightface_tiny_pack_loads_through_model_zoo(tiny_analyzer: InsightFaceAnalyzer) -> None:
    from insightface.model_zoo import SCRFD, ArcFaceONNX, Attribute

    assert isinstance(tiny_analyzer._detector, SCRFD) and tiny_analyzer._detector.use_kps
    assert isinstance(tiny_analyzer._recognizer, ArcFaceONNX)
    assert isinstance(tiny_analyzer._genderage, Attribute)
    assert tiny_analyzer.embedding_dim == 512 and tiny_analyzer.metric == "cosine"
    assert tiny_analyzer.match_threshold == 0.6
    assert isinstance(tiny_analyzer, FaceAnalyzer)


def test_insightface_detect_and_embed_end_to_end(tiny_analyzer: InsightFaceAnalyzer, astronaut_rgb: np.ndarray) -> None:
    faces = tiny_analyzer.detect(astronaut_rgb)
    assert len(faces) >= 2
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True) and scores[-1] >= 0.5
    for face in faces[:5]:
        _assert_face_geometry(face)  # the tiny detector's keypoint layout, decoded by insightface
        assert face.attributes["gender"] in ("male", "female")
        assert isinstance(face.attributes["age"], int) and face.attributes["age"] >= 0
    a = tiny_analyzer.embed(astronaut_rgb, faces[0])
    b = tiny_analyzer.embed(astronaut_rgb, faces[-1])
    assert a.shape == (512,) and a.dtype == np.float32 and faces[0].embedding is a
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert tiny_analyzer.distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert tiny_analyzer.distance(a, -a) == pytest.approx(2.0, abs=1e-6)
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert tiny_analyzer.distance(a, b) == pytest.approx(1.0 - cosine, abs=1e-6)
    assert tiny_analyzer.distance(a, b) == pytest.approx(tiny_analyzer.distance(b, a))
    assert tiny_analyzer.distance(a, 3.0 * b) == pytest.approx(tiny_analyzer.distance(a, b), abs=1e-6)
    with pytest.raises(InputError):
        tiny_analyzer.distance(a, a[:128])


def test_insightface_detect_matches_scrfd_on_bgr(
    tiny_analyzer: InsightFaceAnalyzer, tiny_pack: Path, astronaut_rgb: np.ndarray
) -> None:
    # the expected faces come from a detector of insightface's own, built from the pack's file here
    # (not the analyzer's instance) with insightface's defaults, run on the BGR image
    from insightface.model_zoo import get_model

    scrfd = get_model(str(tiny_pack / "det_10g.onnx"), providers=["CPUExecutionProvider"])
    scrfd.prepare(-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
    boxes, kpss = scrfd.detect(np.ascontiguousarray(astronaut_rgb[:, :, ::-1]))  # (N, 5), (N, 5, 2)
    order = np.argsort(-boxes[:, 4], kind="stable")
    faces = tiny_analyzer.detect(astronaut_rgb)
    assert len(faces) == len(boxes) >= 1
    for face, i in zip(faces, order, strict=True):
        np.testing.assert_allclose(face.bbox, boxes[i, :4], rtol=1e-5)
        np.testing.assert_allclose(face.kps, kpss[i], rtol=1e-5)
        assert face.score == pytest.approx(float(boxes[i, 4]))
    swapped = tiny_analyzer.detect(np.ascontiguousarray(astronaut_rgb[:, :, ::-1]))
    swapped_scores = np.array([face.score for face in swapped])  # (N,)
    assert not np.allclose(swapped_scores, [face.score for face in faces]), "the tiny detector must see channel order"


def test_insightface_embedding_matches_an_independent_arcface_run(
    tiny_analyzer: InsightFaceAnalyzer, tiny_pack: Path, astronaut_rgb: np.ndarray
) -> None:
    face = tiny_analyzer.detect(astronaut_rgb)[0]
    got = tiny_analyzer.embed(astronaut_rgb, face)
    matrix = face_align.estimate_norm(face.kps, 112)  # (2, 3) to the ArcFace 112 template
    aligned = cv2.warpAffine(astronaut_rgb, matrix, (112, 112), borderValue=0.0)  # (112, 112, 3) RGB
    blob = ((aligned.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]  # (1, 3, 112, 112) RGB
    session = onnxruntime.InferenceSession(str(tiny_pack / "w600k_r50.onnx"), providers=["CPUExecutionProvider"])
    raw = session.run(None, {"input.1": blob})[0].reshape(-1)  # (512,)
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw), atol=1e-5)


def test_insightface_without_genderage_or_with_attributes_off_leaves_attributes_empty(
    tmp_path: Path, tiny_pack: Path, astronaut_rgb: np.ndarray
) -> None:
    bare = write_tiny_pack(tmp_path / "bare", genderage=False)
    for config in (
        InsightFaceConfig(insightface_dir=bare),
        InsightFaceConfig(insightface_dir=tiny_pack, attributes=False),
    ):
        analyzer = InsightFaceAnalyzer(config)
        assert not analyzer.has_attributes
        assert analyzer.detect(astronaut_rgb)[0].attributes == {}


def test_insightface_finds_models_by_shape_not_name(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    write_tiny_scrfd(tmp_path / "a_detector.onnx")
    write_tiny_arcface(tmp_path / "b_recognition.onnx")
    (tmp_path / "notes.txt").write_text("not a model")
    analyzer = InsightFaceAnalyzer(InsightFaceConfig(insightface_dir=tmp_path, det_size=320))
    faces = analyzer.detect(astronaut_rgb)
    assert faces and analyzer.embed(astronaut_rgb, faces[0]).shape == (512,)


@pytest.mark.parametrize("content", ["missing", "empty", "recognition_only", "detector_only", "corrupt"])
def test_insightface_bad_pack_is_a_config_error(tmp_path: Path, content: str) -> None:
    folder = tmp_path / "pack"
    if content != "missing":
        folder.mkdir()
    if content == "recognition_only":
        write_tiny_arcface(folder / "w600k_r50.onnx")
    if content == "detector_only":
        write_tiny_scrfd(folder / "det_10g.onnx")
    if content == "corrupt":
        write_tiny_arcface(folder / "w600k_r50.onnx")
        (folder / "det_10g.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ConfigError) as info:
        InsightFaceAnalyzer(InsightFaceConfig(insightface_dir=folder))
    assert info.value.field == "insightface_dir" and info.value.code == "weights_invalid"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"det_size": 100}, "det_size"),
        ({"det_thresh": 1.5}, "det_thresh"),
        ({"providers": ()}, "providers"),
        ({"providers": "CPUExecutionProvider"}, "providers"),
    ],
)
def test_insightface_config_names_the_bad_field(tmp_path: Path, options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        InsightFaceConfig(insightface_dir=tmp_path, **options)  # type: ignore[arg-type]
    assert info.value.field == field


def test_insightface_providers(tiny_pack: Path) -> None:
    with pytest.raises(ConfigError) as info:
        InsightFaceAnalyzer(InsightFaceConfig(insightface_dir=tiny_pack, providers=("NoSuchExecutionProvider",)))
    assert info.value.field == "providers"
    analyzer = InsightFaceAnalyzer(InsightFaceConfig(insightface_dir=tiny_pack, providers="auto"))
    assert analyzer._recognizer.session.get_providers()[-1] == "CPUExecutionProvider"


# --------------------------------------------------------------------------- loader
def test_loader_defaults_to_centerface_and_passes_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSIGHTFACE_DIR_ENV, raising=False)
    analyzer = load_analyzer(min_score=0.3)
    assert isinstance(analyzer, CenterFaceAnalyzer) and analyzer.config.min_score == 0.3
    assert isinstance(load_analyzer("auto"), CenterFaceAnalyzer)
    dlib_analyzer = load_analyzer("dlib", upsample=1)
    assert isinstance(dlib_analyzer, DlibFaceAnalyzer) and dlib_analyzer.config.upsample == 1


def test_loader_auto_picks_insightface_from_argument_or_environment(
    monkeypatch: pytest.MonkeyPatch, tiny_pack: Path
) -> None:
    monkeypatch.delenv(INSIGHTFACE_DIR_ENV, raising=False)
    by_argument = load_analyzer("auto", insightface_dir=str(tiny_pack), det_size=320)
    assert isinstance(by_argument, InsightFaceAnalyzer) and by_argument.config.det_size == 320
    monkeypatch.setenv(INSIGHTFACE_DIR_ENV, str(tiny_pack))
    assert isinstance(load_analyzer("auto"), InsightFaceAnalyzer)
    assert isinstance(load_analyzer("insightface"), InsightFaceAnalyzer)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: load_analyzer("mtcnn"), "face_backend"),
        (lambda: load_analyzer("insightface"), "insightface_dir"),
        (lambda: load_analyzer("dlib", insightface_dir="/models/buffalo_l"), "insightface_dir"),
        (lambda: load_analyzer("dlib", det_size=320), "det_size"),
        (lambda: load_analyzer("centerface", upsample=1), "upsample"),
        (lambda: load_analyzer("centerface", insightface_dir="/models/buffalo_l"), "insightface_dir"),
        (lambda: load_analyzer("centerface", min_score=1.5), "min_score"),
        (lambda: load_analyzer("insightface", insightface_dir="/nonexistent/pack"), "insightface_dir"),
    ],
)
def test_loader_errors_name_the_field(monkeypatch: pytest.MonkeyPatch, call: object, field: str) -> None:
    monkeypatch.delenv(INSIGHTFACE_DIR_ENV, raising=False)
    with pytest.raises(ConfigError) as info:
        call()  # type: ignore[operator]
    assert info.value.field == field
