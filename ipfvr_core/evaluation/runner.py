"""Run engines over evaluation cases and score every output against its ground truth.

Two phases, so ground-truth work is done once per case however many engines run:

1. **Restore.** Each engine is loaded once and restores every case into
   ``out_dir/videos/<engine>/<case>.mp4``; the wall time of that call is the engine's cost. A
   case the engine refuses (InputError) becomes a failed row with the message; the suite goes on.
2. **Score.** Per case: the judged reference photos are embedded; one pass over the ground truth
   finds the face box of every frame; then the ground truth, the degraded input and every output
   are decoded in lockstep and scored frame by frame (PSNR/SSIM of frame and face region,
   E_warp on the GT's flow, identity by both judges at the GT box). Only the previous frame of
   each video is kept, so memory does not grow with the clip's length.

The degraded input is always scored as the row ``engine="input"``, so every table reads
"input vs engine". A smaller input (a x2/x4 case) is compared after a bicubic upscale to the
ground truth's size, and the row says so in ``resized``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfvr_core.errors import InputError, OutputError
from ipfvr_core.evaluation import metrics as M
from ipfvr_core.evaluation.judges import DlibJudge, FaceNetJudge, reference_face_box

if TYPE_CHECKING:
    from ipfvr_core.evaluation.cases import EvalCase

INPUT_ROW = "input"  # engine name of the degraded video's own row
STATUS_OK = "ok"
STATUS_FAILED = "failed"

ProgressFn = Callable[[str], None]


# ---------------------------------------------------------------------------------- result model
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


@dataclass
class Judges:
    """The two identity judges (load once per run; reusable across runs)."""

    dlib: DlibJudge  # 128-d ResNet, L2
    facenet: FaceNetJudge  # InceptionResNetV1, cosine

    @classmethod
    def load(cls) -> Judges:
        return cls(dlib=DlibJudge(), facenet=FaceNetJudge())


# ---------------------------------------------------------------------------------- helpers
def case_slug(name: str) -> str:
    """A single path component for a case name ("carphone/shipped/x" -> "carphone__shipped__x")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("._") or "case"


