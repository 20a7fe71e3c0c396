"""``/v1/webhooks/secret``: the tenant's signing secret, and its rotation."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from api.deps import ServicesDep, TenantDep
from api.schemas import WebhookSecretPublic
from jobs.tenants.accounts import WebhookSecrets

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _public(secrets: WebhookSecrets) -> WebhookSecretPublic:
    expires = secrets.previous_expires_at
    return WebhookSecretPublic(
        secret=secrets.current,
        previous_expires_at=datetime.fromtimestamp(expires, UTC) if expires is not None else None,
    )


@router.get("/secret")
def get_secret(services: ServicesDep, tenant: TenantDep) -> WebhookSecretPublic:
    """The `whsec_` secret that signs this tenant's webhooks (verify with the standardwebhooks package)."""
    return _public(services.tenants.webhook_secrets(tenant))


@router.post("/secret/rotate")
def rotate_secret(services: ServicesDep, tenant: TenantDep) -> WebhookSecretPublic:
    """Make a new secret; deliveries carry signatures from both until `previous_expires_at`."""
    grace = services.settings.webhook_secret_grace_s
    return _public(services.tenants.rotate_webhook_secret(tenant, grace_s=grace))
