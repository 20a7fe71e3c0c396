"""The options of a restoration job, each defined once: its type, default, range and help text.

:class:`RestoreOptions` is the typed form the library runs on. A field that a person chooses carries
an :class:`OptionSpec` in its metadata (help text, choices or range, where it is offered); every
surface reads it from there instead of restating it:

* :meth:`RestoreOptions.validate` checks each value against its spec (one message per rule);
* ``ipfvr restore`` and ``ipfvr submit`` generate their flags from :func:`job_options` (``ipfvr.arguments``);
* the service generates the pydantic fields of its ``JobOptions`` from the options with
  ``service=True`` (``jobs.options``), and the worker maps them back here by name.

So an option is added by declaring its field here and reading it in the engine (through
``IdentityCondition``, for engine options); the CLI flags, the API schema and the worker follow.
This module imports only the standard library: the API process, which has no numpy, reads it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ipfvr_core.errors import InputError
from ipfvr_core.limits import VideoLimits

FaceMode = Literal["target", "all"]


@dataclass(frozen=True)
class OptionSpec:
    """What a person is told about an option, and the values it takes (its type and default are the field's)."""

    help: str  # one sentence: the CLI help and the API description
    choices: tuple[Any, ...] = ()  # the accepted values, when they are a list
    minimum: float | None = None  # smallest accepted value (numbers)
    maximum: float | None = None  # largest accepted value (numbers)
    max_length: int | None = None  # longest accepted text
    none_means: str | None = None  # what leaving it unset does, when its default is None
    cli: bool = False  # a flag of ``ipfvr restore``
    service: bool = False  # a job option of the service API and of ``ipfvr submit``
    flag: str | None = None  # the CLI flag, when it is not --<name-with-dashes>
    metavar: str | None = None  # the name argparse shows for the value in --help, when the choices do not give one


def option(default: Any, spec: OptionSpec) -> Any:
    """A dataclass field with a default, carrying ``spec``."""
    return field(default=default, metadata={"option": spec})


@dataclass(frozen=True)
class JobOption:
    """One option of :class:`RestoreOptions` as the surfaces see it."""

    name: str
    kind: type  # int, float or str: the type of a value
    optional: bool  # None is accepted (the engine or the analyzer decides)
    default: Any
    spec: OptionSpec

    @property
    def flag(self) -> str:
        return self.spec.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """Raise InputError(field=name, code="invalid_option") unless ``value`` is accepted."""
        if value is None and self.optional:
            return
        spec = self.spec
        if self.kind is str:
            valid_type, expected = isinstance(value, str), "text"
        elif self.kind is int:
            valid_type, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
        else:
            valid_type, expected = isinstance(value, int | float) and not isinstance(value, bool), "a number"
        if spec.choices and (not valid_type or value not in spec.choices):
            self._refuse(f"must be {_one_of(spec.choices)}, got {value!r}")
        if not valid_type:
            self._refuse(f"must be {expected}, got {value!r}")
        if spec.max_length is not None and len(value) > spec.max_length:
            self._refuse(f"must be at most {spec.max_length} characters, got {len(value)}")
        low, high = spec.minimum, spec.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                self._refuse(f"must be between {low:g} and {high:g}, got {value!r}")
            bound = f">= {low:g}" if low is not None else f"<= {high:g}"
            self._refuse(f"must be {bound}, got {value!r}")

    def _refuse(self, message: str) -> typing.NoReturn:
        raise InputError(message, field=self.name, code="invalid_option")


def _one_of(choices: tuple[Any, ...]) -> str:
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


@dataclass(frozen=True)
class RestoreOptions:
    """Per-job choices. Everything model-related lives in the engine's own config."""

    faces: FaceMode = option(
        "target",
        OptionSpec(
            "restore the reference's person only, or every face", choices=("target", "all"), cli=True, service=True
        ),
    )
    face_size: int | None = option(
        None, OptionSpec("aligned face size", minimum=64, maximum=2048, none_means="the engine's, 512", cli=True)
    )
    smoothing_sigma: float = option(
        3.0, OptionSpec("zero-lag Gaussian landmark smoothing over time, in frames (0 = off)", minimum=0)
    )
    target_max_distance: float | None = None  # max identity distance for the target track; None = analyzer default
    min_track_frames: int = 5  # shorter tracks are detector noise and stay untouched
    min_track_score: float | None = option(
        None,
        OptionSpec(
            "ignore face tracks whose best detection scores below this: centerface 0-1, clean faces 0.8+; dlib HOG: "
            "0 is its decision boundary",
            none_means="keep weak detections, which degraded video needs",
            cli=True,
            flag="--min-face-score",
        ),
    )
    target_margin: float = 0.1  # with several faces on screen, the target must be this much closer than the rest
    max_gap_frames: int = 20  # detector misses up to this long are bridged by interpolation
    crf: int = option(
        18,
        OptionSpec(
            "x264 constant rate factor of the output, 0-51: lower is better and larger", minimum=0, maximum=51, cli=True
        ),
    )
    preset: str = "medium"  # x264 preset
    limits: VideoLimits = field(default_factory=VideoLimits)  # refuse inputs above these
    reference_max_pixels: int = 40_000_000  # refuse reference images above this many pixels
    compare_path: str | Path | None = None  # also write input|output side by side here
    prompt: str | None = option(
        None, OptionSpec("text describing the face (ipfvr engine)", max_length=1000, cli=True, service=True)
    )
    negative_prompt: str | None = option(
        None, OptionSpec("extra negative text (ipfvr engine)", max_length=1000, cli=True, service=True)
    )
    guidance: float | None = option(
        None,
        OptionSpec(
            "total weight of the negative guidance streams, their ratios kept (ipfvr engine)",
            minimum=0,
            maximum=30,
            none_means="the weights' config",
            cli=True,
            service=True,
        ),
    )
    seed: int | None = option(
        None,
        OptionSpec(
            "random seed: makes stochastic engines reproducible", minimum=0, maximum=2**32 - 1, cli=True, service=True
        ),
    )
    upscale: int = option(
        1,
        OptionSpec(
            "output size factor for the whole frame; faces are pasted at that scale",
            choices=(1, 2, 4),
            cli=True,
            service=True,
        ),
    )
    background: str = option(
        "realesrgan",
        OptionSpec(
            "how upscale enlarges the frame around the faces: realesrgan, the Real-ESRGAN x4plus network in tiles, or "
            "bicubic, faster",
            choices=("realesrgan", "bicubic"),
            cli=True,
            service=True,
        ),
    )
    identity: str | None = option(
        None,
        OptionSpec(
            "the person's trained identity module (ipfvr engine: the LoRA <weights>/loras/NAME, from ipfvr identities "
            "train)",
            cli=True,
            metavar="NAME",
        ),
    )
    # Identity embeddings (the slowest analysis step) on every k-th frame, plus the faces where tracks start
    # or could swap (faces.tracks.faces_to_embed); the report's before/after distances are measured on the
    # faces embedded (identity.frames_measured). 1 = every face of every frame. With the default backend, 4
    # restores the same frames with the same identity means as 1 (carphone: 120/120; pipeline_bench's 720p
    # clip: 200/200), at 0.100 instead of 0.056 x plain decode+encode; on dlib HOG's fragmented detections
    # of that clip, sampling restored fewer frames (122 instead of 156).
    embed_every: int = option(
        4,
        OptionSpec(
            "identity embeddings on every k-th frame, plus where tracks start or could swap", minimum=1, maximum=1000
        ),
    )

    def validate(self) -> None:
        """Raise InputError(code="invalid_option") naming the first option whose value is refused."""
        for opt in job_options():
            opt.check(getattr(self, opt.name))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the report's ``options``): every field, paths as text."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestoreOptions:
        return cls(**{**data, "limits": VideoLimits(**data["limits"])})


@functools.cache
def job_options() -> tuple[JobOption, ...]:
    """The options of :class:`RestoreOptions` that carry a spec, in field order."""
    hints = typing.get_type_hints(RestoreOptions)
    found = []
    for f in dataclasses.fields(RestoreOptions):
        if "option" not in f.metadata:
            continue
        kind, optional = _scalar(hints[f.name])
        found.append(JobOption(name=f.name, kind=kind, optional=optional, default=f.default, spec=f.metadata["option"]))
    return tuple(found)


def job_option(name: str) -> JobOption:
    """The option called ``name``."""
    (found,) = [o for o in job_options() if o.name == name]
    return found


def _scalar(hint: Any) -> tuple[type, bool]:
    """(int | float | str, whether None is accepted) of a field's type hint."""
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is Literal:
        hint = type(typing.get_args(hint)[0])
    if hint not in (int, float, str):
        raise TypeError(f"an option is an int, a float or a str, not {hint!r}")
    return hint, optional
