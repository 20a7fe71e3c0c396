"""The engine interface.

An engine restores aligned face crops (FFHQ 5-point alignment, square, RGB uint8). The restore
pipeline opens one :class:`EngineSession` per face track and streams the track's crops through it
clip by clip. A session may hold state across clips (IP-FVR's exponential latent blending needs the
previous clip) and may therefore return fewer crops than it was given; ``flush`` returns the rest.
Across ``push``/``flush`` calls a session returns exactly as many crops as it was given, in order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ipfvr_core.errors import Canceled, ConfigError, InputError

if TYPE_CHECKING:
    from ipfvr_core.faces.base import FaceAnalyzer

# progress(done_units, total_units) within the current push; units are engine-defined (steps or frames).
ProgressFn = Callable[[int, int], None]
# returns True when the caller wants the work stopped; engines check it between steps/clips.
CancelFn = Callable[[], bool]


@dataclass
class IdentityCondition:
    """What an engine knows about the person to keep."""

    embeddings: list[np.ndarray]  # one (D,) float32 per reference, from the face analyzer
    metric: str  # "l2" (dlib) or "cosine" (ArcFace), as FaceAnalyzer.metric
    aligned_references: list[np.ndarray] = field(default_factory=list)  # (S, S, 3) uint8 aligned reference crops
    attributes: dict[str, object] = field(default_factory=dict)  # merged reference attributes (gender, age, ...)
    prompt: str | None = None  # user text describing the face (Face2Text "user" source)
    negative_prompt: str | None = None  # user negative stream
    guidance_scale: float | None = None  # total negative-stream weight W (= CFG scale - 1); None = the engine's own


@dataclass(frozen=True)
class CropNote:
    """What an engine says about one restored crop, for the job report."""

    reference: int | None  # index of the reference photo whose detail was used; None: no reference transfer
    confidence: float  # mean transfer confidence over the face, 0 (none) to 1 (full)


def check_push(clip: np.ndarray, native_size: int | None) -> None:
    """Raise InputError unless ``clip`` is (T>=1, S, S, 3) uint8 and ``native_size`` is None or positive."""
    valid = clip.ndim == 4 and clip.shape[0] >= 1 and clip.shape[1] == clip.shape[2] and clip.shape[3] == 3
    if not valid or clip.dtype != np.uint8:
        raise InputError(f"expected (T>=1, S, S, 3) uint8 crops, got {clip.shape} {clip.dtype}", field="clip")
    if native_size is not None and native_size <= 0:
        raise InputError(f"must be > 0, got {native_size}", field="native_size", code="invalid_option")


def check_canceled(should_cancel: CancelFn | None) -> None:
    """Raise :class:`Canceled` if the caller asked to stop."""
    if should_cancel is not None and should_cancel():
        raise Canceled("canceled by caller")


class EngineSession(ABC):
    """Restores one face track, clip by clip."""

    @abstractmethod
    def push(
        self,
        clip: np.ndarray,  # (T, S, S, 3) uint8, T >= 1
        *,
        native_size: int | None = None,  # side the crop would have at the source video's resolution
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:  # (T', S, S, 3) uint8, 0 <= T' <= T + buffered
        ...

    @abstractmethod
    def flush(
        self,
        *,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:  # (T'', S, S, 3) uint8: every crop still buffered
        ...

    def crop_notes(self, n: int) -> list[CropNote | None]:
        """Notes on the ``n`` crops the last push/flush returned, in order; None where an engine has none."""
        return [None] * n


class Engine(ABC):
    """A loaded restoration model. Load once, reuse for many videos and tracks."""

    name: str  # CLI/API name, e.g. "baseline", "ipfvr"
    clip_length: int  # how many crops the pipeline should push at a time
    face_size: int  # side S of the aligned crops this engine wants
    warnings: tuple[str, ...] = ()  # said in every report this engine makes (e.g. random test weights)

    @abstractmethod
    def open_session(self, identity: IdentityCondition, *, seed: int | None = None) -> EngineSession:
        """Start restoring one track of the person described by ``identity``."""

    def versions(self) -> dict[str, str]:
        """Engine name, weights identity and library versions, for the report."""
        return {"engine": self.name}

    def check_face_backend(self, analyzer: FaceAnalyzer) -> None:
        """Refuse, at load, a face backend whose embeddings this engine cannot take.

        A hook with a default: any backend will do. Engines tied to one embedding space override it.
        """
        return None

    # Per-identity modules (IP-FVR's LoRA psi_id): engines that have none refuse a name.
    identity_modules: bool = False  # whether use_identity/load_identity accept a name

    def use_identity(self, name: str | None) -> None:
        """Condition the next sessions on per-identity module ``name`` (None: none)."""
        if name is not None:
            raise ConfigError(
                f"the {self.name} engine has no per-identity modules (those are trained for the ipfvr engine)",
                field="identity",
            )

    def load_identity(self, name: str, path: str | Path) -> None:
        """Load the per-identity module file ``path`` under ``name`` (the active one does not change)."""
        raise ConfigError(f"the {self.name} engine has no per-identity modules", field="identity")

    def unload_identity(self, name: str) -> None:
        """Forget per-identity module ``name``."""
        raise ConfigError(f"the {self.name} engine has no per-identity modules", field="identity")
