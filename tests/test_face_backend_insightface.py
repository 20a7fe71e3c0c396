"""The insightface face backend, through its own model_zoo / SCRFD / ArcFace / Attribute code on tiny
random ONNX models (tests/tiny_insightface.py): those check plumbing, shapes, channel order and metrics,
not recognition quality. The centerface backend has its own file, tests/test_centerface.py.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
from insightface.utils import face_align

from face_helpers import _assert_face_geometry
from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import FaceAnalyzer
from ipfvr_core.faces.insightface_backend import InsightFaceAnalyzer, InsightFaceConfig
from tiny_insightface import write_tiny_arcface, write_tiny_pack, write_tiny_scrfd

# insightface 2.1's norm_crop calls a skimage API deprecated in 0.26 (the backend silences it outside pytest).
pytestmark = pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")


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