def _say(progress: ProgressFn | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    code = getattr(exc, "code", None)
    return (text[0] if text else type(exc).__name__) + (f" [{code}]" if code else "")


def _restore_options(case: EvalCase, scale: int, overrides: Mapping[str, Any] | None = None):
    """RestoreOptions for a case; ``upscale`` only when the GT is larger and the option exists."""
    from ipfvr_core.restore import RestoreOptions

    kwargs: dict[str, Any] = {**(overrides or {}), "faces": case.faces}
    if scale > 1 and "upscale" in {f.name for f in dataclasses.fields(RestoreOptions)}:
        kwargs["upscale"] = scale
    return RestoreOptions(**kwargs)


def _judged_references(case: EvalCase) -> tuple[Path, ...]:
    """The photos identity-to-reference is judged against: the named judged reference if any,
    else every reference given to the engine (the best score over them counts)."""
    return (case.judged_reference,) if case.judged_reference is not None else tuple(case.references)


def check_case(case: EvalCase) -> tuple[Any, Any, int]:
    """Probe both videos; return (degraded info, GT info, scale). InputError names the field."""
    from ipfvr_core.video_io import probe

    deg = probe(case.degraded, field="degraded")
    gt = probe(case.ground_truth, field="ground_truth")
    scale_w, rem_w = divmod(gt.width, deg.width)
    scale_h, rem_h = divmod(gt.height, deg.height)
    if rem_w or rem_h or scale_w != scale_h or scale_w not in (1, 2, 4):
        raise InputError(
            f"{case.name}: ground truth {gt.width}x{gt.height} is not 1, 2 or 4 times the degraded "
            f"{deg.width}x{deg.height}",
            field="ground_truth", code="invalid_option",
        )
    if not case.references:
        raise InputError(f"{case.name}: no reference photo", field="reference", code="invalid_option")
    return deg, gt, scale_w


def _best(values: list[float], higher_is_better: bool) -> float:
    return max(values) if higher_is_better else min(values)


# ---------------------------------------------------------------------------------- scoring
@dataclass
class _Stream:
    """One video being scored in lockstep with the ground truth."""

    row: ResultRow
    frames: Any  # iterator of VideoFrame
    prev: np.ndarray | None = None  # previous frame at GT size (for E_warp)
    failed: str | None = None  # set when it stops matching the GT (frame count or size)


class _CaseScorer:
    """Scores every video of one case against its ground truth (GT-side work done once here)."""

    def __init__(self, case: EvalCase, info: CaseInfo, judges: Judges, config: M.MetricsConfig) -> None:
        self.case = case
        self.info = info
        self.judges = judges
        self.config = config
        self.ref_dlib: list[np.ndarray] = []
        self.ref_facenet: list[np.ndarray] = []

    def embed_references(self) -> None:
        from ipfvr_core.image_io import read_image

        for path in _judged_references(self.case):
            image = read_image(path, field="reference")
            box = reference_face_box(image, self.judges.dlib.analyzer, name=Path(path).name)
            self.ref_dlib.append(self.judges.dlib.embed(image, box))
            self.ref_facenet.append(self.judges.facenet.embed(image, box))

    def find_gt_boxes(self) -> list[np.ndarray | None]:
        """Pass 1: the judged face's box in every GT frame, filled where the detector missed.

        With several confident faces in a frame, the judged person is the one closest (dlib L2)
        to the judged reference, so a second face on screen cannot take over the face metrics.
        """
        from ipfvr_core.video_io import iter_frames

        analyzer = self.judges.dlib.analyzer
        detected: list[np.ndarray | None] = []
        for frame in iter_frames(self.case.ground_truth, field="ground_truth"):
            faces = [f for f in analyzer.detect(frame.image) if f.score >= self.config.gt_min_face_score]
            if not faces:
                detected.append(None)
            elif len(faces) == 1:
                detected.append(faces[0].bbox.astype(np.float64))
            else:
                dist = [min(self.judges.dlib.compare(self.judges.dlib.embed(frame.image, f.bbox), r)
                            for r in self.ref_dlib) for f in faces]  # fmt: skip
                detected.append(faces[int(np.argmin(dist))].bbox.astype(np.float64))
        boxes, sources = M.interpolate_boxes(detected)
        self.info.face_boxes = [None if b is None else [round(float(v), 2) for v in b] for b in boxes]
        self.info.face_box_source = sources
        return boxes

    def _identity(self, image: np.ndarray, box: np.ndarray | None,
                  gt_emb: tuple[np.ndarray, np.ndarray] | None) -> dict[str, float | None]:  # fmt: skip
        if box is None:
            return {"dlib_l2_to_gt": None, "facenet_cos_to_gt": None, "dlib_l2_to_ref": None,
                    "facenet_cos_to_ref": None}  # fmt: skip
        d = self.judges.dlib.embed(image, box)
        f = self.judges.facenet.embed(image, box)
        return {
            "dlib_l2_to_gt": self.judges.dlib.compare(d, gt_emb[0]) if gt_emb is not None else None,
            "facenet_cos_to_gt": self.judges.facenet.compare(f, gt_emb[1]) if gt_emb is not None else None,
            "dlib_l2_to_ref": _best([self.judges.dlib.compare(d, r) for r in self.ref_dlib], False),
            "facenet_cos_to_ref": _best([self.judges.facenet.compare(f, r) for r in self.ref_facenet], True),
        }

    def score(self, streams: list[_Stream], boxes: list[np.ndarray | None]) -> None:
        """Pass 2: decode the GT and every stream in lockstep and fill each row's per-frame metrics."""
        from ipfvr_core.video_io import iter_frames

        h, w = self.info.height, self.info.width
        prev_gt: np.ndarray | None = None
        n_gt = 0
        for gt_frame in iter_frames(self.case.ground_truth, field="ground_truth"):
            t, gt = gt_frame.index, gt_frame.image
            n_gt += 1
            box = boxes[t] if t < len(boxes) else None
            region = M.expand_box(box, self.config.face_margin, w, h) if box is not None else None
            pair = M.gt_flow_pair(prev_gt, gt, self.config.warp) if prev_gt is not None else None
            gt_ident = None
            if box is not None:
                gt_ident = (self.judges.dlib.embed(gt, box), self.judges.facenet.embed(gt, box))
                self.info.gt_dlib_l2_to_ref.append(
                    _best([self.judges.dlib.compare(gt_ident[0], r) for r in self.ref_dlib], False))
                self.info.gt_facenet_cos_to_ref.append(
                    _best([self.judges.facenet.compare(gt_ident[1], r) for r in self.ref_facenet], True))
            else:
                self.info.gt_dlib_l2_to_ref.append(None)
                self.info.gt_facenet_cos_to_ref.append(None)
            for s in streams:
                if s.failed is not None:
                    continue
                try:
                    frame = next(s.frames, None)
                except InputError as exc:  # a damaged output fails its own row, not the case
                    s.failed = _one_line(exc)
                    continue
                if frame is None:
                    s.failed = f"{s.row.video} ended after {t} frames; the ground truth has more"
                    continue
                image = frame.image
                if image.shape[:2] != (h, w):
                    s.row.resized = f"bicubic {image.shape[1]}x{image.shape[0]} -> {w}x{h}"
                    image = M.resize_to(image, w, h)
                face = (M.crop(image, region), M.crop(gt, region)) if region is not None else None
                s.row.per_frame.append(FrameRow(
                    index=t,
                    frame_psnr=M.psnr(image, gt),
                    frame_ssim=M.ssim(image, gt),
                    face_psnr=M.psnr(*face) if face is not None else None,
                    face_ssim=M.ssim(*face) if face is not None else None,
                    e_warp=M.warp_error(s.prev, image, pair) if pair is not None and s.prev is not None else None,
                    **self._identity(image, box, gt_ident),
                ))  # fmt: skip
                s.prev = image
            prev_gt = gt
        self.info.frames = n_gt
        for s in streams:
            try:
                extra = s.failed is None and next(s.frames, None) is not None
            except InputError as exc:
                s.failed = _one_line(exc)
                continue
            if extra:
                s.failed = f"{s.row.video} has more frames than the ground truth ({n_gt})"


def _summarise(row: ResultRow) -> None:
    row.frames = len(row.per_frame)
    for key in FRAME_METRICS:
        setattr(row, key, M.mean_or_none([getattr(fr, key) for fr in row.per_frame]))


def _fail(row: ResultRow, message: str) -> None:
    row.status, row.error, row.per_frame = STATUS_FAILED, message, []
    row.frames = 0
    for key in FRAME_METRICS:
        setattr(row, key, None)


def case_info(case: EvalCase) -> CaseInfo:
    """The case's description, its media checked once (a broken case gets ``error``, not an exception)."""
    info = CaseInfo(
        name=case.name, group=case.group, note=case.note, degraded=str(case.degraded),
        ground_truth=str(case.ground_truth), references=[str(p) for p in case.references],
        judged_references=[str(p) for p in _judged_references(case)], faces=case.faces,
    )  # fmt: skip
    try:
        _, gt, scale = check_case(case)
        info.width, info.height, info.scale = gt.width, gt.height, scale
    except InputError as exc:
        info.error = _one_line(exc)
    return info


def score_videos(case: EvalCase, videos: Mapping[str, Path], judges: Judges | None = None) -> list[ResultRow]:
    """The input row, then one row per ``{engine name: restored video}`` of one case, scored."""
    info = case_info(case)
    rows = [ResultRow(case=case.name, group=case.group, engine=INPUT_ROW, status=STATUS_OK, video=str(case.degraded))]
    rows += [ResultRow(case=case.name, group=case.group, engine=name, status=STATUS_OK, video=str(path))
             for name, path in videos.items()]  # fmt: skip
    score_case(case, info, rows, judges or Judges.load())
    return rows


def score_case(case: EvalCase, info: CaseInfo, rows: Sequence[ResultRow], judges: Judges,
               config: M.MetricsConfig | None = None) -> None:
    """Score every ok row's ``video`` of one case against its ground truth, filling the rows in place.

    A case-level error (already in ``info.error``, or raised while scoring) fails every row; a
    video that stops matching the ground truth fails only its own row.
    """
    from ipfvr_core.video_io import iter_frames

    if info.error is None:
        scorer = _CaseScorer(case, info, judges, config or M.MetricsConfig())
        live = [r for r in rows if r.status == STATUS_OK]
        try:
            scorer.embed_references()
            boxes = scorer.find_gt_boxes()
            streams = [_Stream(row=r, frames=iter(iter_frames(r.video, field="video"))) for r in live]
            scorer.score(streams, boxes)
        except InputError as exc:
            info.error = _one_line(exc)
    if info.error is not None:
        for r in rows:
            _fail(r, info.error)
        return
    for s in streams:
        if s.failed is not None:
            _fail(s.row, s.failed)
        else:
            _summarise(s.row)


# ---------------------------------------------------------------------------------- entry point
def check_engines(engines: Sequence[str]) -> list[str]:
    """The engine names, checked (known, none twice, at least one); InputError(field="engines")."""
    from ipfvr_core.engines import ENGINES

    engines = list(engines)
    if not engines:
        raise InputError("name at least one engine", field="engines", code="invalid_option")
    for name in engines:
        if name not in ENGINES:
            raise InputError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}", field="engines",
                             code="invalid_option")
    if len(set(engines)) != len(engines):
        raise InputError("an engine is named twice", field="engines", code="invalid_option")
    return engines


