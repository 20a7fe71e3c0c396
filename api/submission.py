"""Job creation: options, inputs (streamed or presigned), one atomic create, then the queue message.

Both forms of ``POST /v1/jobs`` end in :meth:`Submission._create`.

An ``Idempotency-Key`` is bound to the request that first used it, by a fingerprint of its content:
the options as validated (so spacing, key order and defaults do not matter) and, for multipart,
each file's SHA-256 and name in order; for JSON, the upload ids. A retry with the same fingerprint
returns the earlier job (``Idempotent-Replayed: true``); the same key with another fingerprint is
refused with 422 ``idempotency_key_reused``. The body is read either way: a multipart retry streams
its files again (to hash them) and its copies are removed. Two concurrent first requests with the
same key both upload; the create script lets one win, and the loser removes its objects and
returns the winner's job, or refuses if its content differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request

from api.multipart import JobForm, receive_job_form
from api.schemas import JobCreate
from api.services import Services
from jobs.errors import Conflict, InvalidRequest, PayloadTooLarge, TooManyJobs, Unavailable, UnsupportedMedia
from jobs.ids import UPLOAD_ID, new_job_id
from jobs.media.checks import check_upload
from jobs.media.header import HEAD_BYTES, TAIL_BYTES
from jobs.media.sniff import SNIFF_BYTES, Kind, sniff
from jobs.model import ErrorInfo, JobInputs, JobRecord, Status
from jobs.options import JobOptions
from jobs.storage import upload_key
from jobs.store.identities import IdentityStatus
from jobs.store.jobs import NewJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    job: JobRecord
    replayed: bool  # an earlier request with the same Idempotency-Key created it


def fingerprint(content: dict[str, Any]) -> str:
    """SHA-256 of a request's content in canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def multipart_fingerprint(options: JobOptions, form: JobForm) -> str:
    files = [form.video, *form.references] if form.video else form.references
    return fingerprint(
        {
            "form": "multipart",
            "options": options.model_dump(mode="json"),
            "files": [[f.field, f.sha256, f.filename] for f in files],
        }
    )


