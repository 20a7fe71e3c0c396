"""One typed settings object for the whole service, read from ``IPFVR_*`` environment variables.

The API, the workers and the CLI all build one :class:`Settings` at start-up and pass it down.
Construction validates every field and the relations between them (a visibility timeout shorter
than the longest job would make Redis redeliver running jobs), so a bad value stops the process
at once with the variable's name. In production (``IPFVR_ENV=production``) there is no default
secret: ``IPFVR_SECRET_KEY`` must be set to a long random value.
"""

from __future__ import annotations

import ipaddress
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
GiB = 1024 * MiB

# Only for IPFVR_ENV=development: a fixed, public value so that `ipfvr keys create` and a local API
# hash keys the same way without configuration. Production refuses to start without its own secret.
_DEVELOPMENT_SECRET = "ipfvr-development-secret-never-use-in-production"
_MIN_SECRET_LENGTH = 32

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    """Every knob of the job service. Field names map to ``IPFVR_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="IPFVR_", frozen=True, extra="ignore")

    # --- deployment -------------------------------------------------------------------------
    env: Literal["development", "production"] = "development"  # production: no default secret
    secret_key: SecretStr | None = None  # HMAC key for API key hashes; required in production
    public_url: AnyHttpUrl | None = None  # base URL clients use; job `urls` are relative without it

    # --- Redis: job store and Celery broker -------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^rediss?://")  # system of record
    key_prefix: str = Field("ipfvr", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # prefix of every store key
    broker_url: str | None = Field(None, pattern=r"^rediss?://")  # Celery broker; default redis_url
    broker_key_prefix: str = Field("", pattern=r"^[A-Za-z0-9_.:-]{0,64}$")  # kombu global_keyprefix
    visibility_timeout_s: int = Field(7200, ge=10)  # unacked messages come back after this; > job limit
    broker_restore_interval_s: int = Field(10, ge=1)  # how often kombu looks for messages to redeliver

    # --- S3 storage -------------------------------------------------------------------------
    s3_endpoint_url: AnyHttpUrl | None = None  # MinIO/SeaweedFS endpoint; None = AWS
    s3_public_endpoint_url: AnyHttpUrl | None = None  # endpoint in presigned URLs; default s3_endpoint_url
    s3_region: str = "us-east-1"  # signing region
    s3_access_key_id: SecretStr | None = None  # None = boto3's default credential chain
    s3_secret_access_key: SecretStr | None = None  # set together with s3_access_key_id
    s3_bucket: str = Field("ipfvr", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # inputs and outputs
    s3_addressing_style: Literal["path", "virtual", "auto"] = "path"  # path for MinIO/SeaweedFS
    s3_create_bucket: bool = False  # create the bucket at start-up (development stacks)
    presign_expires_s: int = Field(3600, ge=60, le=7 * 24 * 3600)  # lifetime of presigned URLs
    upload_part_bytes: int = Field(8 * MiB, ge=5 * MiB, le=512 * MiB)  # S3 multipart part size (memory per upload)
    s3_max_attempts: int = Field(3, ge=1, le=10)  # attempts of one S3 request inside boto3 (its own quick retries)
    storage_retry_horizon_s: float = Field(120.0, ge=0)  # a worker retries storing a result this long, then fails it
    storage_retry_base_s: float = Field(1.0, gt=0)  # first delay between result-upload retries; doubles each time

    # --- limits -------------------------------------------------------------------------------
    max_video_bytes: int = Field(2 * GiB, ge=1)  # largest accepted video upload
    max_reference_bytes: int = Field(20 * MiB, ge=1)  # largest accepted reference image
    max_references: int = Field(5, ge=1, le=32)  # reference images per job
    max_json_bytes: int = Field(1 * MiB, ge=1024)  # largest JSON request body
    max_duration_s: float = Field(600.0, gt=0)  # longest accepted video (checked by the worker)
    max_side: int = Field(3840, ge=16)  # widest/tallest accepted video, in pixels (worker)
    max_pixels: int = Field(3840 * 2160, ge=256)  # width * height of one frame (worker)
    max_reference_pixels: int = Field(40_000_000, ge=256)  # width * height of one reference (worker)
    min_side: int = Field(16, ge=1)  # narrowest accepted video frame side, pixels (API, from the header)
    max_queued_per_tenant: int = Field(100, ge=1)  # queued jobs one tenant may have at a time
    max_identities_per_tenant: int = Field(100, ge=1)  # identities one tenant may keep
    max_identity_photos: int = Field(16, ge=1, le=64)  # photos of one identity

    # --- job lifecycle --------------------------------------------------------------------------
    engines: list[Name] = ["reference", "baseline", "ipfvr"]  # engines clients may ask for; one queue each
    default_engine: Name = "reference"  # engine of a job that names none
    queue_ttl_s: int = Field(24 * 3600, ge=1)  # a job not started within this becomes `expired`
    job_time_limit_s: int = Field(3600, ge=1)  # soft limit of one run; the job then fails
    job_kill_grace_s: int = Field(60, ge=1)  # hard limit = soft limit + this
    cancel_grace_s: float = Field(30.0, gt=0)  # cooperative cancel window before a hard terminate
    max_deliveries: int = Field(3, ge=1)  # runs of one job (redeliveries after worker loss included)
    lease_ttl_s: float = Field(30.0, gt=0)  # a run's lease expires this long after its last heartbeat
    heartbeat_s: float = Field(5.0, gt=0)  # lease renewal, cancel polling and worker state interval
    progress_interval_s: float = Field(2.0, ge=0)  # shortest interval between progress writes
    retention_s: int = Field(7 * 24 * 3600, ge=60)  # inputs/outputs are removed this long after the end
    upload_ttl_s: int = Field(24 * 3600, ge=60)  # unused presigned uploads are removed after this
    tombstone_ttl_s: int = Field(30 * 24 * 3600, ge=60)  # a deleted job answers 410 this long
    idempotency_ttl_s: int = Field(24 * 3600, ge=60)  # an Idempotency-Key maps to its job this long
    sweep_interval_s: float = Field(15.0, gt=0)  # period of the maintenance sweep (beat)
    redis_retry_horizon_s: float = Field(60.0, ge=0)  # a worker retries a job-store write this long while Redis is down
    shutdown_grace_s: float = Field(30.0, gt=0)  # after SIGTERM a running job may finish this long, then is handed back

    # --- webhooks -------------------------------------------------------------------------------
    webhook_timeout_s: float = Field(10.0, gt=0)  # connect + read timeout of one delivery
    webhook_max_attempts: int = Field(12, ge=1)  # terminal events: attempts before giving up
    webhook_retry_horizon_s: float = Field(6 * 3600.0, gt=0)  # terminal events: no attempt this long after the event
    webhook_backoff_base_s: float = Field(5.0, gt=0)  # first retry delay; doubles each attempt
    webhook_backoff_max_s: float = Field(3600.0, gt=0)  # longest retry delay
    webhook_progress_interval_s: float = Field(5.0, ge=0)  # fewest seconds between progress events
    webhook_dispatch_interval_s: float = Field(5.0, gt=0)  # how often due retries are dispatched (beat)
    webhook_allow_private: bool = False  # allow loopback/private/link-local targets (development only)
    webhook_allow_cidrs: list[IPNetwork] = []  # operator allowlist of otherwise forbidden networks
    webhook_secret_grace_s: int = Field(24 * 3600, ge=0)  # a rotated secret keeps signing this long

    # --- abuse limits and logs ---------------------------------------------------------------------
    rate_limit_per_s: float = Field(20.0, gt=0)  # requests per second one API key may sustain (token refill)
    rate_limit_burst: int = Field(100, ge=1)  # requests one API key may make at once (bucket size)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # level of the service's logs
    log_format: Literal["json", "text"] = "json"  # json: one redacted JSON object per line

    # --- worker ---------------------------------------------------------------------------------
    restorer: str = Field("worker.restorer:load_restorer", pattern=r"^[\w.]+:\w+$")  # factory, module:callable
    worker_engine: Name = "reference"  # engine this worker loads; it consumes restore.<engine> and train.<engine>
    weights_dir: Path | None = None  # weights folder of the ipfvr engine
    face_backend: Literal["auto", "centerface", "dlib", "insightface"] = "auto"  # face analysis backend
    insightface_dir: Path | None = None  # local insightface model pack
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$")  # torch device of the engine
    dtype: Literal["float32", "float16", "bfloat16"] | None = None  # engine dtype; None = engine default
    model_load_timeout_s: float = Field(900.0, gt=0)  # worker_proc_alive_timeout: model load budget
    work_dir: Path = Path(tempfile.gettempdir()) / "ipfvr-work"  # per-job scratch space on the worker
    max_loaded_identities: int = Field(8, ge=1)  # per-identity modules a worker keeps loaded (LRU)
    identity_steps: int = Field(300, ge=1)  # optimizer steps of an identity's training (ipfvr: the LoRA)
    identity_learning_rate: float = Field(1e-4, gt=0)  # its AdamW learning rate

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.env == "production":
            if self.secret_key is None or len(self.secret_key.get_secret_value()) < _MIN_SECRET_LENGTH:
                raise ValueError(
                    f"IPFVR_SECRET_KEY must be set to at least {_MIN_SECRET_LENGTH} random characters "
                    "when IPFVR_ENV=production"
                )
            if self.webhook_allow_private:
                raise ValueError("IPFVR_WEBHOOK_ALLOW_PRIVATE is for development; use IPFVR_WEBHOOK_ALLOW_CIDRS")
        if self.hard_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                f"IPFVR_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed the hard job time "
                f"limit ({self.hard_time_limit_s} = job_time_limit_s + job_kill_grace_s), or Redis "
                "redelivers jobs that are still running"
            )
        if self.heartbeat_s * 2 > self.lease_ttl_s:
            raise ValueError("IPFVR_LEASE_TTL_S must be at least twice IPFVR_HEARTBEAT_S")
        if self.default_engine not in self.engines:
            raise ValueError(f"IPFVR_DEFAULT_ENGINE {self.default_engine!r} is not in IPFVR_ENGINES")
        if self.worker_engine not in self.engines:
            raise ValueError(f"IPFVR_WORKER_ENGINE {self.worker_engine!r} is not in IPFVR_ENGINES")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set IPFVR_S3_ACCESS_KEY_ID and IPFVR_S3_SECRET_ACCESS_KEY together")
        if self.webhook_backoff_max_s < self.webhook_backoff_base_s:
            raise ValueError("IPFVR_WEBHOOK_BACKOFF_MAX_S must be >= IPFVR_WEBHOOK_BACKOFF_BASE_S")
        return self

    @property
    def hard_time_limit_s(self) -> int:
        """Celery's hard time limit: the child process is killed after this."""
        return self.job_time_limit_s + self.job_kill_grace_s

    @property
    def effective_secret_key(self) -> bytes:
        """The HMAC key; the fixed development value only outside production."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        return _DEVELOPMENT_SECRET.encode()

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def max_identity_request_bytes(self) -> int:
        """Largest multipart identity request: every photo, and room for the options."""
        return self.max_identity_photos * self.max_reference_bytes + self.max_json_bytes

    @property
    def max_request_bytes(self) -> int:
        """Largest multipart job request: one video, every reference, and room for the options."""
        return self.max_video_bytes + self.max_references * self.max_reference_bytes + self.max_json_bytes

    def queue_for(self, engine: str) -> str:
        """Celery queue of the restore jobs of ``engine``; workers of that engine consume it."""
        return f"restore.{engine}"

    def train_queue_for(self, engine: str) -> str:
        """Celery queue of the identity trainings of ``engine``: its restore workers, or dedicated ones."""
        return f"train.{engine}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (raises on a bad value)."""
    return Settings()
