"""The results of an evaluation: per-frame metrics, one row per (case, engine), the cases, the run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipfvr_core.evaluation import metrics as M

INPUT_ROW = "input"  # engine name of the degraded video's own row
STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass
class FrameRow:
    """Every metric of one frame of one video (None: not measurable for this frame)."""

    index: int  # 0-based frame index
    frame_psnr: float | None  # dB vs the GT frame (inf when identical)
    frame_ssim: float | None  # vs the GT frame
    face_psnr: float | None  # dB on the GT face region
    face_ssim: float | None  # on the GT face region
    e_warp: float | None  # warping error of the pair (index - 1, index); None for frame 0
    dlib_l2_to_gt: float | None  # dlib ResNet L2 to the GT frame's face (lower is better)
    facenet_cos_to_gt: float | None  # FaceNet cosine to the GT frame's face (higher is better)
    dlib_l2_to_ref: float | None  # best dlib L2 to the judged reference photo(s)
    facenet_cos_to_ref: float | None  # best FaceNet cosine to the judged reference photo(s)


# Per-frame metrics that a ResultRow averages, in table order.
FRAME_METRICS = (
    "dlib_l2_to_gt", "facenet_cos_to_gt", "dlib_l2_to_ref", "facenet_cos_to_ref",
    "face_psnr", "face_ssim", "frame_psnr", "frame_ssim", "e_warp",
)  # fmt: skip


@dataclass
class ResultRow:
    """One (case, engine) result; the one row type behind results.json, summary.csv, the HTML
    table and the table the command prints. Metric fields are means over frames (E_warp: over
    frame pairs); None when not measurable or when the row failed."""

    case: str  # EvalCase.name
    group: str  # EvalCase.group
    engine: str  # engine name, or "input" for the degraded video itself
    status: str  # "ok" | "failed"
    error: str | None = None  # why it failed, one line
    frames: int = 0  # frames scored
    seconds_per_frame: float | None = None  # engine wall time / frames (None for the input row)
    dlib_l2_to_gt: float | None = None
    facenet_cos_to_gt: float | None = None
    dlib_l2_to_ref: float | None = None
    facenet_cos_to_ref: float | None = None
    face_psnr: float | None = None
    face_ssim: float | None = None
    frame_psnr: float | None = None
    frame_ssim: float | None = None
    e_warp: float | None = None
    resized: str | None = None  # "bicubic WxH -> WxH" when compared after resizing to the GT size
    video: str | None = None  # the scored video (output path, or the degraded input)
    per_frame: list[FrameRow] = field(default_factory=list)  # every frame's metrics

    def summarise(self) -> None:
        """Fill the means from ``per_frame``."""
        self.frames = len(self.per_frame)
        for key in FRAME_METRICS:
            setattr(self, key, M.mean_or_none([getattr(fr, key) for fr in self.per_frame]))

    def fail(self, message: str) -> None:
        """Mark the row failed with ``message``, no metric kept."""
        self.status, self.error, self.per_frame = STATUS_FAILED, message, []
        self.frames = 0
        for key in FRAME_METRICS:
            setattr(self, key, None)


@dataclass(frozen=True)
class Column:
    """One column of the summary table."""

    key: str  # ResultRow attribute (and CSV header)
    header: str  # short header for stdout and HTML
    fmt: str  # format of a float value
    scale: float = 1.0  # shown value = stored value * scale (stdout/HTML only; CSV/JSON keep raw)


SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("dlib_l2_to_gt", "dlib L2→GT", ".3f"),
    Column("facenet_cos_to_gt", "FaceNet cos→GT", ".3f"),
    Column("dlib_l2_to_ref", "dlib L2→ref", ".3f"),
    Column("facenet_cos_to_ref", "FaceNet cos→ref", ".3f"),
    Column("face_psnr", "face PSNR", ".2f"),
    Column("face_ssim", "face SSIM", ".3f"),
    Column("frame_psnr", "frame PSNR", ".2f"),
    Column("frame_ssim", "frame SSIM", ".3f"),
    Column("e_warp", "E_warp×1e3", ".3f", 1e3),
    Column("seconds_per_frame", "s/frame", ".2f"),
)


@dataclass
class CaseInfo:
    """What was judged in one case, and the ground truth's own numbers."""

    name: str  # EvalCase.name
    group: str  # EvalCase.group
    note: str  # EvalCase.note
    degraded: str  # degraded video path
    ground_truth: str  # ground-truth video path
    references: list[str]  # reference photos given to the engines
    judged_references: list[str]  # photos identity-to-reference is judged against (best of them)
    faces: str  # RestoreOptions.faces used
    frames: int = 0  # GT frames
    width: int = 0  # GT width
    height: int = 0  # GT height
    scale: int = 1  # GT size / degraded size (1, 2 or 4)
    error: str | None = None  # why the whole case failed (bad media, no face in a reference)
    face_boxes: list[list[float] | None] = field(default_factory=list)  # per frame GT face box (x0, y0, x1, y1)
    face_box_source: list[str] = field(default_factory=list)  # per frame: detected | interpolated | held | none
    gt_dlib_l2_to_ref: list[float | None] = field(default_factory=list)  # per frame, the GT's own identity to ref
    gt_facenet_cos_to_ref: list[float | None] = field(default_factory=list)  # per frame, likewise


@dataclass
class EvalResult:
    """Everything one run produced."""

    out_dir: Path  # where results.json, summary.csv, plots, clips and report.html are
    engines: list[str]  # engines run, in order
    cases: list[CaseInfo]  # one per case, in order
    rows: list[ResultRow]  # per case: the input row, then one per engine
    config: dict[str, Any]  # metric settings, extra restore options and device used
    report_html: Path | None = None  # set once the report is written

    def row(self, case: str, engine: str) -> ResultRow:
        for r in self.rows:
            if r.case == case and r.engine == engine:
                return r
        raise KeyError((case, engine))


def case_slug(name: str) -> str:
    """A single path component for a case name ("carphone/shipped/x" -> "carphone__shipped__x")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("._") or "case"
