"""The one small interface every face-analysis backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from ipfvr_core.errors import InputError


@dataclass
class Face:
    """One detected face in one image, in that image's pixel coordinates."""

    bbox: np.ndarray  # (4,) float32 x0, y0, x1, y1
    # (5, 2) float32: left eye, right eye, nose tip, left mouth corner, right mouth corner (image-left first)
    kps: np.ndarray
    score: float  # detector confidence (backend-specific scale)
    embedding: np.ndarray | None = None  # (D,) float32 identity vector, filled by FaceAnalyzer.embed
    attributes: dict[str, object] = field(default_factory=dict)  # optional: {"gender": "male", "age": 31, ...}


@runtime_checkable
class FaceAnalyzer(Protocol):
    """Detect faces, give 5 landmarks, and embed identity.

    Images are RGB ``uint8`` arrays of shape (H, W, 3). Implementations must be safe to call
    repeatedly from one thread; they are loaded once and reused.
    """

    name: str  # "dlib" | "insightface"
    embedding_dim: int  # 128 for dlib, 512 for ArcFace
    metric: Literal["l2", "cosine"]  # how identity distance is computed for this embedding
    match_threshold: float  # distance under which two faces are taken as the same person
    # detect() favours recall (degraded video: tracks and identity weed out false hits); detections
    # scoring at least this are confident, which is what a clean reference photo must give.
    confident_score: float
    # A track counts as a face only if the median score of its detections reaches this (None: no
    # floor). It keeps a recall-oriented detector's steady weak hits (cartoons, patterns) out of
    # target selection, where degraded video leaves identity too loose a test on its own.
    track_score: float | None

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in ``image``, highest score first, with ``bbox``, ``kps`` and ``score`` set."""
        ...

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """Identity vector (embedding_dim,) float32 of ``face`` in ``image``; also stored on ``face.embedding``."""
        ...

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Identity distance between two embeddings under ``metric`` (0 = identical)."""
        ...


def check_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` itself, once it is checked to be an RGB uint8 array (H, W, 3); else InputError(field="image")."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"expected an RGB uint8 array (H, W, 3), got {dtype} {shape}", field="image")
    return image
