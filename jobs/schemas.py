"""The public job contract: the options a client sends (``jobs.options``) and the job object it gets back.

The same :class:`JobPublic` is what ``GET /v1/jobs/{id}`` returns and what a webhook delivers, so
it lives here, shared by the API and the workers. Request-only schemas are in ``api/schemas.py``.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from ipfvr_core.progress import LIBRARY_STAGES, ProgressEvent
from jobs.model import Status

SERVICE_STAGES = ("download", "upload")  # what a worker reports around the library's stages


class ProgressPublic(BaseModel):
    """A job's latest ``ipfvr_core.progress.ProgressEvent``, with its fraction as a percentage."""

    stage: str = Field(description=f"{' | '.join(LIBRARY_STAGES)} (library) or {' | '.join(SERVICE_STAGES)} (service)")
    current: int = Field(description="units done in this stage")
    total: int = Field(description="units in this stage")
    percent: float = Field(description="overall progress, 0-100")

    @classmethod
    def of(cls, event: ProgressEvent) -> ProgressPublic:
        return cls(stage=event.stage, current=event.current, total=event.total, percent=round(event.fraction * 100, 1))


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
    options: dict[str, builtins.object]  # ``object`` is the field above
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
