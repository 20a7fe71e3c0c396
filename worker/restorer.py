"""The resident restorer: what a worker loads once and calls for every job.

The worker talks to a :class:`ResidentRestorer` (paths and the job's public options in, a report
out). The default factory, :func:`load_restorer`, adapts ``ipfvr_core.restore.Restorer`` to it;
another factory can be configured with ``IPFVR_RESTORER=module:callable`` (a lighter model, a
remote backend). The library is imported lazily, inside the worker's child process only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jobs.settings import Settings


class ProgressLike(Protocol):
    """What a progress callback receives (``ipfvr_core.restore.ProgressEvent``)."""

    stage: str
    current: int
    total: int
    fraction: float


ProgressFn = Callable[[ProgressLike], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class RestoreRequest:
    video: Path  # downloaded input video
    references: list[Path]  # downloaded reference images
    output: Path  # where the restored .mp4 goes
    options: dict[str, Any]  # the job's public options (faces, prompt, negative_prompt, guidance, seed, upscale, ...)


class ResidentRestorer(Protocol):
    def restore(self, request: RestoreRequest, *, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        """Restore one video; raise ipfvr_core errors (InputError, Canceled, ...) on failure."""
        ...


@dataclass(frozen=True)
class RestorerConfig:
    """What a factory needs, taken from the settings."""

    engine: str  # engine to load
    weights: Path | None  # weights folder (ipfvr engine)
    face_backend: str  # auto | dlib | insightface
    insightface_dir: Path | None  # local insightface model pack
    device: str  # torch device
    dtype: str | None  # engine dtype; None = the engine's default
    max_side: int  # video width/height limit, pixels
    max_pixels: int  # video frame area limit
    max_duration_s: float  # video duration limit
    max_reference_pixels: int  # reference image area limit

    @classmethod
    def from_settings(cls, settings: Settings) -> RestorerConfig:
        return cls(
            engine=settings.worker_engine, weights=settings.weights_dir, face_backend=settings.face_backend,
            insightface_dir=settings.insightface_dir, device=settings.device, dtype=settings.dtype,
            max_side=settings.max_side, max_pixels=settings.max_pixels, max_duration_s=settings.max_duration_s,
            max_reference_pixels=settings.max_reference_pixels,
        )


RestorerFactory = Callable[[RestorerConfig], ResidentRestorer]


def load_factory(path: str) -> RestorerFactory:
    """Import ``module:callable``."""
    module_name, _, attribute = path.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    if not callable(factory):
        raise TypeError(f"IPFVR_RESTORER {path} is not callable")
    return factory


class LibraryRestorer:
    """:class:`ResidentRestorer` over ``ipfvr_core.restore.Restorer``."""

    def __init__(self, restorer: Any, config: RestorerConfig) -> None:
        self._restorer = restorer
        self._config = config

    def restore(self, request: RestoreRequest, *, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        from ipfvr_core.restore import RestoreOptions
        from ipfvr_core.video_io import VideoLimits

        c = self._config
        kwargs: dict[str, Any] = {
            "faces": request.options.get("faces", "target"),
            "prompt": request.options.get("prompt"),
            "negative_prompt": request.options.get("negative_prompt"),
            "seed": request.options.get("seed"),
            "limits": VideoLimits(max_width=c.max_side, max_height=c.max_side, max_pixels=c.max_pixels,
                                  max_duration_s=c.max_duration_s),
            "reference_max_pixels": c.max_reference_pixels,
        }
        kwargs["guidance"] = request.options.get("guidance")
        kwargs["upscale"] = request.options.get("upscale", 1)
        kwargs["background"] = request.options.get("background", "realesrgan")
        return self._restorer.restore(
            request.video, request.references, request.output, options=RestoreOptions(**kwargs),
            progress=progress, should_cancel=should_cancel,
        )


def load_restorer(config: RestorerConfig) -> LibraryRestorer:
    """The default factory: load the face analyzer and the engine (slow; once per worker process)."""
    from ipfvr_core.restore import Restorer

    restorer = Restorer.load(
        engine=config.engine, weights=config.weights, face_backend=config.face_backend,
        insightface_dir=config.insightface_dir, device=config.device, dtype=config.dtype,
    )
    return LibraryRestorer(restorer, config)