def run_eval(
    cases: Sequence[EvalCase],
    engines: Sequence[str],
    out_dir: str | Path,
    *,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    weights: str | Path | None = None,
    judges: Judges | None = None,
    config: M.MetricsConfig | None = None,
    restore_options: Mapping[str, Any] | None = None,
    write_report: bool = True,
) -> EvalResult:
    """Restore every case with every engine, score input and outputs, write the report.

    ``weights`` goes to engines that need a weights folder (``ipfvr``); ``restore_options`` are
    extra RestoreOptions fields for every case (e.g. ``seed`` for stochastic engines; ``faces``
    and ``upscale`` come from the case). Raises InputError for
    an unknown engine or duplicate case names, ConfigError when an engine cannot load; a case
    that an engine refuses is recorded as a failed row, not raised.
    """
    from ipfvr_core.restore import Restorer

    engines = check_engines(engines)
    names = [c.name for c in cases]
    if len(set(names)) != len(names) or len({case_slug(n) for n in names}) != len(names):
        raise InputError("case names must be unique", field="cases", code="invalid_option")
    if not cases:
        raise InputError("no case to evaluate", field="cases", code="invalid_option")
    config = config or M.MetricsConfig()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir} ({exc.strerror or exc})", field="out") from exc

    # Check every case's media once; a broken case fails all its rows but not the run.
    infos: list[CaseInfo] = []
    scales: dict[str, int] = {}
    for case in cases:
        info = case_info(case)
        scales[case.name] = info.scale
        infos.append(info)

    # Phase 1: restore.
    rows: dict[tuple[str, str], ResultRow] = {}
    trained_against: dict[str, str] = {}  # engine -> the identity network its training rewarded
    for engine in engines:
        _say(progress, f"loading engine {engine}")
        restorer = Restorer.load(engine=engine, weights=weights if engine != "baseline" else None, device=device)
        if network := restorer.engine.versions().get("trained_against"):
            trained_against[engine] = network
        for i, (case, info) in enumerate(zip(cases, infos, strict=True)):
            row = ResultRow(case=case.name, group=case.group, engine=engine, status=STATUS_OK)
            rows[(case.name, engine)] = row
            if info.error is not None:
                _fail(row, info.error)
                continue
            out = out_dir / "videos" / engine / f"{case_slug(case.name)}.mp4"
            out.parent.mkdir(parents=True, exist_ok=True)
            _say(progress, f"{engine}: restoring {case.name} ({i + 1}/{len(cases)})")
            t0 = time.perf_counter()
            try:
                report = restorer.restore(case.degraded, list(case.references), out,
                                          _restore_options(case, scales[case.name], restore_options))  # fmt: skip
            except InputError as exc:
                _fail(row, _one_line(exc))
                continue
            seconds = time.perf_counter() - t0
            row.video = str(out)
            row.seconds_per_frame = seconds / max(1, report.frames_total)
        del restorer

    # Phase 2: score.
    judges = judges or Judges.load()
    all_rows: list[ResultRow] = []
    for i, (case, info) in enumerate(zip(cases, infos, strict=True)):
        input_row = ResultRow(case=case.name, group=case.group, engine=INPUT_ROW, status=STATUS_OK,
                              video=str(case.degraded))  # fmt: skip
        case_rows = [input_row, *(rows[(case.name, e)] for e in engines)]
        all_rows.extend(case_rows)
        if info.error is None:
            _say(progress, f"scoring {case.name} ({i + 1}/{len(cases)})")
        score_case(case, info, case_rows, judges, config)

    result = EvalResult(
        out_dir=out_dir, engines=engines, cases=infos, rows=all_rows,
        config={"metrics": dataclasses.asdict(config), "restore_options": dict(restore_options or {}),
                "device": device, "trained_against": trained_against},
    )  # fmt: skip
    if write_report:
        from ipfvr_core.evaluation.report import write_report as _write

        _say(progress, "writing the report")
        result.report_html = _write(result)
    return result
