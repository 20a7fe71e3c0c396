"""dlib face analysis: HOG or CNN detection, 68-point landmarks reduced to 5, 128-d ResNet identity.

Runs offline with no configuration: the pretrained weights come from the
``face_recognition_models`` package (or a folder holding the same files).

Landmarks. dlib's 5-point model gives two corners per eye and the bottom of the nose; it has
no mouth points and its nose point is not the nose tip, so it cannot supply the standard 5
points (eye centres, nose tip, mouth corners). The 68-point (iBUG 300-W) model supplies all of
them, and the ResNet descriptor accepts a 68-point shape for its alignment (the model was
released with the 68-point model; dlib's 5-point model was later added as a lighter drop-in for
the same alignment). So one 68-point prediction per face is the cheapest correct choice: it
gives the keypoints and is reused for the descriptor, with no second landmark model loaded.
The prediction costs about 2 ms, against about 75 ms for the descriptor.

Detection scale. HOG finds faces of about 80 px and up; each pyramid doubling halves that.
Large images are first downscaled to ``max_detect_side`` (boxes are mapped back and landmarks
run at full resolution); small images get just enough doublings to reach ``min_detect_side``.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import dlib
import numpy as np

from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import Face, check_rgb

LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"  # iBUG 300-W 68-point shape predictor
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"  # 128-d ResNet face descriptor
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"  # MMOD CNN face detector

# iBUG 300-W indices, in image orientation (the subject's right eye is on the image left).
_LEFT_EYE = slice(36, 42)  # contour of the image-left eye
_RIGHT_EYE = slice(42, 48)  # contour of the image-right eye
_NOSE_TIP = 30
_LEFT_MOUTH = 48  # image-left outer mouth corner
_RIGHT_MOUTH = 54  # image-right outer mouth corner


@dataclass(frozen=True)
class DlibConfig:
    """Settings of :class:`DlibFaceAnalyzer`; the defaults work offline with no configuration.

    Scores: HOG gives its SVM margin, CNN its MMOD confidence; 0 is dlib's own decision boundary
    for both (the CNN never returns detections below 0). ``num_jitters`` of 0 or 1 means none;
    dlib reports 100 jitters as about 1% more accurate and 100 times slower.
    """

    detector: Literal["hog", "cnn"] = "hog"  # HOG+SVM (fast, frontal) or MMOD CNN (seconds per image on CPU)
    upsample: int | None = None  # pyramid doublings (each finds faces half as large); None: see min_detect_side
    min_detect_side: int = 320  # upsample=None: fewest doublings for the longest side to reach this (176 px -> 1)
    max_detect_side: int | None = 640  # longer images are downscaled to this for detection (speed); None: never
    min_score: float = -1.0  # detections scoring below this are dropped (below 0: recall for degraded video)
    confident_score: float = 0.0  # detections at or above this are confident (used for reference photos)
    num_jitters: int = 0  # random re-crops averaged per embedding
    match_threshold: float = 0.6  # L2 distance under which two faces are the same person (dlib's documented value)
    dlib_models_dir: Path | None = None  # folder of the dlib .dat files (upstream names); None: face_recognition_models

    def __post_init__(self) -> None:
        if self.detector not in ("hog", "cnn"):
            raise ConfigError(f"must be 'hog' or 'cnn', got {self.detector!r}", field="detector")
        if self.upsample is not None and not 0 <= self.upsample <= 4:
            raise ConfigError(f"must be None or an integer in 0..4, got {self.upsample!r}", field="upsample")
        if self.min_detect_side < 1:
            raise ConfigError(f"must be a positive pixel count, got {self.min_detect_side!r}", field="min_detect_side")
        if self.max_detect_side is not None and self.max_detect_side < 80:
            raise ConfigError(
                f"must be None or at least 80 px (dlib's smallest face), got {self.max_detect_side!r}",
                field="max_detect_side",
            )
        if self.num_jitters < 0:
            raise ConfigError(f"must be >= 0, got {self.num_jitters!r}", field="num_jitters")
        if not self.match_threshold > 0:
            raise ConfigError(f"must be > 0, got {self.match_threshold!r}", field="match_threshold")


def five_points_from_68(points: np.ndarray) -> np.ndarray:
    """Standard 5 keypoints (see :class:`Face`) from (68, 2) iBUG 300-W landmarks; returns (5, 2) float32."""
    if points.shape != (68, 2):
        raise InputError(f"expected (68, 2) landmarks, got {points.shape}", field="points")
    return np.stack(
        [
            points[_LEFT_EYE].mean(axis=0),  # eye centre = mean of its 6 contour points
            points[_RIGHT_EYE].mean(axis=0),
            points[_NOSE_TIP],
            points[_LEFT_MOUTH],
            points[_RIGHT_MOUTH],
        ]
    ).astype(np.float32)  # (5, 2)


def default_models_dir() -> Path:
    """Folder of the weights shipped by ``face_recognition_models`` (its import warns about pkg_resources)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        package = importlib.import_module("face_recognition_models")
    return Path(package.face_recognition_model_location()).parent


def _model_path(folder: Path, name: str) -> str:
    path = folder / name
    if not path.is_file():
        raise ConfigError(f"dlib model file {path} is missing", field="dlib_models_dir", code="weights_invalid")
    return str(path)


