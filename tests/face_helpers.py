"""Checks shared by the face backends' tests: reading an image as RGB, a face's geometry."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ipfvr_core.faces.base import Face


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
