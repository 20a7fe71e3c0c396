"""Write deploy/requirements-api.txt, what the API image installs, from the ``api`` extra of pyproject.toml.

python scripts/requirements_api.py           # write the file
python scripts/requirements_api.py --check   # exit 1 when the file is not what the extra gives
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "deploy" / "requirements-api.txt"
HEADER = """\
# What the API image (web process, webhook/maintenance worker, beat) installs: no torch, no media stack.
# Written by scripts/requirements_api.py from the `api` extra of pyproject.toml: edit the extra, then run it.
"""


def render(pyproject: Path = REPO / "pyproject.toml") -> str:
    """The requirements file the ``api`` extra gives, one requirement a line, in the extra's order."""
    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["api"]
    return HEADER + "".join(f"{requirement}\n" for requirement in extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args(argv)
    wanted = render()
    if args.check:
        if not TARGET.is_file() or TARGET.read_text() != wanted:
            print(f"{TARGET.relative_to(REPO)} is out of date: run python scripts/requirements_api.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
