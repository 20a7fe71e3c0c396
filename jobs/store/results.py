"""What the job store's operations answer: a create, a claim, a transition, a heartbeat, a page."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from jobs.model import JobRecord


@dataclass(frozen=True)
class Created:
    job_id: str
    created: bool  # False: an earlier request with the same Idempotency-Key made it


ClaimOutcome = Literal["claimed", "leased", "terminal", "missing", "expired", "canceled", "poisoned"]


@dataclass(frozen=True)
class Claim:
    """Result of a worker's attempt to start a job."""

    outcome: ClaimOutcome
    delivery: str | None = None  # webhook delivery recorded by the transition
    attempt: int = 0  # 1 for the first run, 2 after one redelivery, ...
    lease_remaining_s: float = 0.0  # for "leased": how long the other holder's lease still runs


@dataclass(frozen=True)
class Transition:
    """Result of a transition script: what happened and the webhook delivery it recorded, if any."""

    outcome: str
    delivery: str | None = None
    detail: str = ""


class Beat(IntEnum):
    """What a lease renewal found."""

    LOST = -1  # the lease is gone: another run or the sweeper owns the job now
    RUNNING = 0  # keep going
    CANCEL = 1  # the client asked to cancel
    HAND_BACK = 2  # this worker node is shutting down and its grace period is over: give the job back


@dataclass(frozen=True)
class ProgressAck:
    lost: bool  # the lease is gone: another worker or the sweeper owns the job now
    cancel_requested: bool
    delivery: str | None


@dataclass(frozen=True)
class Page:
    items: list[JobRecord]
    next_cursor: str | None
