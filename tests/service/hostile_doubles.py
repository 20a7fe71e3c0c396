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

from ipfvr_core.errors import Canceled
from ipfvr_core.image_io import read_image
from ipfvr_core.progress import ProgressCallback, ProgressEvent
from ipfvr_core.report import RestoreReport
from ipfvr_core.video_io import iter_frames, probe
from tests.report_factory import sample_report
from worker.restorer import CancelFn, RestorerConfig, RestoreRequest


class ProbingRestorerDouble:
    def __init__(self, config: RestorerConfig) -> None:
        self.limits = config.limits
        self.max_reference_pixels = config.max_reference_pixels

    def restore(self, request: RestoreRequest, *, progress: ProgressCallback, should_cancel: CancelFn) -> RestoreReport:
        info = probe(request.video, self.limits)
        for index, reference in enumerate(request.references):
            read_image(reference, field=f"reference[{index}]", max_pixels=self.max_reference_pixels)
        frames = 0
        for _ in iter_frames(request.video, info):
            frames += 1
            if should_cancel():
                raise Canceled("canceled by caller")
        progress(ProgressEvent("restore", frames, frames, 1.0))
        shutil.copyfile(request.video, request.output)
        return sample_report(video=request.video.name, frames=frames)


def load_probing_restorer(config: RestorerConfig) -> ProbingRestorerDouble:
    return ProbingRestorerDouble(config)
