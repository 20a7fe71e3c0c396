"""The deploy files against pyproject.toml: the API image's requirements and the packages the images copy."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_api_requirements_are_written_from_the_api_extra() -> None:
    checked = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "requirements_api.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_the_api_extra_pins_what_the_project_pins() -> None:
    project = PYPROJECT["project"]
    assert set(project["optional-dependencies"]["api"]) <= set(project["dependencies"])


def test_the_images_copy_every_package_the_project_installs() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        path.parent.name
        for path in REPO.glob("*/__init__.py")
        if any(fnmatch.fnmatch(path.parent.name, p) for p in patterns)
    }
    copied = set(re.findall(r"^COPY (\w+) /app/\1$", (REPO / "Dockerfile").read_text(), flags=re.M))
    assert packages == copied, "the Dockerfile's source stage and pyproject's package discovery disagree"
