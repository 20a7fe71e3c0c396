"""Request and response schemas of the API that are not part of the shared job object.

``JobCreate`` is the JSON form of ``POST /v1/jobs`` (inputs uploaded beforehand through
``POST /v1/uploads``); the multipart form carries the same options as JSON in its ``options`` field.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.options import JobOptions
from jobs.schemas import ErrorPublic, JobPublic, JobsPublic

__all__ = [
    "Health",
    "IdentitiesPublic",
    "IdentityCreate",
    "IdentityPublic",
    "JobCreate",
    "JobInputsCreate",
    "JobOptions",
    "JobPublic",
    "JobsPublic",
    "Readiness",
    "UploadCreate",
    "UploadPublic",
    "WebhookSecretPublic",
]


class JobInputsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video: str = Field(description="upload id of the video (from POST /v1/uploads)", pattern=r"^upl_")
    references: list[str] = Field(
        default_factory=list, description="upload ids of the reference images (at least one unless `identity`)"
    )


class JobCreate(JobOptions):
    """JSON form of job creation: options plus the ids of inputs uploaded beforehand."""

    inputs: JobInputsCreate


class UploadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: Literal["video", "reference"] = Field(description="what the file will be used as")
    size: int = Field(gt=0, description="file size in bytes: checked against the limits, and the upload must match it")


class UploadPublic(BaseModel):
    id: str = Field(description="name it in JobCreate.inputs")
    url: str = Field(description="presigned URL: PUT the file's bytes here, exactly `size` of them")
    method: Literal["PUT"] = "PUT"
    size: int = Field(description="the declared size; the URL accepts a body of this length only")
    expires_at: datetime


class WebhookSecretPublic(BaseModel):
    secret: str = Field(description="whsec_... secret that signs your webhooks (Standard Webhooks)")
    previous_expires_at: datetime | None = Field(
        None, description="after a rotation, the previous secret also signs until then"
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]
    workers: dict[str, int] = Field(description="worker processes by state (informational)")


class IdentityCreate(BaseModel):
    """The ``options`` field (JSON) of ``POST /v1/identities``; the photos come as ``reference`` files."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=120, description="your label for the person (not unique)")
    engine: str | None = Field(
        None, description="engine whose per-identity module is trained; default: the service's default engine"
    )


class IdentityUrls(BaseModel):
    get: str


class IdentityPublic(BaseModel):
    """An identity as clients see it."""

    id: str
    object: Literal["identity"] = "identity"
    name: str
    engine: str
    status: Literal["queued", "training", "ready", "failed"] = Field(description="ready: jobs may name it")
    photos: int = Field(description="photos uploaded")
    photo_names: list[str] = Field(description="the photos' file names as uploaded")
    module: bool = Field(description="whether the engine has a per-identity module for it (ipfvr: a LoRA)")
    summary: dict[str, builtins.object] = Field(  # ``object`` is the field above
        default_factory=dict, description="what training reported"
    )
    created_at: datetime
    completed_at: datetime | None = None
    error: ErrorPublic | None = None
    urls: IdentityUrls


class IdentitiesPublic(BaseModel):
    data: list[IdentityPublic]
