"""The job object for a response: queue position and presigned URLs are computed per read."""

from __future__ import annotations

from starlette.requests import Request

from api.services import Services
from jobs.model import JobRecord
from jobs.render import render_job
from jobs.schemas import JobPublic


def base_url(services: Services, request: Request) -> str:
    """The public base URL: configured, or the one the client used."""
    return str(services.settings.public_url or request.base_url)


def present(services: Services, record: JobRecord, base: str) -> JobPublic:
    return render_job(
        record,
        queue_position=services.store.queue_position(record),
        storage=services.storage,
        presign_expires_s=services.settings.presign_expires_s,
        base_url=base,
    )
