"""The job as the store keeps it: the status enum (with the one definition of "terminal") and a typed record.

A job lives in one Redis hash whose fields are strings; :meth:`JobRecord.from_hash` is the only
place that parses them, so every reader sees the same types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from ipfvr_core.progress import ProgressEvent
from jobs.options import JobOptions, WebhookEvent


class Status(StrEnum):
    """Job status, as the API reports it."""

    QUEUED = "queued"
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        """Terminal jobs never change status again."""
        return self in TERMINAL

    @property
    def is_running(self) -> bool:
        """A worker holds the job (it may be loading inputs, restoring or uploading)."""
        return self in RUNNING


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.EXPIRED})
RUNNING = frozenset({Status.STARTING, Status.PROCESSING})


@dataclass(frozen=True)
class ErrorInfo:
    """Why a job failed (or was canceled): a stable code, a message, maybe the field at fault."""

    code: str
    message: str
    field: str | None = None

    def to_json(self) -> str:
        return json.dumps({"code": self.code, "message": self.message, "field": self.field})

    @classmethod
    def from_json(cls, text: str) -> ErrorInfo:
        data = json.loads(text)
        return cls(code=data["code"], message=data["message"], field=data.get("field"))


@dataclass(frozen=True)
class WebhookState:
    """How the job's latest start or completed webhook is doing (the outbox writes it)."""

    event: str  # start | completed
    state: str  # retrying | delivered | failed
    attempts: int  # attempts made so far
    last_error: str | None  # the latest failed attempt's error ("HTTP 500", "ReadTimeout: ...")
    last_attempt_at: float  # Unix seconds
    next_attempt_at: float | None  # when it is tried again (retrying only)

    @classmethod
    def from_json(cls, text: str) -> WebhookState:
        data = json.loads(text)
        next_at = data.get("next_attempt_at")
        return cls(
            event=str(data["event"]),
            state=str(data["state"]),
            attempts=int(data["attempts"]),
            last_error=data.get("last_error"),
            last_attempt_at=float(data["last_attempt_at"]),
            next_attempt_at=float(next_at) if next_at is not None else None,
        )


@dataclass(frozen=True)
class JobInputs:
    """Object keys of a job's inputs in the bucket."""

    video: str
    references: list[str]
    names: list[str] = field(default_factory=list)  # the files' names as sent (display only), video first; [] if none

    def to_json(self) -> str:
        return json.dumps({"video": self.video, "references": self.references, "names": self.names})

    @classmethod
    def from_json(cls, text: str) -> JobInputs:
        data = json.loads(text)
        return cls(video=data["video"], references=list(data["references"]), names=list(data.get("names", [])))

    def display_names(self) -> list[str]:
        """What messages call each input, in :meth:`object_keys` order: the client's name, else the field."""
        fields = ["video", *(f"reference[{i}]" for i in range(len(self.references)))]
        return [name or fallback for name, fallback in zip([*self.names, *[""] * len(fields)], fields, strict=False)]

    def object_keys(self) -> list[str]:
        return [self.video, *self.references]


@dataclass(frozen=True)
class JobRecord:
    """One job, parsed from its hash. Times are Unix seconds."""

    id: str
    tenant: str
    status: Status
    engine: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None  # queue deadline: not started by then -> expired
    options: JobOptions = field(default_factory=JobOptions)  # as the client chose them, the engine resolved
    inputs: JobInputs | None = None
    output_key: str | None = None  # restored video; None until succeeded, and after data removal
    report_key: str | None = None  # full JSON report next to the video
    report: dict[str, object] | None = None  # report summary (without per-frame rows)
    error: ErrorInfo | None = None
    progress: ProgressEvent | None = None
    deliveries: int = 0  # how many runs were started (redeliveries included)
    cancel_requested: bool = False
    data_removed: bool = False
    deleted_at: float | None = None  # set on tombstones only
    webhook_url: str | None = None
    webhook_events: frozenset[WebhookEvent] = frozenset()
    webhook: WebhookState | None = None  # delivery of the latest start/completed webhook

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> JobRecord:
        def num(name: str) -> float | None:
            value = raw.get(name)
            return float(value) if value not in (None, "") else None

        def text(name: str) -> str | None:
            value = raw.get(name)
            return value if value else None

        events = frozenset(WebhookEvent(e) for e in raw.get("webhook_events", "").split(",") if e)
        return cls(
            id=raw["id"],
            tenant=raw["tenant"],
            status=Status(raw["status"]),
            engine=raw.get("engine", ""),
            created_at=num("created_at") or 0.0,
            started_at=num("started_at"),
            completed_at=num("completed_at"),
            expires_at=num("expires_at"),
            options=JobOptions.model_validate_json(raw["options"]) if raw.get("options") else JobOptions(),
            inputs=JobInputs.from_json(raw["inputs"]) if raw.get("inputs") else None,
            output_key=text("output_key"),
            report_key=text("report_key"),
            report=json.loads(raw["report"]) if raw.get("report") else None,
            error=ErrorInfo.from_json(raw["error"]) if raw.get("error") else None,
            progress=ProgressEvent.from_dict(json.loads(raw["progress"])) if raw.get("progress") else None,
            deliveries=int(raw.get("deliveries") or 0),
            cancel_requested=raw.get("cancel_requested") == "1",
            data_removed=raw.get("data_removed") == "1",
            deleted_at=num("deleted_at"),
            webhook_url=text("webhook_url"),
            webhook_events=events,
            webhook=WebhookState.from_json(raw["webhook"]) if raw.get("webhook") else None,
        )


def encode_events(events: frozenset[WebhookEvent] | set[WebhookEvent]) -> str:
    """The hash form of an events filter: ``,start,completed,`` (Lua matches ``,event,``)."""
    return "," + ",".join(sorted(e.value for e in events)) + "," if events else ""
