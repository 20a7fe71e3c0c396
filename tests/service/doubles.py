"""Test doubles for the job service (tests only).

``CopyRestorerDouble`` stands in for the real restorer in fast service tests: it copies the input
video to the output, reports progress in a few steps and honours the cancel check between them.
Its behaviour is set by environment variables of the worker process under test:

* ``IPFVR_TEST_DOUBLE_STEPS`` / ``IPFVR_TEST_DOUBLE_STEP_S``: how many progress steps, how long each;
* ``IPFVR_TEST_DOUBLE_LOAD_S``: how long "loading the model" takes;
* ``IPFVR_TEST_DOUBLE_IGNORE_CANCEL=1``: never look at the cancel check (exercises the hard terminate).

A job can override the step count and length, and ask to ignore cancels, through its prompt:
``double:steps=20,step_s=0.1,ignore_cancel=1``. Fault tests also use:

* ``crash=1``: the process kills itself (SIGKILL) at the second step, every time (a poison job);
* ``ignore_soft_limit=1``: swallow Celery's soft time limit, like a run stuck in native code;
* ``pad_bytes=N``: append N zero bytes to the output (a result large enough for a multipart upload);
* ``first_run=PATH``: the first run (no file at PATH yet) creates it and runs 100 times longer, so
  that a test can kill it mid-run whatever the machine's speed; later runs take the normal time;
* ``runs=PATH``: every run appends ``start`` to PATH when it begins and ``done`` when it has written
  its output, so a test can count the runs of a job (its output keys are the same every time).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded

from ipfvr_core.errors import Canceled, ConfigError
from ipfvr_core.progress import ProgressCallback, ProgressEvent
from ipfvr_core.report import RestoreReport
from tests.report_factory import sample_report
from worker.restorer import CancelFn, RestorerConfig, RestoreRequest

COPY_WARNING = "copy double: the video was copied, not restored"


class CopyRestorerDouble:
    def __init__(self, steps: int, step_s: float, ignore_cancel: bool) -> None:
        self.steps = steps
        self.step_s = step_s
        self.ignore_cancel = ignore_cancel

    def restore(self, request: RestoreRequest, *, progress: ProgressCallback, should_cancel: CancelFn) -> RestoreReport:
        steps, step_s, ignore_cancel = self.steps, self.step_s, self.ignore_cancel
        prompt = request.options.prompt or ""
        spec: dict[str, str] = {}
        if prompt.startswith("double:"):
            spec = dict(item.split("=", 1) for item in prompt[len("double:") :].split(",") if item)
            steps = int(spec.get("steps", steps))
            step_s = float(spec.get("step_s", step_s))
            ignore_cancel = spec.get("ignore_cancel", "0") == "1"
            if (runs := spec.get("runs")) is not None:
                with open(runs, "a") as log:
                    log.write("start\n")
            if (marker := spec.get("first_run")) is not None:
                try:
                    with open(marker, "x"):
                        steps *= 100
                except FileExistsError:
                    pass
        for step in range(steps):
            if not ignore_cancel and should_cancel():
                raise Canceled("canceled by caller")
            if spec.get("crash") == "1" and step == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            progress(ProgressEvent("restore", step, steps, step / steps))
            self._sleep(step_s, ignore_soft_limit=spec.get("ignore_soft_limit") == "1")
        shutil.copyfile(request.video, request.output)
        if pad := int(spec.get("pad_bytes", "0")):
            with request.output.open("ab") as f:
                f.write(bytes(pad))
        progress(ProgressEvent("restore", steps, steps, 1.0))
        if (runs := spec.get("runs")) is not None:
            with open(runs, "a") as log:
                log.write("done\n")
        return sample_report(
            video=request.video.name,
            references=tuple(r.name for r in request.references),
            frames=1,
            seconds=steps * step_s,
            warnings=(COPY_WARNING,),
        )

    @staticmethod
    def _sleep(seconds: float, *, ignore_soft_limit: bool) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                time.sleep(left)
            except SoftTimeLimitExceeded:
                if not ignore_soft_limit:
                    raise


def load_copy_restorer(config: RestorerConfig) -> CopyRestorerDouble:
    time.sleep(float(os.environ.get("IPFVR_TEST_DOUBLE_LOAD_S", "0")))
    return CopyRestorerDouble(
        steps=int(os.environ.get("IPFVR_TEST_DOUBLE_STEPS", "3")),
        step_s=float(os.environ.get("IPFVR_TEST_DOUBLE_STEP_S", "0.1")),
        ignore_cancel=os.environ.get("IPFVR_TEST_DOUBLE_IGNORE_CANCEL") == "1",
    )


def load_broken_restorer(config: RestorerConfig) -> CopyRestorerDouble:
    """A factory whose model never loads (missing weights), for the worker's ``failed`` state."""
    raise ConfigError(f"no weights for engine {config.engine}", field="weights", code="weights_invalid")


AUDIT_EVENTS = ("open", "os.rename", "os.replace", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree")


def load_auditing_restorer(config: RestorerConfig) -> CopyRestorerDouble:
    """The copy double, in a process that logs every path under its work folder that it opens, renames,
    creates or removes (a ``sys.addaudithook`` hook), one per line, to ``IPFVR_TEST_AUDIT_LOG``."""
    import sys

    work_dir = os.path.realpath(os.environ["IPFVR_WORK_DIR"])
    log_path = os.environ["IPFVR_TEST_AUDIT_LOG"]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in AUDIT_EVENTS:
            return
        for arg in args[:2]:
            if isinstance(arg, (str, bytes, os.PathLike)):
                path = os.fsdecode(arg)
                if os.path.realpath(path).startswith(work_dir + os.sep) and path != log_path:
                    with open(log_path, "a") as log:  # an open outside the work folder: not logged again
                        log.write(f"{event}\t{os.path.relpath(os.path.realpath(path), work_dir)}\n")

    sys.addaudithook(hook)
    return load_copy_restorer(config)
