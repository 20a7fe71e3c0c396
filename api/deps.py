"""Dependencies as ``Annotated`` aliases: settings, services, the store, storage and the calling tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services
from jobs.errors import Unauthorized
from jobs.settings import Settings
from jobs.storage import Storage
from jobs.store.jobs import JobStore


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_store(services: ServicesDep) -> JobStore:
    return services.store


def get_storage(services: ServicesDep) -> Storage:
    return services.storage


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer ipfvr_...`")


def current_tenant(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The tenant owning the request's API key (401 without a valid key), after the key's rate limit (429).

    The tenant and the key's hint go to ``request.state`` for the access log.
    """
    if credentials is None:
        raise Unauthorized("send an API key: Authorization: Bearer <key>")
    identity = services.tenants.identify(credentials.credentials)
    if identity is None:
        raise Unauthorized("unknown API key")
    request.state.tenant = identity.tenant
    request.state.key_hint = identity.hint
    services.rate_limiter.enforce(identity.key_id)
    return identity.tenant


TenantDep = Annotated[str, Depends(current_tenant)]
