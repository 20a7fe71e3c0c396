"""One webhook attempt: resolve and check the target, sign the body, POST it, classify the answer."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from jobs.webhooks.signing import signed_headers
from jobs.webhooks.ssrf import ForbiddenTarget, TargetPolicy
from jobs.webhooks.transport import GuardedTransport

USER_AGENT = "ipfvr-webhooks/1"


@dataclass(frozen=True)
class AttemptResult:
    delivered: bool
    permanent: bool  # retrying cannot help (forbidden target, 410 Gone)
    detail: str  # status code or error, for the delivery record


class WebhookSender:
    """Sends signed deliveries. ``transport`` is injectable (tests, proxies)."""

    def __init__(self, policy: TargetPolicy, *, timeout_s: float, transport: httpx.BaseTransport | None = None) -> None:
        self._policy = policy
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            transport=transport if transport is not None else GuardedTransport(policy, timeout_s=timeout_s),
            headers={"user-agent": USER_AGENT},
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def send(
        self, url: str, msg_id: str, body: bytes, secrets: list[str], *, now: float | None = None
    ) -> AttemptResult:
        try:
            target = self._policy.resolve(url)
        except ForbiddenTarget as exc:
            return AttemptResult(delivered=False, permanent=True, detail=f"forbidden: {exc.message}")
        timestamp = int(time.time() if now is None else now)
        headers = signed_headers(secrets, msg_id, timestamp, body) | {"host": target.host_header}
        try:
            response = self._client.post(
                target.url, content=body, headers=headers, extensions={"sni_hostname": target.server_name}
            )
        except httpx.HTTPError as exc:
            return AttemptResult(delivered=False, permanent=False, detail=f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            return AttemptResult(delivered=True, permanent=False, detail=str(response.status_code))
        return AttemptResult(
            delivered=False, permanent=response.status_code == 410, detail=f"HTTP {response.status_code}"
        )
