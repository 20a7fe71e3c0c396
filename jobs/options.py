"""The job options a client sends, and the one mapping from them to the library's ``RestoreOptions``.

:data:`JobOptions` holds the service's own options (engine, identity, webhook) and every option of
``ipfvr_core.options`` marked ``service=True``, generated from its spec: the same type, default,
range and help text as the library's, and the library's own check. The job store keeps the options
as :data:`JobOptions` JSON and reads them back into it (``JobRecord.options``); the worker turns
them into ``RestoreOptions`` with :func:`restore_options`, by name.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, StrictInt, create_model
from pydantic.fields import FieldInfo

from ipfvr_core.errors import InputError
from ipfvr_core.limits import VideoLimits
from ipfvr_core.options import JobOption, RestoreOptions, job_options


class WebhookEvent(StrEnum):
    """What a webhook subscriber can ask for."""

    START = "start"
    PROGRESS = "progress"
    COMPLETED = "completed"


ALL_EVENTS = [WebhookEvent.START, WebhookEvent.PROGRESS, WebhookEvent.COMPLETED]


class ServiceOptions(BaseModel):
    """The options only the service has: the engine, a stored identity, where job events go."""

    model_config = ConfigDict(extra="forbid")

    engine: str | None = Field(None, description="restoration engine; default: the service's default engine")
    identity: str | None = Field(
        None,
        pattern=r"^idt_[0-9a-hjkmnp-tv-z]{26}$",
        description="a ready identity (POST /v1/identities): its photos join the references, and its "
        "per-identity module (ipfvr: the LoRA) conditions the engine; references become optional",
    )
    webhook: AnyHttpUrl | None = Field(None, description="HTTPS endpoint that receives signed job events")
    webhook_events_filter: list[WebhookEvent] = Field(
        default_factory=lambda: list(ALL_EVENTS), min_length=1, description="events sent to `webhook`"
    )


def _library_check(option: JobOption) -> AfterValidator:
    """The library's check of ``option``, as a pydantic validator (its message becomes the 422's)."""

    def check(value: Any) -> Any:
        try:
            option.check(value)
        except InputError as exc:
            raise ValueError(exc.message) from exc
        return value

    return AfterValidator(check)


def _api_field(option: JobOption) -> tuple[Any, FieldInfo]:
    """(annotation, Field) of a library option: its type, default, range and help text in JSON Schema."""
    spec = option.spec
    extra: dict[str, Any] | None = None
    annotation: Any
    if spec.choices and option.kind is str:
        annotation = Literal[spec.choices]  # an enum of strings
    elif spec.choices:
        annotation, extra = StrictInt, {"enum": list(spec.choices)}  # true/1.0 are not 1
    else:
        annotation = option.kind
    bounds = Field(ge=spec.minimum, le=spec.maximum, max_length=spec.max_length)
    annotation = Annotated[annotation, bounds, _library_check(option)]
    if option.optional:
        annotation = annotation | None
    return annotation, Field(option.default, description=spec.help, json_schema_extra=extra)


if TYPE_CHECKING:
    # The library's options are fields made at run time, which no static type can list: the type
    # checker sees the service's own (what the code reads by attribute); the library's are read by
    # name (:func:`restore_options`).
    class JobOptions(ServiceOptions):
        """What to do with the inputs. Everything is optional."""

else:
    JobOptions = create_model(
        "JobOptions",
        __base__=ServiceOptions,
        __module__=__name__,
        __doc__="What to do with the inputs. Everything is optional.",
        **{o.name: _api_field(o) for o in job_options() if o.spec.service},
    )


def restore_options(
    options: JobOptions, *, limits: VideoLimits, reference_max_pixels: int, identity: str | None
) -> RestoreOptions:
    """The library's options for a job: its client's choices, the worker's limits and its identity module's name.

    ``identity`` is the module's name inside the loaded engine (None: the job names no identity, or
    the engine has no module for it; the identity's photos still join the references).
    """
    chosen = {o.name: getattr(options, o.name) for o in job_options() if o.spec.service}
    return RestoreOptions(**chosen, limits=limits, reference_max_pixels=reference_max_pixels, identity=identity)
