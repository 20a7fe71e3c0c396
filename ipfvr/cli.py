"""``ipfvr``: one command line for the library (restore, demo, weights, eval, training) and the service.

Each ``*_cli`` module of this package registers its commands with ``add_commands``.

Library errors print as one line, ``ipfvr: error: <field>: <message> [<code>]``, and exit 2;
a cancel (Ctrl-C) exits 130; a closed output pipe (``| head``) ends quietly with 141. Unexpected errors print
one line too; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from ipfvr import eval_cli, restore_cli, service_cli, training_cli, weights_cli
from ipfvr_core.errors import Canceled, IPFVRError

# In the order `ipfvr --help` lists them: the library's commands, training, then the service's.
_COMMAND_MODULES = (restore_cli, weights_cli, eval_cli, training_cli, service_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipfvr", description="Identity-preserving face video restoration.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # OpenMP's default busy-wait makes torch ~10x slower when other processes share the cores;
    # it must be set before torch loads (the engines import it lazily).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # diffusers/transformers/hub chatter (loading bars, dtype notes) is not for the user of a CLI.
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe raises here, inside the handlers, not at interpreter exit
        return code
    except Canceled:
        print("ipfvr: canceled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("ipfvr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`ipfvr status ... | head`): stop quietly, as Unix tools do. stdout
        # points at /dev/null so that the interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the signal
    except IPFVRError as exc:
        print(f"ipfvr: error: {exc} [{exc.code}]", file=sys.stderr)
        return 2
    except Exception as exc:  # the edge of the program: one line, traceback on request
        if args.debug:
            raise
        print(
            f"ipfvr: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
