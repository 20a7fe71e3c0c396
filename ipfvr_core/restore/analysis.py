"""The analysis pass: decode every frame, detect its faces and embed the ones identity needs.

Only boxes, landmarks and embeddings are kept (a few hundred bytes per face), so memory stays
bounded whatever the video's length.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np

from ipfvr_core.engines.base import CancelFn, check_canceled
from ipfvr_core.errors import InputError
from ipfvr_core.faces.base import Face, FaceAnalyzer
from ipfvr_core.faces.tracks import faces_to_embed
from ipfvr_core.restore.stages import Stages
from ipfvr_core.video_io import VideoInfo, iter_frames

_RECENT_FRAMES = 3  # frames whose face boxes tell a face that continues a track from one that starts one


def analyze(
    analyzer: FaceAnalyzer,
    input_path: str | Path,
    info: VideoInfo,
    embed_every: int,
    stages: Stages,
    should_cancel: CancelFn | None,
) -> list[list[Face]]:
    """The faces of every frame, embedded on every ``embed_every``-th frame and where tracks may start or swap."""
    detections: list[list[Face]] = []
    t = time.perf_counter()
    recent: deque[np.ndarray] = deque(maxlen=_RECENT_FRAMES)  # (F_i, 4) face boxes of the last frames
    for vf in iter_frames(input_path, info):
        t = stages.add("decode", t)
        check_canceled(should_cancel)
        faces = analyzer.detect(vf.image)
        t = stages.add("detect", t)
        boxes = np.array([f.bbox for f in faces], dtype=np.float64).reshape(-1, 4)  # (F, 4)
        for i in faces_to_embed(
            boxes, np.concatenate([*recent, np.zeros((0, 4))]), sampled=vf.index % embed_every == 0
        ):
            analyzer.embed(vf.image, faces[i])
        recent.append(boxes)
        t = stages.add("embed", t)
        detections.append(faces)
        if vf.index % 8 == 0:
            stages.report("analyze", vf.index + 1, info.frame_count)
    if not detections:
        raise InputError("the video has no decodable frames", field="video", code="empty_video")
    stages.report("analyze", len(detections), len(detections))
    return detections
