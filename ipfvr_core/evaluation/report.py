"""The evaluation report: results.json, summary.csv, PNG plots, side-by-side clips, report.html.

Every table (CSV, HTML, the command's stdout) is built from :class:`ResultRow` and
:data:`SUMMARY_COLUMNS`, so they cannot disagree. Non-finite numbers are written as strings:
``"inf"`` (PSNR of identical frames) and ``"-inf"``; NaN never occurs and would become null.

report.html is self-contained - plots and clips are base64 data URIs, there is no script, style
sheet or font from elsewhere - so it can be mailed or attached to CI runs. Clips are short
(``ReportConfig.clip_frames``) and the total embedded size is capped.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ipfvr_core.errors import InputError
from ipfvr_core.evaluation.results import (
    INPUT_ROW,
    STATUS_OK,
    SUMMARY_COLUMNS,
    CaseInfo,
    EvalResult,
    ResultRow,
    case_slug,
)

CSV_FIELDS = ("case", "group", "engine", "status", "frames", *(c.key for c in SUMMARY_COLUMNS), "resized", "error")


@dataclass(frozen=True)
class ReportConfig:
    """Sizes of what the report embeds."""

    clip_frames: int = 48  # frames per side-by-side clip
    clip_panel_height: int = 192  # each panel is scaled to this height at most (px)
    clip_crf: int = 26  # x264 CRF of the clips (they are previews, not measurements)
    max_embedded_bytes: int = 22 * 2**20  # stop embedding clips past this (base64 adds 1/3: ~30 MB HTML)


# ------------------------------------------------------------------------------------ values
def json_value(value: Any) -> Any:
    """``value`` with inf as "inf"/"-inf", NaN as None, Paths as strings, dataclasses as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(value, np.integer):
        return int(value)
    return value


def _cell(value: Any, fmt: str, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    v = float(value)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v * scale, fmt)


def trained_against_note(result: EvalResult, *, html_escape: bool = False) -> str:
    """Which engine was trained against which identity network, and which judge to read then."""
    notes = []
    for engine, network in sorted(result.config.get("trained_against", {}).items()):
        judge = "dlib" if network == "facenet" else "dlib and FaceNet"
        notes.append(
            f"{engine} was trained against {network} (identity feedback): read the {judge} columns; "
            "a judge that was the training reward measures the reward, not the identity."
        )
    if not notes:
        return ""
    return "".join(f"<p class='note'><b>{html.escape(n)}</b></p>" for n in notes) if html_escape else "\n".join(notes)


def summary_table(rows: list[ResultRow]) -> str:
    """The summary as aligned text (what ``ipfvr eval`` prints)."""
    headers = ["case", "engine", *(c.header for c in SUMMARY_COLUMNS)]
    body: list[list[str]] = []
    for r in rows:
        if r.status != STATUS_OK:
            body.append([r.case, r.engine, f"failed: {r.error}"])
            continue
        body.append([r.case, r.engine, *(_cell(getattr(r, c.key), c.fmt, c.scale) for c in SUMMARY_COLUMNS)])
    widths = [len(h) for h in headers]
    for cells in body:
        for i, c in enumerate(cells if len(cells) == len(headers) else cells[:2]):
            widths[i] = max(widths[i], len(c))

    def line(cells: list[str]) -> str:
        if len(cells) != len(headers):  # a failed row: case, engine, then the reason
            return f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}  {cells[2]}"
        return "  ".join(f"{c:<{widths[i]}}" if i < 2 else f"{c:>{widths[i]}}" for i, c in enumerate(cells))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(b) for b in body)])


# ------------------------------------------------------------------------------------ files
def write_json(result: EvalResult, path: Path) -> None:
    doc = {
        "engines": result.engines,
        "config": result.config,
        "conventions": {
            "inf": 'PSNR of identical images is +inf, written as the string "inf"',
            "e_warp": "raw mean squared warping error, images in [0, 1] (not x 1e3)",
            "dlib_l2": "dlib ResNet 128-d Euclidean distance; lower is better, same person < 0.6",
            "facenet_cos": "FaceNet InceptionResNetV1 512-d cosine similarity; higher is better",
            "face_region": "GT face box (dlib HOG on the ground truth) grown by config.face_margin",
            "identity_box": "every video is embedded at the ground truth's face box of that frame",
        },
        "columns": [dataclasses.asdict(c) for c in SUMMARY_COLUMNS],
        "cases": json_value(result.cases),
        "rows": json_value(result.rows),
    }
    path.write_text(json.dumps(doc, indent=1, allow_nan=False))


