"""``/v1/uploads``: presigned PUT URLs for large inputs, named afterwards in a JSON job request."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from api.deps import ServicesDep, TenantDep
from api.error_codes import declare
from api.schemas import UploadCreate, UploadPublic
from jobs.errors import PayloadTooLarge
from jobs.ids import new_upload_id
from jobs.storage import upload_key

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post("", status_code=201, openapi_extra=declare("video_too_large", "reference_too_large"))
def create_upload(body: UploadCreate, services: ServicesDep, tenant: TenantDep) -> UploadPublic:
    """Reserve an upload: PUT exactly `size` bytes to `url` before `expires_at`, then name `id` in `POST /v1/jobs`.

    The length is part of the URL's signature: storage refuses a body of another length (or a
    chunked one, without Content-Length) with 403 `SignatureDoesNotMatch`.
    """
    settings = services.settings
    limit = settings.max_video_bytes if body.purpose == "video" else settings.max_reference_bytes
    if body.size > limit:
        raise PayloadTooLarge(
            f"a {body.purpose} may be at most {limit} bytes",
            field="size",
            code="video_too_large" if body.purpose == "video" else "reference_too_large",
        )
    upload_id = new_upload_id()
    url = services.storage.presign_put(upload_key(tenant, upload_id), settings.presign_expires_s, size=body.size)
    services.uploads.register(tenant, upload_id)
    return UploadPublic(
        id=upload_id, url=url.url, size=body.size, expires_at=datetime.fromtimestamp(url.expires_at, UTC)
    )
