"""The resident restorer: what a worker loads once and calls for every job.

The worker talks to a :class:`ResidentRestorer` (paths and the job's options in, a
``ipfvr_core.report.RestoreReport`` out). The default factory, :func:`load_restorer`, adapts
``ipfvr_core.restore.Restorer`` to it; another factory can be configured with
``IPFVR_RESTORER=module:callable`` (a lighter model, a remote backend). The library is imported
lazily, inside the worker's child process only.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ipfvr_core.limits import VideoLimits
from ipfvr_core.progress import ProgressCallback
from jobs.options import JobOptions, restore_options
from jobs.settings import Settings

if TYPE_CHECKING:
    from ipfvr_core.report import RestoreReport

CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class IdentityUse:
    """The identity a job names, as far as the engine is concerned."""

    id: str  # the identity's id: its module's name inside the engine
    fetch_module: Callable[[Path], None] | None  # writes its module file to a path; None: no module for this engine


@dataclass(frozen=True)
class RestoreRequest:
    video: Path  # downloaded input video
    references: list[Path]  # downloaded reference images (the identity's photos included)
    output: Path  # where the restored .mp4 goes
    options: JobOptions  # the job's options, as the client chose them
    identity: IdentityUse | None = None  # the job's identity, if it names one


@dataclass(frozen=True)
class TrainedModule:
    """What training an identity gave: the module file (None for engines without one) and a summary."""

    file: Path | None
    summary: dict[str, Any]


class ResidentRestorer(Protocol):
    def restore(self, request: RestoreRequest, *, progress: ProgressCallback, should_cancel: CancelFn) -> RestoreReport:
        """Restore one video; raise ipfvr_core errors (InputError, Canceled, ...) on failure."""
        ...

    def train_identity(
        self, photos: list[Path], *, name: str, work_dir: Path, should_cancel: CancelFn
    ) -> TrainedModule:
        """Check one person's photos and train the engine's per-identity module from them (if it has one)."""
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
    max_loaded_identities: int = 8  # per-identity modules kept loaded in the engine (LRU)
    identity_steps: int = 300  # optimizer steps of an identity's module
    identity_learning_rate: float = 1e-4  # and its learning rate
    max_identity_photos: int = 16  # photos of one identity

    @property
    def limits(self) -> VideoLimits:
        """What a job's video must respect."""
        return VideoLimits(
            max_width=self.max_side,
            max_height=self.max_side,
            max_pixels=self.max_pixels,
            max_duration_s=self.max_duration_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RestorerConfig:
        return cls(
            engine=settings.worker_engine,
            weights=settings.weights_dir,
            face_backend=settings.face_backend,
            insightface_dir=settings.insightface_dir,
            device=settings.device,
            dtype=settings.dtype,
            max_side=settings.max_side,
            max_pixels=settings.max_pixels,
            max_duration_s=settings.max_duration_s,
            max_reference_pixels=settings.max_reference_pixels,
            max_loaded_identities=settings.max_loaded_identities,
            identity_steps=settings.identity_steps,
            identity_learning_rate=settings.identity_learning_rate,
            max_identity_photos=settings.max_identity_photos,
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
        self._modules: LoadedModules | None = None  # made on the first job that names an identity

    def restore(self, request: RestoreRequest, *, progress: ProgressCallback, should_cancel: CancelFn) -> RestoreReport:
        c = self._config
        module = None
        if request.identity is not None and request.identity.fetch_module is not None:
            if self._modules is None:
                self._modules = LoadedModules(self._restorer.engine, capacity=c.max_loaded_identities)
            module = self._modules.use(request.identity, scratch=request.output.parent)
        options = restore_options(
            request.options, limits=c.limits, reference_max_pixels=c.max_reference_pixels, identity=module
        )
        return self._restorer.restore(
            request.video,
            request.references,
            request.output,
            options=options,
            progress=progress,
            should_cancel=should_cancel,
        )

    def train_identity(
        self, photos: list[Path], *, name: str, work_dir: Path, should_cancel: CancelFn
    ) -> TrainedModule:
        from ipfvr_core.training.identities import IdentitySettings, train_identity
        from ipfvr_core.training.prepare import PrepareConfig, prepare_identity

        c = self._config
        engine, analyzer = self._restorer.engine, self._restorer.analyzer
        settings = IdentitySettings(
            steps=c.identity_steps, learning_rate=c.identity_learning_rate, max_photos=c.max_identity_photos
        )
        if not engine.identity_modules:  # the photos serve as references: check they show one person
            prepared = prepare_identity(
                photos,
                work_dir / "data",
                analyzer,
                PrepareConfig(resolution=engine.face_size, min_face_px=settings.min_face_px),
            )
            return TrainedModule(file=None, summary={"photos": prepared.images})
        assert c.weights is not None  # the ipfvr engine loaded from it
        trained = train_identity(
            photos,
            name=name,
            weights=c.weights,
            analyzer=analyzer,
            work_dir=work_dir,
            resolution=engine.face_size,
            settings=settings,
            should_cancel=should_cancel,
        )
        return TrainedModule(file=trained.lora, summary=trained.summary)


class LoadedModules:
    """The per-identity modules loaded into the resident engine: the ``capacity`` most recently used.

    A hit costs nothing; a miss downloads the module and loads it beside the others (the backbone
    stays as it is); the least recently used one is unloaded beyond ``capacity``.
    """

    def __init__(self, engine: Any, *, capacity: int) -> None:
        self.engine = engine
        self.capacity = capacity
        self.loaded: OrderedDict[str, None] = OrderedDict()

    def use(self, identity: IdentityUse, *, scratch: Path) -> str:
        """Load ``identity``'s module if needed; returns its name in the engine."""
        if identity.id in self.loaded:
            self.loaded.move_to_end(identity.id)
            return identity.id
        assert identity.fetch_module is not None
        path = scratch / f"{identity.id}.safetensors"
        identity.fetch_module(path)
        self.engine.load_identity(identity.id, path)
        path.unlink()
        self.loaded[identity.id] = None
        while len(self.loaded) > self.capacity:
            oldest, _ = self.loaded.popitem(last=False)
            self.engine.unload_identity(oldest)
        return identity.id


def load_restorer(config: RestorerConfig) -> LibraryRestorer:
    """The default factory: load the face analyzer and the engine (slow; once per worker process)."""
    from ipfvr_core.restore import Restorer

    restorer = Restorer.load(
        engine=config.engine,
        weights=config.weights,
        face_backend=config.face_backend,
        insightface_dir=config.insightface_dir,
        device=config.device,
        dtype=config.dtype,
    )
    return LibraryRestorer(restorer, config)