def _rect_from_bbox(bbox: np.ndarray) -> dlib.rectangle:
    """dlib's inclusive integer rectangle for an (x0, y0, x1, y1) box with exclusive x1, y1."""
    box = np.asarray(bbox, dtype=np.float64)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"face.bbox must be a finite (4,) box with positive area, got {bbox!r}", field="face")
    x0, y0, x1, y1 = (round(v) for v in box)
    return dlib.rectangle(x0, y0, max(x0, x1 - 1), max(y0, y1 - 1))


class DlibFaceAnalyzer:
    """The :class:`FaceAnalyzer` on dlib; one instance is safe to share between threads (calls are serialised)."""

    name = "dlib"
    embedding_dim = 128
    metric: Literal["l2", "cosine"] = "l2"

    def __init__(self, config: DlibConfig | None = None) -> None:
        self.config = config if config is not None else DlibConfig()
        self.match_threshold = self.config.match_threshold
        self.confident_score = self.config.confident_score
        self.track_score: float | None = None  # HOG scores of a real degraded face and of a false hit overlap (-1..0)
        folder = self.config.dlib_models_dir if self.config.dlib_models_dir is not None else default_models_dir()
        landmarks_path = _model_path(folder, LANDMARKS_FILE)
        recognition_path = _model_path(folder, RECOGNITION_FILE)
        cnn_path = _model_path(folder, CNN_DETECTOR_FILE) if self.config.detector == "cnn" else None
        try:
            self._predictor = dlib.shape_predictor(landmarks_path)
            self._recognizer = dlib.face_recognition_model_v1(recognition_path)
            self._detector: dlib.fhog_object_detector | dlib.cnn_face_detection_model_v1 = (
                dlib.get_frontal_face_detector() if cnn_path is None else dlib.cnn_face_detection_model_v1(cnn_path)
            )
        except RuntimeError as exc:  # dlib raises RuntimeError on unreadable or wrong model files
            raise ConfigError(
                f"cannot load dlib models from {folder}: {exc}", field="dlib_models_dir", code="weights_invalid"
            ) from exc
        self._lock = threading.Lock()  # dlib's detectors and networks keep per-call state

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces, highest score first. Boxes may extend past the image border."""
        image = np.ascontiguousarray(check_rgb(image))
        small, scale = self._detection_image(image)
        upsample = self._upsample_for(small)
        faces: list[Face] = []
        with self._lock:
            for rect, score in self._run_detector(small, upsample):
                bbox = np.array(
                    [rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float32
                ) / np.float32(scale)  # (4,) back in full-image pixels
                shape = self._predictor(image, _rect_from_bbox(bbox))
                points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)  # (68, 2)
                faces.append(Face(bbox=bbox, kps=five_points_from_68(points), score=score))
        faces.sort(key=lambda face: face.score, reverse=True)
        return faces

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """128-d descriptor aligned from dlib's own 68 landmarks inside ``face.bbox`` (``face.kps`` is not used)."""
        image = np.ascontiguousarray(check_rgb(image))
        rect = _rect_from_bbox(face.bbox)
        with self._lock:
            shape = self._predictor(image, rect)
            descriptor = self._recognizer.compute_face_descriptor(image, shape, self.config.num_jitters)
        embedding = np.asarray(descriptor, dtype=np.float32).reshape(self.embedding_dim)  # (128,)
        face.embedding = embedding
        return embedding

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance (dlib descriptors are not zero-centred, so cosine is not used)."""
        a = np.asarray(a, dtype=np.float32).reshape(-1)  # (128,)
        b = np.asarray(b, dtype=np.float32).reshape(-1)  # (128,)
        if a.shape != (self.embedding_dim,) or b.shape != (self.embedding_dim,):
            raise InputError(
                f"embeddings must have {self.embedding_dim} values, got {a.size} and {b.size}", field="embedding"
            )
        return float(np.linalg.norm(a - b))

    def _detection_image(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The image detection runs on (downscaled to max_detect_side) and its scale to ``image``."""
        limit = self.config.max_detect_side
        longest = max(image.shape[:2])
        if limit is None or longest <= limit:
            return image, 1.0
        scale = limit / longest
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))  # (w, h)
        return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA)), scale

    def _upsample_for(self, image: np.ndarray) -> int:
        if self.config.upsample is not None:
            return self.config.upsample
        longest = max(image.shape[:2])
        doublings = 0
        while longest * 2**doublings < self.config.min_detect_side:
            doublings += 1
        return doublings

    def _run_detector(self, image: np.ndarray, upsample: int) -> list[tuple[dlib.rectangle, float]]:
        """(rectangle, score) pairs in ``image`` coordinates, scores at or above min_score."""
        if isinstance(self._detector, dlib.cnn_face_detection_model_v1):
            found = [(d.rect, float(d.confidence)) for d in self._detector(image, upsample)]
        else:
            rects, scores, _ = self._detector.run(image, upsample, self.config.min_score)
            found = [(rect, float(score)) for rect, score in zip(rects, scores, strict=True)]
        return [(rect, score) for rect, score in found if score >= self.config.min_score]
