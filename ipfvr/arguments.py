"""Command-line flags of the job options, made from their one definition in ``ipfvr_core.options``.

``ipfvr restore`` offers the options marked ``cli`` with the library's defaults; ``ipfvr submit``
offers the options marked ``service`` with no default of its own (an option left out is not sent,
and the service applies the same default). Values are checked by the library's own rules
(:meth:`~ipfvr_core.options.JobOption.check`), so a bad one is a one-line ``invalid_option`` error.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ipfvr_core.options import JobOption, job_options


def add_reference_photos(parser: argparse.ArgumentParser, help: str, *, required: bool = False) -> None:
    """``-r/--reference PHOTO`` (repeatable) into ``args.references``: the reference photos of a command."""
    parser.add_argument(
        "-r", "--reference", dest="references", type=Path, action="append", required=required, help=help
    )


def add_option_flags(parser: argparse.ArgumentParser, *, service: bool) -> None:
    """One flag per job option of ``ipfvr restore`` (``service=False``) or of ``ipfvr submit`` (``service=True``)."""
    for option in job_options():
        if not (option.spec.service if service else option.spec.cli):
            continue
        parser.add_argument(
            option.flag,
            dest=option.name,
            type=option.kind,
            metavar=_metavar(option),
            default=None if service else option.default,
            help=_help(option),
        )


def chosen_options(args: argparse.Namespace, *, service: bool) -> dict[str, Any]:
    """The job options on the command line, by name.

    For ``ipfvr submit`` (``service``), only the ones given, each checked here so that a typo fails
    before any upload; ``ipfvr restore`` gives every one to ``RestoreOptions``, whose ``validate`` checks them.
    """
    chosen = {}
    for option in job_options():
        if not (option.spec.service if service else option.spec.cli):
            continue
        value = getattr(args, option.name)
        if service:
            if value is None:
                continue
            option.check(value)
        chosen[option.name] = value
    return chosen


def _metavar(option: JobOption) -> str:
    if option.spec.metavar:
        return option.spec.metavar
    if option.spec.choices:
        return "{" + ",".join(map(str, option.spec.choices)) + "}"
    return option.flag.lstrip("-").replace("-", "_").upper()


def _help(option: JobOption) -> str:
    """The option's help with its default: "text (default: x)", or "text (note; default: x)"."""
    text = option.spec.help
    default = option.spec.none_means if option.default is None else option.default
    if default is None:
        return text
    return f"{text[:-1]}; default: {default})" if text.endswith(")") else f"{text} (default: {default})"
