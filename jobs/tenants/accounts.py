"""Tenants, their API keys (stored hashed) and their webhook signing secrets (``whsec_``, rotatable).

An API key is shown once, when it is created; Redis keeps only HMAC-SHA256(secret_key, key), so
a leaked database does not leak usable keys and a lookup is one ``HGETALL``. Each tenant has one
current webhook secret; rotating it keeps the previous one signing (alongside the new one) for a
grace period, so receivers can switch without dropping deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

import redis

from jobs.errors import InvalidRequest
from jobs.store.keys import Keys
from jobs.store.replies import hash_mapping, optional_text, text_hash

KEY_PREFIX = "ipfvr_"
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEY_BYTES = 32  # entropy of an API key
_SECRET_BYTES = 24  # entropy of a webhook secret (Standard Webhooks: 24-64 bytes)
_MAX_KEY_LENGTH = 128  # longer bearer tokens are not our keys (and are not hashed)
_KEY_ID_LENGTH = 24  # hex characters of the key's HMAC that name it in rate limits and logs


@dataclass(frozen=True)
class KeyIdentity:
    """Who a valid API key belongs to, and names for it that reveal nothing of the key."""

    tenant: str
    key_id: str  # prefix of the key's HMAC: stable, not reversible
    hint: str  # "ipfvr_" plus the key's first 4 characters, as shown when it was created


@dataclass(frozen=True)
class WebhookSecrets:
    """The secrets that sign a tenant's webhooks now."""

    current: str  # whsec_...
    previous: str | None  # still signing until previous_expires_at
    previous_expires_at: float | None

    def signing(self, now: float) -> list[str]:
        """Every secret that signs a delivery made at ``now``."""
        if self.previous and self.previous_expires_at is not None and now < self.previous_expires_at:
            return [self.current, self.previous]
        return [self.current]


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


class Tenants:
    """Tenant records and API keys in Redis (``decode_responses=True`` client)."""

    def __init__(self, client: redis.Redis, prefix: str, secret_key: bytes) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self._secret_key = secret_key

    def _digest(self, api_key: str) -> str:
        return hmac.new(self._secret_key, api_key.encode(), hashlib.sha256).hexdigest()

    def ensure(self, tenant: str, *, now: float | None = None) -> None:
        """Create the tenant (with its first webhook secret) if it does not exist."""
        if not TENANT_NAME.match(tenant):
            raise InvalidRequest(
                "a tenant name is 1-63 characters: lower-case letters, digits, '-' and '_'",
                field="tenant",
                code="invalid_tenant",
            )
        created = self.redis.hsetnx(self.keys.tenant(tenant), "webhook_secret", new_webhook_secret())
        if created:
            self.redis.hset(self.keys.tenant(tenant), "created_at", repr(time.time() if now is None else now))
            self.redis.sadd(self.keys.tenants(), tenant)

    def create_key(self, tenant: str, *, now: float | None = None) -> str:
        """Create an API key for ``tenant`` (creating the tenant if needed); returns it in clear, once."""
        self.ensure(tenant, now=now)
        api_key = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
        self.redis.hset(
            self.keys.api_key(self._digest(api_key)),
            mapping={
                "tenant": tenant,
                "created_at": repr(time.time() if now is None else now),
                "hint": api_key[: len(KEY_PREFIX) + 4],
            },
        )
        return api_key

    def authenticate(self, api_key: str) -> str | None:
        """The tenant owning ``api_key``, or None."""
        identity = self.identify(api_key)
        return identity.tenant if identity is not None else None

    def identify(self, api_key: str) -> KeyIdentity | None:
        """The tenant and the stable, non-secret id of ``api_key``, or None for an unknown key."""
        if not api_key.startswith(KEY_PREFIX) or len(api_key) > _MAX_KEY_LENGTH:
            return None
        digest = self._digest(api_key)
        tenant = optional_text(self.redis.hget(self.keys.api_key(digest), "tenant"))
        if tenant is None:
            return None
        return KeyIdentity(tenant=tenant, key_id=digest[:_KEY_ID_LENGTH], hint=api_key[: len(KEY_PREFIX) + 4])

    def webhook_secrets(self, tenant: str) -> WebhookSecrets:
        raw = text_hash(self.redis.hgetall(self.keys.tenant(tenant)))
        if "webhook_secret" not in raw:
            self.ensure(tenant)
            raw = text_hash(self.redis.hgetall(self.keys.tenant(tenant)))
        expires = raw.get("previous_expires_at")
        return WebhookSecrets(
            current=raw["webhook_secret"],
            previous=raw.get("previous_secret") or None,
            previous_expires_at=float(expires) if expires else None,
        )

    def rotate_webhook_secret(self, tenant: str, *, grace_s: int, now: float | None = None) -> WebhookSecrets:
        """Make a new current secret; the old one keeps signing for ``grace_s`` seconds."""
        self.ensure(tenant)
        moment = time.time() if now is None else now
        key = self.keys.tenant(tenant)

        def rotate(pipe: redis.client.Pipeline) -> None:
            current = optional_text(pipe.hget(key, "webhook_secret"))  # WATCHed: a concurrent rotation retries
            pipe.multi()
            pipe.hset(
                key,
                mapping=hash_mapping(
                    {
                        "webhook_secret": new_webhook_secret(),
                        "previous_secret": current or "",  # "": none (the record vanished since ensure)
                        "previous_expires_at": repr(moment + grace_s),
                        "rotated_at": repr(moment),
                    }
                ),
            )

        self.redis.transaction(rotate, key)
        return self.webhook_secrets(tenant)
