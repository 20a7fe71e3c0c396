"""insightface face analysis from a local model pack: SCRFD detection, ArcFace identity, gender/age.

The pack is a folder in buffalo_l layout (``det_10g.onnx``, ``w600k_r50.onnx``, optionally
``genderage.onnx``; other models are ignored). As insightface's ``FaceAnalysis`` does, every
``.onnx`` file is routed through ``insightface.model_zoo.get_model``, which recognises the model
by its input and output shapes, so file names need not match; the first file (by name) of each
task wins. Nothing is ever downloaded.

insightface works on BGR images (OpenCV order) and feeds its networks RGB; this module takes
RGB like every :class:`FaceAnalyzer` and converts at the boundary.

Match threshold: ArcFace embeddings are compared by cosine similarity. insightface 2.1's own
verification tool defaults to a similarity of 0.40 ("leave 0.40 unless you have reviewed the
results", ``insightface/gui/core/constants.py``), i.e. a cosine distance of 0.60, our default.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime
from insightface.app.common import Face as InsightFace
from insightface.model_zoo import get_model
from insightface.utils import face_align

from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import Face, check_rgb

logger = logging.getLogger(__name__)

# insightface 2.1's norm_crop calls skimage's deprecated SimilarityTransform.estimate on every
# alignment; the result is unchanged, so that one warning is silenced at its source.
warnings.filterwarnings(
    "ignore", message="`estimate` is deprecated", category=FutureWarning, module=r"insightface\.utils\.face_align"
)

DETECTION_TASK = "detection"  # insightface task name of SCRFD detectors
RECOGNITION_TASK = "recognition"  # insightface task name of ArcFace recognisers
GENDERAGE_TASK = "genderage"  # insightface task name of the gender/age attribute model
_GPU_PROVIDERS = ("CUDAExecutionProvider",)  # tried first when providers="auto"


@dataclass(frozen=True)
class InsightFaceConfig:
    """Settings of :class:`InsightFaceAnalyzer`.

    ``providers="auto"`` takes CUDA when this onnxruntime build has it, then CPU. A detector
    exported with a fixed input size uses that size whatever ``det_size`` says.
    """

    insightface_dir: Path  # local model-pack folder (buffalo_l layout); never downloaded
    providers: tuple[str, ...] | Literal["auto"] = ("CPUExecutionProvider",)  # ONNX Runtime providers, by priority
    det_size: int = 640  # SCRFD input side in px (multiple of 32); images are letterboxed into this square
    det_thresh: float = 0.5  # minimum SCRFD score of a kept face (insightface's default)
    nms_thresh: float = 0.4  # IoU above which the lower-scored of two boxes is dropped (insightface's default)
    match_threshold: float = 0.6  # cosine distance under which faces match (insightface: similarity 0.4)
    attributes: bool = True  # detect fills Face.attributes (gender, age) when the pack has a genderage model

    def __post_init__(self) -> None:
        if self.det_size < 32 or self.det_size % 32:
            raise ConfigError(f"must be a positive multiple of 32, got {self.det_size!r}", field="det_size")
        if not 0.0 < self.det_thresh < 1.0:
            raise ConfigError(f"must lie in (0, 1), got {self.det_thresh!r}", field="det_thresh")
        if not 0.0 < self.nms_thresh <= 1.0:
            raise ConfigError(f"must lie in (0, 1], got {self.nms_thresh!r}", field="nms_thresh")
        if not 0.0 < self.match_threshold < 2.0:
            raise ConfigError(f"must lie in (0, 2), got {self.match_threshold!r}", field="match_threshold")
        if self.providers != "auto" and (
            isinstance(self.providers, str) or not self.providers or not all(isinstance(p, str) for p in self.providers)
        ):
            raise ConfigError(
                f"must be 'auto' or a non-empty tuple of provider names, got {self.providers!r}", field="providers"
            )


def resolve_providers(requested: tuple[str, ...] | Literal["auto"]) -> list[str]:
    """The ONNX Runtime provider list to use; every requested provider must exist in this build."""
    available = onnxruntime.get_available_providers()
    if requested == "auto":
        return [p for p in (*_GPU_PROVIDERS, "CPUExecutionProvider") if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ConfigError(f"{missing} not available in this onnxruntime (has {available})", field="providers")
    return list(requested)


def _pack_error(message: str) -> ConfigError:
    return ConfigError(message, field="insightface_dir", code="weights_invalid")


def load_pack_models(folder: Path, providers: list[str]) -> dict[str, Any]:
    """insightface model objects of ``folder`` by task name (first file by name wins per task)."""
    if not folder.is_dir():
        raise _pack_error(f"model-pack folder {folder} does not exist")
    models: dict[str, Any] = {}
    for path in sorted(folder.glob("*.onnx")):
        try:
            model = get_model(str(path), providers=providers)
        except Exception as exc:  # onnx / onnxruntime raise their own types for unreadable graphs
            raise _pack_error(f"cannot load {path.name}: {exc}") from exc
        if model is None:
            logger.debug("insightface does not recognise %s; ignored", path)
            continue
        if model.taskname in models:
            logger.debug("second %s model %s ignored", model.taskname, path)
            continue
        models[model.taskname] = model
    if DETECTION_TASK not in models:
        raise _pack_error(f"no face detector (SCRFD, 9 or 15 outputs) among the .onnx files in {folder}")
    if not models[DETECTION_TASK].use_kps:
        raise _pack_error(f"the detector in {folder} has no keypoint outputs")
    if RECOGNITION_TASK not in models:
        raise _pack_error(f"no recognition model (ArcFace, input 112x112) among the .onnx files in {folder}")
    return models


def _embedding_dim(recognizer: Any) -> int:
    width = recognizer.output_shape[-1]
    if isinstance(width, int) and width > 0:
        return width
    side = recognizer.input_size[0]
    probe = np.zeros((side, side, 3), dtype=np.uint8)
    return int(recognizer.get_feat(probe).shape[-1])  # symbolic width: measure it once


def _gender_age(model: Any, bgr: np.ndarray, face: Face) -> dict[str, object]:
    """Gender ("male"/"female"; insightface's class 1 is male) and age in years from a genderage model."""
    gender, age = model.get(bgr, InsightFace(bbox=face.bbox, kps=face.kps))
    return {"gender": "male" if int(gender) == 1 else "female", "age": max(0, int(age))}


class InsightFaceAnalyzer:
    """The :class:`FaceAnalyzer` on an insightface model pack; ONNX Runtime sessions are thread-safe to share."""

    name = "insightface"
    metric: Literal["l2", "cosine"] = "cosine"

    def __init__(self, config: InsightFaceConfig) -> None:
        self.config = config
        self.match_threshold = config.match_threshold
        self.confident_score = config.det_thresh  # detect() keeps only confident faces already
        self.track_score: float | None = None  # detect() keeps only confident faces already
        models = load_pack_models(Path(config.insightface_dir), resolve_providers(config.providers))
        self._detector = models[DETECTION_TASK]
        self._detector.prepare(
            0, input_size=(config.det_size, config.det_size), det_thresh=config.det_thresh, nms_thresh=config.nms_thresh
        )
        self._recognizer = models[RECOGNITION_TASK]
        self._genderage = models.get(GENDERAGE_TASK) if config.attributes else None
        self.embedding_dim = _embedding_dim(self._recognizer)

    @property
    def has_attributes(self) -> bool:
        """Whether detect fills ``Face.attributes`` (a genderage model is loaded and enabled)."""
        return self._genderage is not None

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces with SCRFD's box, 5 keypoints and score, highest score first."""
        bgr = np.ascontiguousarray(check_rgb(image)[:, :, ::-1])  # (H, W, 3) BGR, insightface's order
        size = (self.config.det_size, self.config.det_size)
        # boxes (N, 5): x0, y0, x1, y1, score; kpss (N, 5, 2)
        boxes, kpss = self._detector.detect(bgr, input_size=size, det_thresh=self.config.det_thresh)
        order = np.argsort(-boxes[:, 4], kind="stable")
        faces = []
        for i in order:
            face = Face(
                bbox=boxes[i, :4].astype(np.float32),
                kps=kpss[i].astype(np.float32),
                score=float(boxes[i, 4]),
            )
            if self._genderage is not None:
                face.attributes.update(_gender_age(self._genderage, bgr, face))
            faces.append(face)
        return faces

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """Unit-norm ArcFace embedding of the face aligned by insightface's ``norm_crop`` on ``face.kps``."""
        image = check_rgb(image)
        kps = np.asarray(face.kps, dtype=np.float32)
        if kps.shape != (5, 2) or not np.all(np.isfinite(kps)):
            raise InputError(f"face.kps must be finite (5, 2) keypoints, got shape {kps.shape}", field="face")
        side = self._recognizer.input_size[0]
        aligned = face_align.norm_crop(image, landmark=kps, image_size=side)  # (side, side, 3) RGB
        bgr = np.ascontiguousarray(aligned[:, :, ::-1])  # (side, side, 3) BGR; get_feat swaps back to RGB
        raw: np.ndarray = self._recognizer.get_feat(bgr).reshape(-1).astype(np.float32)  # (1, D) -> (D,)
        embedding = raw / max(float(np.linalg.norm(raw)), 1e-12)
        face.embedding = embedding
        return embedding

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Cosine distance 1 - cos(a, b), in [0, 2]."""
        a = np.asarray(a, dtype=np.float32).reshape(-1)  # (D,)
        b = np.asarray(b, dtype=np.float32).reshape(-1)  # (D,)
        if a.shape != (self.embedding_dim,) or b.shape != (self.embedding_dim,):
            raise InputError(
                f"embeddings must have {self.embedding_dim} values, got {a.size} and {b.size}", field="embedding"
            )
        denominator = max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)
        return 1.0 - float(np.dot(a, b)) / denominator
