"""Run engines over evaluation cases and score every output against its ground truth.

Two phases, so ground-truth work is done once per case however many engines run:

1. **Restore.** Each engine is loaded once and restores every case into
   ``out_dir/videos/<engine>/<case>.mp4``; the wall time of that call is the engine's cost. A
   case the engine refuses (InputError) becomes a failed row with the message; the suite goes on.
2. **Score** (``scoring``). Per case, the ground truth, the degraded input and every output are
   decoded in lockstep and scored frame by frame into ``results`` rows.

The degraded input is always scored as the row ``engine="input"``, so every table reads
"input vs engine". A smaller input (a x2/x4 case) is compared after a bicubic upscale to the
ground truth's size, and the row says so in ``resized``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipfvr_core.errors import InputError, OutputError
from ipfvr_core.evaluation import metrics as M
from ipfvr_core.evaluation.results import INPUT_ROW, STATUS_OK, CaseInfo, EvalResult, ResultRow, case_slug
from ipfvr_core.evaluation.scoring import Judges, case_info, one_line, score_case

if TYPE_CHECKING:
    from ipfvr_core.evaluation.cases import EvalCase
    from ipfvr_core.options import RestoreOptions

MessageFn = Callable[[str], None]  # takes one line of progress for a person to read


def _say(progress: MessageFn | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _restore_options(case: EvalCase, scale: int, overrides: Mapping[str, Any] | None = None) -> RestoreOptions:
    """RestoreOptions for a case: ``faces`` from the case, ``upscale`` when the GT is larger."""
    from ipfvr_core.restore import RestoreOptions

    upscale = {"upscale": scale} if scale > 1 else {}
    return RestoreOptions(**{**(overrides or {}), "faces": case.faces, **upscale})


def check_engines(engines: Sequence[str]) -> list[str]:
    """The engine names, checked (known, none twice, at least one); InputError(field="engines")."""
    from ipfvr_core.engines import ENGINES

    engines = list(engines)
    if not engines:
        raise InputError("name at least one engine", field="engines", code="invalid_option")
    for name in engines:
        if name not in ENGINES:
            raise InputError(
                f"unknown engine {name!r}; choose from {', '.join(ENGINES)}", field="engines", code="invalid_option"
            )
    if len(set(engines)) != len(engines):
        raise InputError("an engine is named twice", field="engines", code="invalid_option")
    return engines


def run_eval(
    cases: Sequence[EvalCase],
    engines: Sequence[str],
    out_dir: str | Path,
    *,
    device: str = "cpu",
    progress: MessageFn | None = None,
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
                row.fail(info.error)
                continue
            out = out_dir / "videos" / engine / f"{case_slug(case.name)}.mp4"
            out.parent.mkdir(parents=True, exist_ok=True)
            _say(progress, f"{engine}: restoring {case.name} ({i + 1}/{len(cases)})")
            t0 = time.perf_counter()
            try:
                report = restorer.restore(case.degraded, list(case.references), out,
                                          _restore_options(case, scales[case.name], restore_options))  # fmt: skip
            except InputError as exc:
                row.fail(one_line(exc))
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