def invalid(exc: ValidationError, prefix: str) -> InvalidRequest:
    """The first pydantic error as an InvalidRequest naming the field."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    field = ".".join(p for p in (prefix, loc) if p) or None
    return InvalidRequest(str(first.get("msg", "invalid value")), field=field, code="invalid_option")


class Submission:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings

    # ------------------------------------------------------------------ shared steps
    async def replay(self, tenant: str, idempotency_key: str | None, request_fingerprint: str) -> Submitted | None:
        """The job an earlier identical request made; IdempotencyKeyReused if that request differed."""
        if not idempotency_key:
            return None
        job_id = await to_thread.run_sync(
            self.services.store.find_idempotent, tenant, idempotency_key, request_fingerprint
        )
        if job_id is None:
            return None
        record = await to_thread.run_sync(self.services.store.get, job_id)
        return Submitted(record, replayed=True) if record is not None else None

    async def check_capacity(self, tenant: str) -> None:
        """Refuse before reading uploads when the tenant's queue is full (the create script checks again)."""
        queued = await to_thread.run_sync(self.services.store.queued_count, tenant)
        if queued >= self.settings.max_queued_per_tenant:
            raise TooManyJobs(f"the tenant already has {queued} queued jobs; wait for some to start")

    def check_options(self, options: JobOptions, tenant: str) -> str:
        """Validate what pydantic cannot (engine, webhook target, identity); returns the engine.

        The webhook's host is resolved and every address checked now (blocking DNS: call it in a
        thread); the worker checks again at each delivery, so a name that later resolves elsewhere
        gains nothing.
        """
        engine = options.engine or self.settings.default_engine
        if engine not in self.settings.engines:
            raise InvalidRequest(
                f"unknown engine {engine!r}; choose one of {', '.join(self.settings.engines)}",
                field="options.engine",
                code="invalid_option",
            )
        if options.webhook is not None:
            self.services.webhook_policy.resolve(str(options.webhook), field="options.webhook")
        if options.identity is not None:
            identity = self.services.identities.get(options.identity)
            if identity is None or identity.tenant != tenant:
                raise InvalidRequest(
                    f"no identity {options.identity!r}", field="options.identity", code="identity_not_found"
                )
            if identity.status is not IdentityStatus.READY:
                raise Conflict(
                    f"identity {options.identity} is {identity.status}, not ready",
                    field="options.identity",
                    code="identity_not_ready",
                )
        return engine

    def _create(
        self,
        tenant: str,
        job_id: str,
        options: JobOptions,
        engine: str,
        inputs: JobInputs,
        idempotency_key: str | None,
        request_fingerprint: str,
        upload_ids: list[str],
    ) -> Submitted:
        now = time.time()
        created = self.services.store.create(
            NewJob(
                id=job_id,
                tenant=tenant,
                engine=engine,
                options=options.model_copy(update={"engine": engine}),
                inputs=inputs,
                webhook_url=str(options.webhook) if options.webhook else None,
                webhook_events=frozenset(options.webhook_events_filter) if options.webhook else frozenset(),
                created_at=now,
                expires_at=now + self.settings.queue_ttl_s,
            ),
            idempotency_key=idempotency_key,
            idempotency_ttl_s=self.settings.idempotency_ttl_s,
            max_queued=self.settings.max_queued_per_tenant,
            upload_ids=upload_ids,
            fingerprint=request_fingerprint,
        )
        if created.created:
            self._enqueue(job_id, engine)
            log.info(
                "job %s created",
                job_id,
                extra={
                    "event": "job_created",
                    "job_id": job_id,
                    "tenant": tenant,
                    "engine": engine,
                    "webhook": str(options.webhook) if options.webhook else None,
                },
            )
        record = self.services.store.get(created.job_id)
        if record is None:
            raise InvalidRequest(f"job {created.job_id} vanished while being created", code="conflict")
        return Submitted(record, replayed=not created.created)

    def _enqueue(self, job_id: str, engine: str) -> None:
        try:
            self.services.dispatcher.restore(job_id, engine)
        except (OperationalError, RedisError) as exc:
            # The message never reached the broker: end the job rather than leave it queued forever.
            failed = ErrorInfo(code="enqueue_failed", message="the job could not be queued; submit it again")
            transition = self.services.store.force(job_id, expected="queued", status=Status.FAILED, error=failed)
            self.services.dispatcher.webhook(transition.delivery)
            raise Unavailable(f"the broker refused the job: {exc}") from exc

    # ------------------------------------------------------------------ multipart
    async def from_multipart(self, request: Request, tenant: str, idempotency_key: str | None) -> Submitted:
        store = self.services.store
        known = idempotency_key and await to_thread.run_sync(store.find_idempotent, tenant, idempotency_key)
        if not known:  # a retry of a created job must not be refused because the queue has filled since
            await self.check_capacity(tenant)
        job_id = new_job_id()
        storage = self.services.storage
        form = await receive_job_form(request, storage=storage, settings=self.settings, tenant=tenant, job_id=job_id)
        try:
            try:
                options = JobOptions.model_validate_json(form.options or "{}")
            except ValidationError as exc:
                raise invalid(exc, "options") from exc
            request_fingerprint = multipart_fingerprint(options, form)
            replayed = await self.replay(tenant, idempotency_key, request_fingerprint)
            if replayed is not None:
                submitted = replayed
            else:
                submitted = await self._create_from_form(
                    tenant, job_id, options, form, idempotency_key, request_fingerprint
                )
        except BaseException:
            await to_thread.run_sync(storage.delete, form.object_keys())
            raise
        if submitted.replayed:  # an earlier or concurrent request with the same key made the job: drop our copy
            await to_thread.run_sync(storage.delete, form.object_keys())
        return submitted

    async def _create_from_form(
        self,
        tenant: str,
        job_id: str,
        options: JobOptions,
        form: JobForm,
        idempotency_key: str | None,
        request_fingerprint: str,
    ) -> Submitted:
        engine = await to_thread.run_sync(self.check_options, options, tenant)
        if form.video is None:
            raise InvalidRequest("a video file is required", field="video", code="missing_field")
        if not form.references and options.identity is None:
            raise InvalidRequest("at least one reference image is required", field="reference", code="missing_field")
        inputs = JobInputs(
            video=form.video.key,
            references=[r.key for r in form.references],
            names=[form.video.filename, *(r.filename for r in form.references)],
        )
        return await to_thread.run_sync(
            self._create, tenant, job_id, options, engine, inputs, idempotency_key, request_fingerprint, []
        )

    # ------------------------------------------------------------------ JSON (presigned uploads)
    async def from_json(self, body: bytes, tenant: str, idempotency_key: str | None) -> Submitted:
        try:
            request = JobCreate.model_validate_json(body)
        except ValidationError as exc:
            raise invalid(exc, "") from exc
        request_fingerprint = fingerprint({"form": "json", "request": request.model_dump(mode="json")})
        # before the upload checks: a replay's uploads belong to its job, and may be gone with its files
        if (replayed := await self.replay(tenant, idempotency_key, request_fingerprint)) is not None:
            return replayed
        engine = await to_thread.run_sync(self.check_options, request, tenant)
        if not request.inputs.references and request.identity is None:
            raise InvalidRequest(
                "at least one reference upload is required (or an identity)",
                field="inputs.references",
                code="missing_field",
            )
        uploads = [request.inputs.video, *request.inputs.references]
        if len(request.inputs.references) > self.settings.max_references:
            raise InvalidRequest(
                f"send at most {self.settings.max_references} references",
                field="inputs.references",
                code="too_many_references",
            )
        fields = ["inputs.video", *(f"inputs.references[{i}]" for i in range(len(request.inputs.references)))]
        kinds = [Kind.VIDEO, *([Kind.IMAGE] * len(request.inputs.references))]
        for upload_id, field, kind in zip(uploads, fields, kinds, strict=True):
            await to_thread.run_sync(self._check_upload, tenant, upload_id, field, kind)
        keys = [upload_key(tenant, u) for u in uploads]
        inputs = JobInputs(video=keys[0], references=keys[1:])
        options = JobOptions.model_validate(request.model_dump(exclude={"inputs"}))
        return await to_thread.run_sync(
            self._create,
            tenant,
            new_job_id(),
            options,
            engine,
            inputs,
            idempotency_key,
            request_fingerprint,
            uploads,
        )

    def _check_upload(self, tenant: str, upload_id: str, field: str, kind: Kind) -> None:
        """The uploaded object exists, fits the limit, has the right content (sniffed) and headers within limits."""
        if not UPLOAD_ID.match(upload_id):
            raise InvalidRequest("not an upload id from POST /v1/uploads", field=field, code="upload_not_found")
        key = upload_key(tenant, upload_id)
        size = self.services.storage.size(key)
        if size is None:
            raise InvalidRequest(f"nothing was uploaded for {upload_id}", field=field, code="upload_not_found")
        limit = self.settings.max_video_bytes if kind is Kind.VIDEO else self.settings.max_reference_bytes
        if size > limit:
            raise PayloadTooLarge(
                f"{field} is {size} bytes, above the limit of {limit}",
                field=field,
                code="video_too_large" if kind is Kind.VIDEO else "reference_too_large",
            )
        head = self.services.storage.read_head(key, HEAD_BYTES)
        found = sniff(head[:SNIFF_BYTES])
        if found is None or found[0] is not kind:
            accepted = "an MP4, MOV, MKV or WebM video" if kind is Kind.VIDEO else "a PNG, JPEG or WebP image"
            raise UnsupportedMedia(f"{field} is not {accepted} (checked from its content)", field=field)
        tail_length = TAIL_BYTES if kind is Kind.VIDEO else 64
        tail = head[-tail_length:] if size <= len(head) else self.services.storage.read_tail(key, tail_length)
        check_upload(kind, found[1], head, tail, self.services.media_limits, field)
