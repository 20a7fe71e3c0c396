"""The public job contract: the options a client sends and the job object it gets back.

The same :class:`JobPublic` is what ``GET /v1/jobs/{id}`` returns and what a webhook delivers, so
it lives here, shared by the API and the workers. Request-only schemas are in ``api/schemas.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StrictInt, field_validator

from jobs.model import Status, WebhookEvent

ALL_EVENTS = [WebhookEvent.START, WebhookEvent.PROGRESS, WebhookEvent.COMPLETED]


class JobOptions(BaseModel):
    """What to do with the inputs. Everything is optional."""

    model_config = ConfigDict(extra="forbid")

    engine: str | None = Field(None, description="restoration engine; default: the service's default engine")
    faces: Literal["target", "all"] = Field("target", description="restore the reference's person only, or every face")
    prompt: str | None = Field(None, max_length=1000, description="text describing the face (ipfvr engine)")
    negative_prompt: str | None = Field(None, max_length=1000, description="extra negative text (ipfvr engine)")
    guidance: float | None = Field(
        None, ge=0, le=30, description="total weight of the negative guidance streams, their ratios kept (ipfvr engine)"
    )
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="makes stochastic engines reproducible")
    identity: str | None = Field(
        None, pattern=r"^idt_[0-9a-hjkmnp-tv-z]{26}$",
        description="a ready identity (POST /v1/identities): its photos join the references, and its "
                    "per-identity module (ipfvr: the LoRA) conditions the engine; references become optional",
    )
    upscale: StrictInt = Field(
        1, description="output size factor for the whole frame, 1, 2 or 4; faces are pasted at that scale",
        json_schema_extra={"enum": [1, 2, 4]},
    )
    background: Literal["realesrgan", "bicubic"] = Field(
        "realesrgan", description="how `upscale` enlarges the frame around the faces: Real-ESRGAN x4plus or bicubic"
    )
    webhook: AnyHttpUrl | None = Field(None, description="HTTPS endpoint that receives signed job events")
    webhook_events_filter: list[WebhookEvent] = Field(
        default_factory=lambda: list(ALL_EVENTS), min_length=1, description="events sent to `webhook`"
    )

    @field_validator("upscale")
    @classmethod
    def _upscale_factor(cls, value: int) -> int:
        if value not in (1, 2, 4):
            raise ValueError(f"must be 1, 2 or 4, got {value}")
        return value


class ProgressPublic(BaseModel):
    stage: str = Field(description="references | analyze | restore (library) or download | upload (service)")
    current: int = Field(description="units done in this stage")
    total: int = Field(description="units in this stage")
    percent: float = Field(description="overall progress, 0-100")


class MetricsPublic(BaseModel):
    queue_time: float | None = Field(None, description="seconds from creation to the first start")
    predict_time: float | None = Field(None, description="seconds from the first start to the end")
    total_time: float | None = Field(None, description="seconds from creation to the end")


class ErrorPublic(BaseModel):
    code: str = Field(description="stable machine-readable code")
    message: str
    field: str | None = None


class OutputPublic(BaseModel):
    video_url: str | None = Field(None, description="presigned GET of the restored video, made at read time")
    report_url: str | None = Field(None, description="presigned GET of the full JSON report")
    expires_at: datetime | None = Field(None, description="when the presigned URLs stop working")
    report: dict[str, object] | None = Field(None, description="report summary: identity distances, timings")


class WebhookPublic(BaseModel):
    event: Literal["start", "completed"] = Field(description="the event this delivery carries")
    state: Literal["retrying", "delivered", "failed"] = Field(description="failed: retries were given up")
    attempts: int = Field(description="attempts made so far, with the same webhook-id")
    last_error: str | None = Field(None, description="why the latest failed attempt failed")
    last_attempt_at: datetime
    next_attempt_at: datetime | None = Field(None, description="when it is tried again (retrying only)")


class JobUrls(BaseModel):
    get: str
    cancel: str


class JobPublic(BaseModel):
    """A job as clients see it."""

    id: str
    object: Literal["job"] = "job"
    status: Status
    engine: str
    options: dict[str, object]
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    queue_position: int | None = Field(None, description="queued jobs of the same engine ahead of this one")
    progress: ProgressPublic | None = None
    metrics: MetricsPublic
    error: ErrorPublic | None = None
    output: OutputPublic | None = None
    webhook: WebhookPublic | None = Field(None, description="delivery of the latest start/completed webhook")
    cancel_requested: bool = False
    data_removed: bool = Field(False, description="inputs and outputs were removed (retention or delete)")
    attempts: int = Field(0, description="runs started, redeliveries after a lost worker included")
    urls: JobUrls


class JobsPublic(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last")
    has_more: bool
