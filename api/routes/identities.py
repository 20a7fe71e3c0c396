"""``/v1/identities``: register a person from photos, read, list and delete identities.

Creating one stores the photos and queues its training on the engine's ``train.<engine>`` queue;
a job then names it with the option ``identity`` (see ``jobs/store/identities.py``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import RedisError

from api.deps import ServicesDep, TenantDep
from api.error_codes import UPLOAD_CODES, declare
from api.multipart import receive_job_form
from api.openapi import CREATE_IDENTITY_BODY
from api.present import base_url
from api.schemas import IdentitiesPublic, IdentityCreate, IdentityPublic, IdentityUrls
from api.services import Services
from api.submission import invalid
from jobs.errors import InvalidRequest, TooManyIdentities, Unavailable, UnsupportedMedia
from jobs.model import ErrorInfo
from jobs.schemas import ErrorPublic
from jobs.storage import identity_module_key, identity_photo_key
from jobs.store.identities import IdentityRecord, IdentityStatus, new_identity_id

router = APIRouter(prefix="/v1/identities", tags=["identities"])
_CREATE_ERRORS = declare(*UPLOAD_CODES, "too_many_identities")


def present_identity(record: IdentityRecord, base: str) -> IdentityPublic:
    error = record.error
    return IdentityPublic(
        id=record.id,
        name=record.name,
        engine=record.engine,
        status=record.status.value,
        photos=len(record.photos),
        photo_names=record.photo_names,
        module=record.module_key is not None,
        summary=record.summary,
        created_at=datetime.fromtimestamp(record.created_at, UTC),
        completed_at=datetime.fromtimestamp(record.completed_at, UTC) if record.completed_at else None,
        error=ErrorPublic(code=error.code, message=error.message, field=error.field) if error else None,
        urls=IdentityUrls(get=f"{base.rstrip('/')}/v1/identities/{record.id}"),
    )


@router.post("", status_code=202, openapi_extra=CREATE_IDENTITY_BODY | _CREATE_ERRORS)
async def create_identity(request: Request, services: ServicesDep, tenant: TenantDep) -> IdentityPublic:
    """Register a person: `reference` photos (one person) and `options` JSON (`IdentityCreate`). The identity
    is `queued`, then `training`, then `ready` (or `failed`, with the reason); poll `urls.get`."""
    settings = services.settings
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMedia("send multipart/form-data", field="content-type", code="unsupported_content_type")
    if await to_thread.run_sync(services.identities.count, tenant) >= settings.max_identities_per_tenant:
        raise TooManyIdentities(f"the API key keeps {settings.max_identities_per_tenant} identities; delete one")
    identity_id = new_identity_id()

    def key_of(name: str) -> str:
        if not name.startswith("reference-"):
            raise InvalidRequest(
                f"an identity takes photos as reference files, not a {name}", field=name, code="unknown_field"
            )
        return identity_photo_key(tenant, identity_id, int(name.removeprefix("reference-")))

    form = await receive_job_form(
        request,
        storage=services.storage,
        settings=settings,
        tenant=tenant,
        job_id=identity_id,
        key_of=key_of,
        max_references=settings.max_identity_photos,
    )
    keys = form.object_keys()
    try:
        try:
            options = IdentityCreate.model_validate_json(form.options or "")
        except ValidationError as exc:
            raise invalid(exc, "options") from exc
        engine = options.engine or settings.default_engine
        if engine not in settings.engines:
            raise InvalidRequest(
                f"unknown engine {engine!r}; choose one of {', '.join(settings.engines)}",
                field="options.engine",
                code="invalid_option",
            )
        if not form.references:
            raise InvalidRequest(
                "at least one photo (reference file) is required", field="reference", code="missing_field"
            )
        record = IdentityRecord(
            id=identity_id,
            tenant=tenant,
            name=options.name,
            engine=engine,
            status=IdentityStatus.QUEUED,
            photos=keys,
            photo_names=[r.filename for r in form.references],
            created_at=time.time(),
        )
        await to_thread.run_sync(_create, services, record)
    except BaseException:
        await to_thread.run_sync(services.storage.delete, keys)
        raise
    return present_identity(record, base_url(services, request))


def _create(services: Services, record: IdentityRecord) -> None:
    services.identities.create(record)
    try:
        services.dispatcher.train_identity(record.id, record.engine)
    except (OperationalError, RedisError) as exc:
        services.identities.finish(
            record.id,
            status=IdentityStatus.FAILED,
            expected=IdentityStatus.QUEUED,
            error=ErrorInfo(code="enqueue_failed", message="the identity could not be queued; create it again"),
        )
        raise Unavailable(f"the broker refused the identity: {exc}") from exc


@router.get("")
def list_identities(request: Request, services: ServicesDep, tenant: TenantDep) -> IdentitiesPublic:
    """The caller's identities, newest first."""
    base = base_url(services, request)
    records = services.identities.list(tenant, limit=services.settings.max_identities_per_tenant)
    return IdentitiesPublic(data=[present_identity(r, base) for r in records])


@router.get("/{identity_id}", openapi_extra=declare("identity_not_found"))
def get_identity(identity_id: str, request: Request, services: ServicesDep, tenant: TenantDep) -> IdentityPublic:
    return present_identity(services.identities.get_for(tenant, identity_id), base_url(services, request))


@router.delete("/{identity_id}", status_code=204, openapi_extra=declare("identity_not_found", "storage_unavailable"))
def delete_identity(identity_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Forget the identity: its record at once (jobs can no longer name it), then its photos and module.
    A training still running notices at its end and removes what it wrote."""
    record = services.identities.get_for(tenant, identity_id)
    services.identities.delete(record)
    services.storage.delete([*record.photos, identity_module_key(tenant, identity_id)])
    return Response(status_code=204)
