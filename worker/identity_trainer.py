"""One training of one identity, as plain steps: start → download photos → train → upload → finish.

Idempotent: ``start`` refuses identities that are gone or ended, and ``finish`` moves only a
``training`` identity, so a redelivered message or a delete during training never leaves a
ready identity without its module, nor a module without its identity. The module goes to a
deterministic key, so a second run overwrites the first.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from billiard.exceptions import SoftTimeLimitExceeded

from ipfvr_core.errors import Canceled, IPFVRError
from jobs.model import ErrorInfo
from jobs.storage import StorageUnavailable, identity_module_key
from jobs.store.identities import IdentityStatus
from worker.context import WorkerContext
from worker.restorer import ResidentRestorer

log = logging.getLogger(__name__)


class IdentityTrainer:
    def __init__(self, ctx: WorkerContext, restorer: ResidentRestorer) -> None:
        self.ctx = ctx
        self.restorer = restorer

    def run(self, identity_id: str) -> None:
        ctx = self.ctx
        started = ctx.identities.start(identity_id, max_attempts=ctx.settings.max_deliveries)
        if started != "started":
            log.info("identity %s: not trained (%s)", identity_id, started)
            return
        record = ctx.identities.get(identity_id)
        if record is None:
            return
        module_key = identity_module_key(record.tenant, record.id)
        ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{identity_id}-", dir=ctx.settings.work_dir) as scratch:
            names = {f"photo-{i}": name or f"photo {i + 1}" for i, name in enumerate(record.photo_names)}
            try:
                photos = []
                for i, key in enumerate(record.photos):
                    photos.append(Path(scratch) / f"photo-{i}")
                    ctx.storage.download_file(key, photos[-1])
                trained = self.restorer.train_identity(
                    photos,
                    name=record.id,
                    work_dir=Path(scratch) / "train",
                    should_cancel=lambda: ctx.identities.get(identity_id) is None,
                )
                if trained.file is not None:
                    ctx.storage.upload_file(trained.file, module_key, "application/octet-stream")
                finished = ctx.identities.finish(
                    identity_id,
                    status=IdentityStatus.READY,
                    module_key=module_key if trained.file is not None else None,
                    summary=trained.summary,
                )
            except Canceled:
                finished = False  # deleted while training
            except StorageUnavailable as exc:  # a service error: before the library's, which it derives from
                log.error("identity %s: storage failed: %s", identity_id, exc)
                ctx.identities.finish(
                    identity_id,
                    status=IdentityStatus.FAILED,
                    error=ErrorInfo(code="storage_unavailable", message=exc.message),
                )
                return
            except IPFVRError as exc:
                message = exc.message
                for scratch_name, public in names.items():
                    message = message.replace(f"({scratch_name})", f"({public})")
                ctx.identities.finish(
                    identity_id,
                    status=IdentityStatus.FAILED,
                    error=ErrorInfo(code=exc.code, message=message, field=exc.field),
                )
                return
            except SoftTimeLimitExceeded:
                limit = ctx.settings.job_time_limit_s
                ctx.identities.finish(
                    identity_id,
                    status=IdentityStatus.FAILED,
                    error=ErrorInfo(code="time_limit_exceeded", message=f"training ran longer than {limit} s"),
                )
                return
            except Exception:
                log.exception("identity %s: unexpected error", identity_id)
                ctx.identities.finish(
                    identity_id,
                    status=IdentityStatus.FAILED,
                    error=ErrorInfo(code="internal_error", message="the worker hit an unexpected error; it was logged"),
                )
                return
        if not finished:
            log.info("identity %s: deleted while training; removing its module", identity_id)
            ctx.storage.delete([module_key])
        else:
            log.info("identity %s: ready", identity_id)
