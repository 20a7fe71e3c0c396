"""A restorer double for the hostile-input tests (tests only).

``ProbingRestorerDouble`` runs the library's own input checks exactly as the real restorer meets
them, with the worker's configured limits: ``ipfvr_core.video_io.probe`` (container, streams,
declared size and duration, first frame), a full decode with ``iter_frames`` (damage past the
first frame), and ``ipfvr_core.image_io.read_image`` on every reference. Only the model is left
out: a clean input is copied to the output. Every failure is the library's ``InputError`` with its
stable code, which the worker must turn into a failed job without dying.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from ipfvr_core.errors import Canceled
from ipfvr_core.image_io import read_image
from ipfvr_core.video_io import VideoLimits, iter_frames, probe
from worker.restorer import CancelFn, ProgressFn, RestorerConfig, RestoreRequest


@dataclass
class _StageDouble:
    stage: str
    current: int
    total: int
    fraction: float


class ProbingRestorerDouble:
    def __init__(self, config: RestorerConfig) -> None:
        self.limits = VideoLimits(max_width=config.max_side, max_height=config.max_side,
                                  max_pixels=config.max_pixels, max_duration_s=config.max_duration_s)
        self.max_reference_pixels = config.max_reference_pixels

    def restore(self, request: RestoreRequest, *, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        info = probe(request.video, self.limits)
        for index, reference in enumerate(request.references):
            read_image(reference, field=f"reference[{index}]", max_pixels=self.max_reference_pixels)
        frames = 0
        for _ in iter_frames(request.video, info):
            frames += 1
            if should_cancel():
                raise Canceled("canceled by caller")
        progress(_StageDouble("restore", frames, frames, 1.0))
        shutil.copyfile(request.video, request.output)
        return {"double": "probing", "frames_total": frames, "frames": [], "timings_s": {}}


def load_probing_restorer(config: RestorerConfig) -> ProbingRestorerDouble:
    return ProbingRestorerDouble(config)
