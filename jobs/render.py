"""Turn a stored job into the public job object, making presigned output URLs at read time."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from jobs.model import JobRecord, Status
from jobs.schemas import ErrorPublic, JobPublic, JobUrls, MetricsPublic, OutputPublic, ProgressPublic, WebhookPublic
from jobs.storage import Storage


def _when(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _span(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None


def job_urls(base_url: str, job_id: str) -> JobUrls:
    base = base_url.rstrip("/")
    return JobUrls(get=f"{base}/v1/jobs/{job_id}", cancel=f"{base}/v1/jobs/{job_id}/cancel")


def render_job(
    record: JobRecord,
    *,
    queue_position: int | None,
    storage: Storage,
    presign_expires_s: int,
    base_url: str,
    now: float | None = None,
) -> JobPublic:
    """The job object of ``record``. ``base_url`` is "" for relative URLs."""
    moment = time.time() if now is None else now
    output = None
    if record.status is Status.SUCCEEDED:
        output = OutputPublic(report=record.report)
        if record.output_key and not record.data_removed:
            video = storage.presign_get(record.output_key, presign_expires_s, now=moment)
            report = None
            if record.report_key:
                report = storage.presign_get(record.report_key, presign_expires_s, now=moment)
            output = OutputPublic(
                video_url=video.url,
                report_url=report.url if report else None,
                expires_at=_when(video.expires_at),
                report=record.report,
            )
    progress = ProgressPublic.of(record.progress) if record.progress is not None else None
    error = None
    if record.error is not None:
        error = ErrorPublic(code=record.error.code, message=record.error.message, field=record.error.field)
    webhook = None
    if record.webhook is not None:
        w = record.webhook
        webhook = WebhookPublic(
            event=w.event,
            state=w.state,
            attempts=w.attempts,
            last_error=w.last_error,
            last_attempt_at=datetime.fromtimestamp(w.last_attempt_at, UTC),
            next_attempt_at=_when(w.next_attempt_at),
        )
    return JobPublic(
        id=record.id,
        status=record.status,
        engine=record.engine,
        options=record.options.model_dump(mode="json", exclude={"webhook_events_filter"}),
        created_at=_when(record.created_at) or datetime.fromtimestamp(0, UTC),
        started_at=_when(record.started_at),
        completed_at=_when(record.completed_at),
        queue_position=queue_position,
        progress=progress,
        metrics=MetricsPublic(
            queue_time=_span(record.created_at, record.started_at),
            predict_time=_span(record.started_at, record.completed_at),
            total_time=_span(record.created_at, record.completed_at),
        ),
        error=error,
        output=output,
        webhook=webhook,
        cancel_requested=record.cancel_requested,
        data_removed=record.data_removed,
        attempts=record.deliveries,
        urls=job_urls(base_url, record.id),
    )
