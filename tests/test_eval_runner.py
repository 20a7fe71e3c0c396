"""``ipfvr eval`` end to end on a tiny real case: restore with the baseline, score, write the report."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: busy-waiting OpenMP crawls on shared cores

import numpy as np
import pytest
from PIL import Image

from ipfvr_core.errors import InputError
from ipfvr_core.evaluation import metrics as M
from ipfvr_core.evaluation.cases import EvalCase
from ipfvr_core.evaluation.report import CSV_FIELDS, json_value, summary_table, write_csv, write_json
from ipfvr_core.evaluation.results import FRAME_METRICS, CaseInfo, EvalResult, FrameRow, ResultRow
from ipfvr_core.evaluation.runner import _restore_options, run_eval
from ipfvr_core.evaluation.scoring import Judges, _CaseScorer, _Stream, check_case
from ipfvr_core.video_io import VideoWriter, iter_frames, probe

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 6  # the baseline costs ~0.4 s per face crop on an idle CPU core


def _cut(src: Path, dst: Path, start: int, n: int, size: tuple[int, int] | None = None) -> Path:
    info = probe(src)
    w, h = size or (info.width, info.height)
    with VideoWriter(dst, width=w, height=h, fps=info.fps, crf=0, preset="veryfast") as writer:
        for frame in iter_frames(src, info):
            if start <= frame.index < start + n:
                image = (
                    frame.image
                    if size is None
                    else np.ascontiguousarray(np.asarray(Image.fromarray(frame.image).resize(size)))
                )
                writer.write(image)
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, carphone_pristine, carphone_distorted):
    """carphone frames 1..6 (distorted vs pristine), pristine frame 0 as the reference photo."""
    root = tmp_path_factory.mktemp("eval_case")
    gt = _cut(carphone_pristine, root / "gt.mp4", 1, FRAMES)
    degraded = _cut(carphone_distorted, root / "degraded.mp4", 1, FRAMES)
    ref = root / "ref.png"
    Image.fromarray(next(iter(iter_frames(carphone_pristine))).image).save(ref)
    blank = root / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(blank)
    return {"root": root, "gt": gt, "degraded": degraded, "ref": ref, "blank": blank}


@pytest.fixture(scope="module")
def judges():
    return Judges.load()


@pytest.fixture(scope="module")
def result(tiny, tmp_path_factory, judges):
    ok = EvalCase(
        name="carphone/tiny",
        degraded=tiny["degraded"],
        ground_truth=tiny["gt"],
        references=(tiny["ref"],),
        group="carphone",
        note="frames 1-6",
    )
    missing = EvalCase(
        name="bad/missing-video",
        degraded=tiny["root"] / "nope.mp4",
        ground_truth=tiny["gt"],
        references=(tiny["ref"],),
        group="bad",
    )
    faceless = EvalCase(
        name="bad/faceless-reference",
        degraded=tiny["degraded"],
        ground_truth=tiny["gt"],
        references=(tiny["blank"],),
        group="bad",
    )
    messages: list[str] = []
    out = tmp_path_factory.mktemp("eval_out")
    # face_size 128 caps the network input at 32 px (carphone's ~50 px face would give 48): a cheaper plumbing run
    res = run_eval(
        [ok, missing, faceless],
        ["baseline"],
        out,
        progress=messages.append,
        restore_options={"face_size": 128},
        judges=judges,
    )
    return res, messages


def test_scores_input_and_engine_on_every_frame(result):
    res, messages = result
    assert [(r.case, r.engine, r.status) for r in res.rows] == [
        ("carphone/tiny", "input", "ok"),
        ("carphone/tiny", "baseline", "ok"),
        ("bad/missing-video", "input", "failed"),
        ("bad/missing-video", "baseline", "failed"),
        ("bad/faceless-reference", "input", "failed"),
        ("bad/faceless-reference", "baseline", "failed"),
    ]
    info = res.cases[0]
    assert info.frames == FRAMES and (info.width, info.height, info.scale) == (176, 144, 1)
    assert len(info.face_box_source) == FRAMES and "none" not in info.face_box_source
    for engine in ("input", "baseline"):
        row = res.row("carphone/tiny", engine)
        assert row.frames == FRAMES and [f.index for f in row.per_frame] == list(range(FRAMES))
        assert row.per_frame[0].e_warp is None and all(f.e_warp is not None for f in row.per_frame[1:])
        for key in FRAME_METRICS:  # the summary is the mean of the frames
            values = [getattr(f, key) for f in row.per_frame if getattr(f, key) is not None]
            assert getattr(row, key) == pytest.approx(float(np.mean(values)))
        assert 15 < row.face_psnr < 40 and 15 < row.frame_psnr < 40 and 0 < row.frame_ssim < 1
        assert 0 < row.dlib_l2_to_gt < 1.2 and -1 <= row.facenet_cos_to_ref <= 1
    assert res.row("carphone/tiny", "input").seconds_per_frame is None
    assert res.row("carphone/tiny", "baseline").seconds_per_frame > 0
    # The ground truth is its own person: far closer to the reference than the degraded input.
    gt_to_ref = np.mean([v for v in info.gt_dlib_l2_to_ref if v is not None])
    assert gt_to_ref < 0.4 < res.row("carphone/tiny", "input").dlib_l2_to_ref
    assert any("restoring carphone/tiny" in m for m in messages)


def test_failed_cases_are_recorded_with_their_reason(result):
    res, _ = result
    missing = res.row("bad/missing-video", "baseline")
    assert missing.error.startswith("degraded:") and "does not exist" in missing.error
    assert missing.per_frame == [] and missing.face_psnr is None
    faceless = res.row("bad/faceless-reference", "baseline")
    assert "no face" in faceless.error and faceless.error.endswith("[no_face_in_reference]")


def test_writes_json_csv_plots_and_a_self_contained_html(result):
    res, _ = result
    out = res.out_dir
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["rows"]) == 6 and len(doc["rows"][1]["per_frame"]) == FRAMES
    assert doc["rows"][1]["face_psnr"] == pytest.approx(res.rows[1].face_psnr)
    with (out / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0].keys()) == list(CSV_FIELDS) and len(table) == 6
    assert float(table[1]["dlib_l2_to_gt"]) == pytest.approx(res.rows[1].dlib_l2_to_gt)
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "identity_carphone__tiny.png" in pngs and "bars_e_warp.png" in pngs and len(pngs) == 11
    for p in (out / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert probe(out / "clips" / "carphone__tiny.mp4").width == 3 * 176  # input | baseline | GT
    html = res.report_html.read_text()
    assert res.report_html == out / "report.html" and len(html) < 30 * 2**20
    assert "http://" not in html and "https://" not in html and "url(" not in html
    sources = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", html)
    assert sources and all(s.startswith(("data:image/png;base64,", "data:video/mp4;base64,")) for s in sources)
    assert any(s.startswith("data:video/mp4") for s in sources)
    assert "carphone/tiny" in html and "no_face_in_reference" in html


def test_a_video_whose_frame_count_differs_from_the_gt_fails_its_row_only(tiny, judges, carphone_pristine, tmp_path):
    gt = _cut(carphone_pristine, tmp_path / "gt3.mp4", 1, 3)
    short = _cut(carphone_pristine, tmp_path / "short.mp4", 1, 2)
    long = _cut(carphone_pristine, tmp_path / "long.mp4", 1, 4)
    case = EvalCase(name="counts", degraded=gt, ground_truth=gt, references=(tiny["ref"],))
    info = CaseInfo(
        "counts", "", "", str(gt), str(gt), [str(tiny["ref"])], [str(tiny["ref"])], "target", width=176, height=144
    )
    scorer = _CaseScorer(case, info, judges, M.MetricsConfig())
    scorer.embed_references()
    streams = [
        _Stream(
            row=ResultRow(case="counts", group="", engine=e, status="ok", video=str(p)), frames=iter(iter_frames(p))
        )
        for e, p in (("same", gt), ("short", short), ("long", long))
    ]
    scorer.score(streams, scorer.find_gt_boxes())
    same, shorter, longer = streams
    assert same.failed is None and len(same.row.per_frame) == 3
    assert same.row.per_frame[0].frame_psnr == math.inf  # the GT against itself
    assert same.row.per_frame[0].e_warp is None and same.row.per_frame[2].e_warp is not None
    assert shorter.failed.endswith("ended after 2 frames; the ground truth has more")
    assert longer.failed.endswith("has more frames than the ground truth (3)")
    assert info.frames == 3 and len(info.gt_dlib_l2_to_ref) == 3


def _row(**metrics) -> ResultRow:
    frame = FrameRow(index=0, **{k: metrics.get(k) for k in FRAME_METRICS})
    return ResultRow(case="c", group="g", engine="input", status="ok", frames=1, per_frame=[frame], **metrics)


def test_inf_is_written_as_the_string_inf_everywhere(tmp_path):
    row = _row(frame_psnr=math.inf, frame_ssim=1.0, e_warp=0.0)
    res = EvalResult(
        out_dir=tmp_path, engines=[], cases=[CaseInfo("c", "g", "", "d", "g", [], [], "target")], rows=[row], config={}
    )
    write_json(res, tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["rows"][0]["frame_psnr"] == "inf" and doc["rows"][0]["per_frame"][0]["frame_psnr"] == "inf"
    assert doc["rows"][0]["face_psnr"] is None
    write_csv(res, tmp_path / "s.csv")
    with (tmp_path / "s.csv").open() as f:
        assert next(csv.DictReader(f))["frame_psnr"] == "inf"
    cells = summary_table([row]).splitlines()[2].split()
    # case, engine, 4 identity columns, face PSNR, face SSIM, frame PSNR, frame SSIM, E_warp x1e3, s/frame
    assert cells == ["c", "input", "-", "-", "-", "-", "-", "-", "inf", "1.000", "0.000", "-"]
    assert json_value([math.inf, -math.inf, math.nan, 1.5]) == ["inf", "-inf", None, 1.5]


def test_case_sizes_must_be_1_2_or_4_times(tiny, carphone_distorted, tmp_path):
    odd = _cut(carphone_distorted, tmp_path / "odd.mp4", 0, 2, size=(96, 72))
    case = EvalCase(name="odd", degraded=odd, ground_truth=tiny["gt"], references=(tiny["ref"],))
    with pytest.raises(InputError, match="not 1, 2 or 4 times") as info:
        check_case(case)
    assert info.value.field == "ground_truth"
    half = _cut(carphone_distorted, tmp_path / "half.mp4", 0, 2, size=(88, 72))
    _, _, scale = check_case(EvalCase(name="x2", degraded=half, ground_truth=tiny["gt"], references=(tiny["ref"],)))
    assert scale == 2
    assert _restore_options(EvalCase(name="x2", degraded=half, ground_truth=tiny["gt"], references=()), 2).upscale == 2


def _ipfvr(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ipfvr", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )


def _one_line_error(r: subprocess.CompletedProcess, prefix: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), r.stderr


def test_cli_missing_file_is_one_line(tiny, tmp_path):
    r = _ipfvr(
        "eval",
        "--degraded",
        tmp_path / "nope.mp4",
        "--ground-truth",
        tiny["gt"],
        "-r",
        tiny["ref"],
        "--out",
        tmp_path / "out",
    )
    _one_line_error(r, "ipfvr: error: degraded: ")
    assert r.stderr.strip().endswith("[invalid_video]") and not (tmp_path / "out").exists()
    r = _ipfvr(
        "eval",
        "--degraded",
        tiny["degraded"],
        "--ground-truth",
        tiny["gt"],
        "-r",
        tiny["ref"],
        "--engines",
        "baseline,nope",
        "--out",
        tmp_path / "out",
    )
    _one_line_error(r, "ipfvr: error: engines: unknown engine 'nope'")
