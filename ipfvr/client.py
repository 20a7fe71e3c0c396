"""A small Python client of the IP-FVR job service, on httpx.

>>> from ipfvr.client import Client
>>> with Client("http://127.0.0.1:8000", api_key) as client:
...     job = client.submit("clip.mp4", ["face.jpg"], faces="target")
...     job = client.wait(job["id"])
...     client.download(job, "restored.mp4")

Jobs are returned as the JSON objects the API documents (dicts). Errors raise :class:`ApiError`
with the API's stable ``code``. Uploads stream from disk; results are downloaded from their
presigned URL without sending the API key to the storage host.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
DEFAULT_URL = "http://127.0.0.1:8000"

Job = dict[str, Any]


class ApiError(Exception):
    """An error answer of the API: ``{"error": {"code", "message", "field"?}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" ({field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            error = response.json()["error"]
            return cls(response.status_code, error["code"], error["message"], error.get("field"))
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, "http_error", response.text[:200] or response.reason_phrase)


class Client:
    """One API key against one service. ``transport`` is injectable (tests, proxies)."""

    def __init__(
        self, base_url: str, api_key: str, *, timeout_s: float = 60.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )
        self._downloads = httpx.Client(timeout=httpx.Timeout(timeout_s), transport=transport)

    @classmethod
    def from_env(cls) -> Client:
        """``IPFVR_URL`` (default http://127.0.0.1:8000) and ``IPFVR_API_KEY``."""
        key = os.environ.get("IPFVR_API_KEY")
        if not key:
            raise ApiError(0, "missing_api_key", "set IPFVR_API_KEY (ipfvr keys create --tenant NAME prints one)")
        return cls(os.environ.get("IPFVR_URL", DEFAULT_URL), key)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._downloads.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise ApiError.from_response(response)
        return response.json() if response.content else None

    # ------------------------------------------------------------------ jobs
    def submit(
        self, video: str | Path, references: Sequence[str | Path], *, idempotency_key: str | None = None, **options: Any
    ) -> Job:
        """Upload ``video`` and ``references`` (streamed from disk) and create a job.

        ``options`` are the API's job options: engine, faces, prompt, negative_prompt, guidance,
        seed, upscale, background, webhook, webhook_events_filter, identity.
        """
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        with ExitStack() as files:
            parts: list[tuple[str, Any]] = [
                (
                    "options",
                    (None, json.dumps({k: v for k, v in options.items() if v is not None}), "application/json"),
                ),
                ("video", (Path(video).name, files.enter_context(Path(video).open("rb")))),
            ]
            for ref in references:
                parts.append(("reference", (Path(ref).name, files.enter_context(Path(ref).open("rb")))))
            return self._json(self._http.post("/v1/jobs", files=parts, headers=headers))

    def create_identity(self, photos: Sequence[str | Path], *, name: str, engine: str | None = None) -> Job:
        """Register a person from ``photos`` (streamed from disk); poll :meth:`get_identity` until ``ready``."""
        options = {"name": name} | ({"engine": engine} if engine else {})
        with ExitStack() as files:
            parts: list[tuple[str, Any]] = [("options", (None, json.dumps(options), "application/json"))]
            for photo in photos:
                parts.append(("reference", (Path(photo).name, files.enter_context(Path(photo).open("rb")))))
            return self._json(self._http.post("/v1/identities", files=parts))

    def get_identity(self, identity_id: str) -> Job:
        return self._json(self._http.get(f"/v1/identities/{identity_id}"))

    def delete_identity(self, identity_id: str) -> None:
        self._json(self._http.delete(f"/v1/identities/{identity_id}"))

    def get(self, job_id: str) -> Job:
        return self._json(self._http.get(f"/v1/jobs/{job_id}"))

    def list(self, *, status: str | None = None, cursor: str | None = None, limit: int = 20) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._json(self._http.get("/v1/jobs", params=params))

    def iter_jobs(self, *, status: str | None = None) -> Iterator[Job]:
        """Every job of the tenant, newest first, page by page."""
        cursor = None
        while True:
            page = self.list(status=status, cursor=cursor, limit=100)
            yield from page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def cancel(self, job_id: str) -> Job:
        return self._json(self._http.post(f"/v1/jobs/{job_id}/cancel"))

    def delete(self, job_id: str) -> None:
        self._json(self._http.delete(f"/v1/jobs/{job_id}"))

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 2.0,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job is terminal; raises TimeoutError after ``timeout_s``.

        ``on_update`` sees the job whenever what a person watches changes (status, progress,
        queue position), not on every poll.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        shown: tuple[Any, ...] | None = None
        while True:
            job = self.get(job_id)
            state = (job["status"], job.get("progress"), job.get("queue_position"))
            if on_update is not None and state != shown:
                on_update(job)
                shown = state
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout_s} s")
            time.sleep(poll_s)

    def download(self, job: Job, path: str | Path) -> Path:
        """Stream a succeeded job's video to ``path`` (fetching a fresh presigned URL first)."""
        fresh = self.get(job["id"])
        output = fresh.get("output") or {}
        if fresh["status"] != "succeeded" or not output.get("video_url"):
            raise ApiError(409, "no_output", f"job {job['id']} is {fresh['status']} and has no video to download")
        target = Path(path)
        with self._downloads.stream("GET", output["video_url"]) as response:
            if response.is_error:
                raise ApiError(response.status_code, "download_failed", f"storage answered {response.status_code}")
            with target.open("wb") as f:
                for chunk in response.iter_bytes(1024 * 1024):
                    f.write(chunk)
        return target

    # ------------------------------------------------------------------ webhooks
    def webhook_secret(self) -> str:
        return self._json(self._http.get("/v1/webhooks/secret"))["secret"]

    def rotate_webhook_secret(self) -> str:
        return self._json(self._http.post("/v1/webhooks/secret/rotate"))["secret"]
