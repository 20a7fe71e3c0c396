"""Scoring videos of one case against its ground truth, frame by frame, in lockstep.

Per case: the judged reference photos are embedded; one pass over the ground truth finds the face
box of every frame; then the ground truth, the degraded input and every output are decoded
together and scored frame by frame (PSNR/SSIM of frame and face region, E_warp on the GT's flow,
identity by both judges at the GT box). Only the previous frame of each video is kept, so memory
does not grow with the clip's length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfvr_core.errors import InputError
from ipfvr_core.evaluation import metrics as M
from ipfvr_core.evaluation.judges import DlibJudge, FaceNetJudge, reference_face_box
from ipfvr_core.evaluation.results import INPUT_ROW, STATUS_OK, CaseInfo, FrameRow, ResultRow
from ipfvr_core.options import job_option

if TYPE_CHECKING:
    from ipfvr_core.evaluation.cases import EvalCase


@dataclass
class Judges:
    """The two identity judges (load once per run; reusable across runs)."""

    dlib: DlibJudge  # 128-d ResNet, L2
    facenet: FaceNetJudge  # InceptionResNetV1, cosine

    @classmethod
    def load(cls) -> Judges:
        return cls(dlib=DlibJudge(), facenet=FaceNetJudge())


def one_line(exc: BaseException) -> str:
    """An error as one line, with its code."""
    text = str(exc).strip().splitlines()
    code = getattr(exc, "code", None)
    return (text[0] if text else type(exc).__name__) + (f" [{code}]" if code else "")


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
    if rem_w or rem_h or scale_w != scale_h or scale_w not in job_option("upscale").spec.choices:
        raise InputError(
            f"{case.name}: ground truth {gt.width}x{gt.height} is not 1, 2 or 4 times the degraded "
            f"{deg.width}x{deg.height}",
            field="ground_truth",
            code="invalid_option",
        )
    if not case.references:
        raise InputError(f"{case.name}: no reference photo", field="reference", code="invalid_option")
    return deg, gt, scale_w


def _best(values: list[float], higher_is_better: bool) -> float:
    return max(values) if higher_is_better else min(values)


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
                    _best([self.judges.dlib.compare(gt_ident[0], r) for r in self.ref_dlib], False)
                )
                self.info.gt_facenet_cos_to_ref.append(
                    _best([self.judges.facenet.compare(gt_ident[1], r) for r in self.ref_facenet], True)
                )
            else:
                self.info.gt_dlib_l2_to_ref.append(None)
                self.info.gt_facenet_cos_to_ref.append(None)
            for s in streams:
                if s.failed is not None:
                    continue
                try:
                    frame = next(s.frames, None)
                except InputError as exc:  # a damaged output fails its own row, not the case
                    s.failed = one_line(exc)
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
                s.failed = one_line(exc)
                continue
            if extra:
                s.failed = f"{s.row.video} has more frames than the ground truth ({n_gt})"


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
        info.error = one_line(exc)
    return info


def score_videos(case: EvalCase, videos: Mapping[str, Path], judges: Judges | None = None) -> list[ResultRow]:
    """The input row, then one row per ``{engine name: restored video}`` of one case, scored."""
    info = case_info(case)
    rows = [ResultRow(case=case.name, group=case.group, engine=INPUT_ROW, status=STATUS_OK, video=str(case.degraded))]
    rows += [ResultRow(case=case.name, group=case.group, engine=name, status=STATUS_OK, video=str(path))
             for name, path in videos.items()]  # fmt: skip
    score_case(case, info, rows, judges or Judges.load())
    return rows


def score_case(
    case: EvalCase, info: CaseInfo, rows: Sequence[ResultRow], judges: Judges, config: M.MetricsConfig | None = None
) -> None:
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
            streams: list[_Stream] = []
            for r in live:
                assert r.video is not None, "an ok row names its video"
                streams.append(_Stream(row=r, frames=iter(iter_frames(r.video, field="video"))))
            scorer.score(streams, boxes)
        except InputError as exc:
            info.error = one_line(exc)
    if info.error is not None:
        for r in rows:
            r.fail(info.error)
        return
    for s in streams:
        if s.failed is not None:
            s.row.fail(s.failed)
        else:
            s.row.summarise()
