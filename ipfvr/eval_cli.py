"""``ipfvr eval``: score engines against ground truth (identity, PSNR/SSIM, E_warp) into an HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ipfvr.arguments import add_reference_photos
from ipfvr_core.engines import ENGINES
from ipfvr_core.errors import InputError
from ipfvr_core.options import job_option


def add_commands(sub: argparse._SubParsersAction) -> None:
    add_eval(sub)


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score engines against ground truth: identity, PSNR/SSIM, E_warp; HTML report")
    p.add_argument("--suite", choices=("builtin",), help="evaluate the builtin suite (built once, cached)")
    p.add_argument("--quick", action="store_true", help="the builtin suite's small subset (short clips)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("~/.cache/ipfvr/eval"),
        help="where the builtin suite's media are cached (default ~/.cache/ipfvr/eval)",
    )
    p.add_argument("--degraded", type=Path, help="one explicit case: the degraded video")
    p.add_argument("--ground-truth", type=Path, help="one explicit case: its ground-truth video")
    add_reference_photos(p, "one explicit case: reference photo (repeat for several)")
    faces = job_option("faces")
    p.add_argument(
        "--faces", choices=faces.spec.choices, default=faces.default, help=f"explicit case: {faces.spec.help}"
    )
    p.add_argument(
        "--engines",
        default="baseline",
        help=f"comma-separated engines to compare ({', '.join(ENGINES)}; default baseline)",
    )
    p.add_argument("--weights", type=Path, help="weights folder for the ipfvr engine")
    p.add_argument("--device", default="cpu", help="torch device for the engines")
    p.add_argument("--out", type=Path, default=Path("eval_out"), help="output folder (default eval_out)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from ipfvr_core.errors import OutputError
    from ipfvr_core.evaluation.report import summary_table, trained_against_note
    from ipfvr_core.evaluation.runner import check_engines
    from ipfvr_core.evaluation.runner import run_eval as evaluate
    from ipfvr_core.evaluation.scoring import check_case

    engines = check_engines([e.strip() for e in args.engines.split(",") if e.strip()])
    explicit = args.degraded is not None or args.ground_truth is not None or args.references
    if args.suite is not None and explicit:
        raise InputError("give --suite or --degraded/--ground-truth/-r, not both", field="suite", code="invalid_option")
    if args.suite is None:
        if not explicit:
            raise InputError(
                "give --suite builtin, or --degraded D --ground-truth G -r REF", field="suite", code="invalid_option"
            )
        from ipfvr_core.evaluation.cases import EvalCase

        for name, value in (
            ("degraded", args.degraded),
            ("ground_truth", args.ground_truth),
            ("reference", args.references),
        ):
            if not value:
                raise InputError("is required with an explicit case", field=name, code="invalid_option")
        for ref in args.references:
            if not ref.is_file():
                raise InputError(f"{ref} does not exist", field="reference", code="invalid_reference")
        cases = [
            EvalCase(
                name=args.degraded.stem,
                degraded=args.degraded,
                ground_truth=args.ground_truth,
                references=tuple(args.references),
                faces=args.faces,
                group="explicit",
                note=f"{args.degraded.name} vs {args.ground_truth.name}",
            )
        ]
        check_case(cases[0])  # a bad explicit case is an error, not a failed row
    else:
        from ipfvr_core.evaluation.cases import builtin_suite

        cases = builtin_suite(args.cache_dir.expanduser(), quick=args.quick)
    if args.out.exists() and not args.out.is_dir():
        raise OutputError(f"{args.out} is not a folder", field="out", code="output_not_writable")

    def say(message: str) -> None:
        print(f"eval: {message}", file=sys.stderr, flush=True)

    result = evaluate(
        cases, engines, args.out, device=args.device, weights=args.weights, progress=None if args.quiet else say
    )
    print(summary_table(result.rows))
    if note := trained_against_note(result):
        print(note)
    print(f"report: {result.report_html}")
    return 0