def write_csv(result: EvalResult, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for r in result.rows:
            cells = []
            for key in CSV_FIELDS:
                v = json_value(getattr(r, key))
                cells.append("" if v is None else v)
            writer.writerow(cells)


# ------------------------------------------------------------------------------------ plots
def _figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas, without pyplot (no global backend or state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _finite(values: list[float | None]) -> list[float]:
    return [np.nan if v is None or not math.isfinite(v) else float(v) for v in values]


_IDENTITY_PANELS = (
    ("dlib_l2_to_gt", "dlib L2 to GT (lower better)", None),
    ("dlib_l2_to_ref", "dlib L2 to reference (lower better)", "gt_dlib_l2_to_ref"),
    ("facenet_cos_to_gt", "FaceNet cos to GT (higher better)", None),
    ("facenet_cos_to_ref", "FaceNet cos to reference (higher better)", "gt_facenet_cos_to_ref"),
)


def plot_identity(info: CaseInfo, rows: list[ResultRow], path: Path) -> None:
    """Per-frame identity curves of one case: both judges, to GT and to reference."""
    fig = _figure(11, 6.5)
    axes = fig.subplots(2, 2, sharex=True)
    shade = [i for i, s in enumerate(info.face_box_source) if s != "detected"]
    for ax, (key, title, gt_key) in zip(axes.ravel(), _IDENTITY_PANELS, strict=True):
        for r in rows:
            if r.status != STATUS_OK or not r.per_frame:
                continue
            style = {"color": "0.45", "linestyle": "--"} if r.engine == INPUT_ROW else {}
            ax.plot([f.index for f in r.per_frame], _finite([getattr(f, key) for f in r.per_frame]),
                    label=r.engine, linewidth=1.4, **style)  # fmt: skip
        if gt_key is not None and getattr(info, gt_key):
            values = getattr(info, gt_key)
            ax.plot(range(len(values)), _finite(values), color="black", linewidth=1.2, label="ground truth")
        for i in shade:
            ax.axvspan(i - 0.5, i + 0.5, color="orange", alpha=0.12, linewidth=0)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("frame")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{info.name}  (shaded: GT face box interpolated/held)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png")


def group_means(result: EvalResult, key: str) -> tuple[list[str], list[str], np.ndarray]:
    """(groups, engines incl. input, means[group, engine]) of a row metric over ok cases.

    Infinite values (identical frames) cannot be averaged into a bar and are left out; NaN
    marks a group with no measurable value.
    """
    groups = list(dict.fromkeys(info.group or "(none)" for info in result.cases))
    engines = [INPUT_ROW, *result.engines]
    means = np.full((len(groups), len(engines)), np.nan)
    for gi, g in enumerate(groups):
        for ei, e in enumerate(engines):
            vals = [getattr(r, key) for r in result.rows
                    if (r.group or "(none)") == g and r.engine == e and r.status == STATUS_OK]  # fmt: skip
            vals = [float(v) for v in vals if v is not None and math.isfinite(v)]
            if vals:
                means[gi, ei] = float(np.mean(vals))
    return groups, engines, means


def plot_bars(result: EvalResult, column, path: Path) -> None:
    """Bars of one metric: case groups on x, one bar per engine (input included)."""
    groups, engines, means = group_means(result, column.key)
    keep = ~np.all(np.isnan(means), axis=1)  # (G,) groups with at least one value (failed cases have none)
    groups, means = [g for g, k in zip(groups, keep, strict=True) if k], means[keep]  # (G', E)
    fig = _figure(max(5.0, 1.6 * len(groups) + 2), 3.6)
    ax = fig.subplots()
    width = 0.8 / len(engines)
    x = np.arange(len(groups))
    for ei, e in enumerate(engines):
        color = "0.6" if e == INPUT_ROW else None
        ax.bar(x + (ei - (len(engines) - 1) / 2) * width, means[:, ei] * column.scale, width, label=e, color=color)
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_title(f"{column.header} (mean over cases)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


# ------------------------------------------------------------------------------------ clips
def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    scale = max(0.35, image.shape[0] / 400)
    cv2.putText(out, text, (4, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_clip(info: CaseInfo, rows: list[ResultRow], path: Path, config: ReportConfig) -> None:
    """input | each engine | ground truth, side by side, first ``clip_frames`` frames."""
    from ipfvr_core.video_io import VideoWriter, iter_frames, probe

    panels = [(r.engine, r.video) for r in rows if r.status == STATUS_OK and r.video]
    panels.append(("ground truth", info.ground_truth))
    gt = probe(info.ground_truth, field="ground_truth")
    ph = min(config.clip_panel_height, gt.height) // 2 * 2
    pw = max(2, round(gt.width * ph / gt.height) // 2 * 2)
    iters = [iter(iter_frames(p, field="video")) for _, p in panels]
    with VideoWriter(path, width=pw * len(panels), height=ph, fps=gt.fps, crf=config.clip_crf,
                     preset="veryfast", field="clip") as writer:  # fmt: skip
        for _ in range(config.clip_frames):
            maybe = [next(it, None) for it in iters]
            frames = [f for f in maybe if f is not None]
            if len(frames) < len(maybe):
                break
            tiles = [_label(cv2.resize(f.image, (pw, ph), interpolation=cv2.INTER_AREA
                                       if f.image.shape[0] > ph else cv2.INTER_CUBIC), name)
                     for f, (name, _) in zip(frames, panels, strict=True)]  # fmt: skip
            writer.write(np.concatenate(tiles, axis=1))  # (ph, pw * panels, 3)


# ------------------------------------------------------------------------------------ HTML
def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
td.t, th.t { text-align: left; }
tr.input td { color: #666; }
tr.failed td { color: #a00; }
img { max-width: 100%; }
video { max-width: 100%; }
.note { color: #555; font-size: 13px; }
"""


def _html_table(rows: list[ResultRow]) -> str:
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in SUMMARY_COLUMNS)
    out = [f"<table><tr><th class='t'>case</th><th class='t'>engine</th>{head}</tr>"]
    for r in rows:
        cls = "failed" if r.status != STATUS_OK else ("input" if r.engine == INPUT_ROW else "")
        if r.status != STATUS_OK:
            cells = f"<td class='t' colspan='{len(SUMMARY_COLUMNS)}'>failed: {html.escape(r.error or '')}</td>"
        else:
            cells = "".join(f"<td>{_cell(getattr(r, c.key), c.fmt, c.scale)}</td>" for c in SUMMARY_COLUMNS)
        out.append(f"<tr class='{cls}'><td class='t'>{html.escape(r.case)}</td>"
                   f"<td class='t'>{html.escape(r.engine)}</td>{cells}</tr>")  # fmt: skip
    out.append("</table>")
    return "\n".join(out)


def write_report(result: EvalResult, config: ReportConfig | None = None) -> Path:
    """Write every report file into ``result.out_dir``; return the path of report.html."""
    config = config or ReportConfig()
    out = Path(result.out_dir)
    plots, clips = out / "plots", out / "clips"
    plots.mkdir(parents=True, exist_ok=True)
    clips.mkdir(parents=True, exist_ok=True)
    write_json(result, out / "results.json")
    write_csv(result, out / "summary.csv")

    bar_pngs = []
    for column in SUMMARY_COLUMNS:
        path = plots / f"bars_{column.key}.png"
        plot_bars(result, column, path)
        bar_pngs.append((column, path))

    embedded = 0
    sections = []
    for info in result.cases:
        rows = [r for r in result.rows if r.case == info.name]
        slug = case_slug(info.name)
        parts = [f"<h3>{html.escape(info.name)}</h3>",
                 f"<p class='note'>{html.escape(info.note)} - group {html.escape(info.group or '(none)')}, "
                 f"faces={html.escape(info.faces)}, {info.frames} frames {info.width}x{info.height}, "
                 f"GT/degraded scale {info.scale}</p>"]  # fmt: skip
        if info.error is not None:
            parts.append(f"<p class='note'>case failed: {html.escape(info.error)}</p>")
            sections.append("\n".join(parts))
            continue
        sources = {s: info.face_box_source.count(s) for s in dict.fromkeys(info.face_box_source)}
        gt_d = [v for v in info.gt_dlib_l2_to_ref if v is not None]
        gt_f = [v for v in info.gt_facenet_cos_to_ref if v is not None]
        parts.append("<p class='note'>GT face boxes: " + html.escape(", ".join(f"{k} {v}" for k, v in sources.items()))
                     + (f". Ground truth to reference: dlib L2 {np.mean(gt_d):.3f}, FaceNet cos {np.mean(gt_f):.3f}"
                        if gt_d and gt_f else "") + "</p>")  # fmt: skip
        png = plots / f"identity_{slug}.png"
        plot_identity(info, rows, png)
        embedded += png.stat().st_size
        parts.append(f"<img alt='identity curves' src='{_data_uri(png, 'image/png')}'>")
        clip = clips / f"{slug}.mp4"
        try:
            write_clip(info, rows, clip, config)
        except InputError as exc:
            parts.append(f"<p class='note'>no clip: {html.escape(str(exc))}</p>")
        else:
            size = clip.stat().st_size
            if embedded + size <= config.max_embedded_bytes:
                embedded += size
                parts.append(f"<video controls loop muted playsinline src='{_data_uri(clip, 'video/mp4')}'></video>"
                             "<p class='note'>input | " + html.escape(" | ".join(
                                 r.engine for r in rows if r.status == STATUS_OK and r.engine != INPUT_ROW))
                             + " | ground truth</p>")  # fmt: skip
            else:
                parts.append(f"<p class='note'>clip not embedded (size budget); see clips/{html.escape(clip.name)}</p>")
        sections.append("\n".join(parts))

    bars = "\n".join(f"<img alt='{html.escape(c.header)}' src='{_data_uri(p, 'image/png')}'>" for c, p in bar_pngs)
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ipfvr eval</title><style>{_STYLE}</style></head>
<body>
<h1>ipfvr eval</h1>
<p class="note">Engines: {html.escape(", ".join(result.engines))}. Identity: dlib ResNet L2 (lower better, same
person below 0.6) and FaceNet cosine (higher better), both at the ground truth's face box. PSNR/SSIM vs the
ground truth on the whole frame and the GT face region; E_warp on the ground truth's DIS flow, shown x1e3.
"input" is the degraded video itself. results.json has every frame.</p>
{trained_against_note(result, html_escape=True)}
<h2>Summary</h2>
{_html_table(result.rows)}
<h2>Metrics by case group</h2>
{bars}
<h2>Cases</h2>
{"".join(sections)}
</body></html>
"""
    path = out / "report.html"
    path.write_text(doc)
    return path
