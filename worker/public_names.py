"""What a job's client sees of the worker's files: its own file names in messages and the report."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from jobs.model import JobRecord


class PublicNames:
    """What the client sees instead of the worker's scratch files: its own file names, no server paths.

    Inputs are downloaded to ``scratch/input-video`` and ``scratch/reference-<i>`` (names no client
    controls); messages and the report name those files. Here they become the names the client
    uploaded (or the form field, for presigned uploads), and the scratch folder disappears.
    """

    def __init__(self, scratch: Path, record: JobRecord, extra: dict[str, str] | None = None) -> None:
        self.folder = f"{scratch}{os.sep}"
        inputs = record.inputs
        self.names: dict[str, str] = dict(extra or {})
        if inputs is not None:
            scratch_names = ["input-video", *(f"reference-{i}" for i in range(len(inputs.references)))]
            self.names |= dict(zip(scratch_names, inputs.display_names(), strict=True))
        # a scratch name on its own, not part of a longer word or file name
        alternatives = "|".join(map(re.escape, self.names)) or r"(?!)"
        self.pattern = re.compile(r"(?<![\w.-])(" + alternatives + r")(?![\w-])")

    def text(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.names[m.group(1)], text.replace(self.folder, ""))

    def report(self, value: Any) -> Any:
        """The report with every string made public (structure and numbers unchanged)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.report(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.report(v) for v in value]
        return value


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its per-frame rows (those stay in report.json)."""
    return {k: v for k, v in report.items() if k != "frames"}
