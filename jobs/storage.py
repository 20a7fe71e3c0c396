"""S3-compatible object storage (AWS, MinIO, SeaweedFS) through boto3, and the object key layout.

Uploads stream: :class:`ObjectWriter` buffers at most one part (``upload_part_bytes``) and sends
it as an S3 multipart part, so memory per upload is bounded whatever the file size. A failed
multipart upload is aborted; when S3 is down the abort fails too, so a writer can report its
upload to an :class:`UploadJournal`, and whoever keeps the journal aborts it later. Presigned
URLs are made when a client reads a job (never stored), with the expiry returned next to them.
Keys are deterministic functions of tenant and job id, so a redelivered job overwrites its own
output instead of creating a second one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jobs.errors import Unavailable
from jobs.settings import Settings

_DELETE_BATCH = 1000  # S3 DeleteObjects limit


class StorageUnavailable(Unavailable):
    """S3 refused or could not be reached."""

    code = "storage_unavailable"


# ---------------------------------------------------------------------------------------------- keys
def input_key(tenant: str, job_id: str, name: str) -> str:
    """An input of a job uploaded through the multipart form: ``video`` or ``reference-<i>``."""
    return f"inputs/{tenant}/{job_id}/{name}"


def upload_key(tenant: str, upload_id: str) -> str:
    """An object a client PUTs through a presigned URL before naming it in a job."""
    return f"uploads/{tenant}/{upload_id}"


def output_key(tenant: str, job_id: str) -> str:
    """The restored video: one per job, whatever the number of runs."""
    return f"outputs/{tenant}/{job_id}/restored.mp4"


def report_key(tenant: str, job_id: str) -> str:
    """The full JSON report (with per-frame rows) next to the video."""
    return f"outputs/{tenant}/{job_id}/report.json"


def identity_photo_key(tenant: str, identity_id: str, index: int) -> str:
    """A photo of an identity (kept as long as the identity)."""
    return f"identities/{tenant}/{identity_id}/photo-{index}"


def identity_module_key(tenant: str, identity_id: str) -> str:
    """The identity's per-identity module (the ipfvr engine's LoRA psi_id)."""
    return f"identities/{tenant}/{identity_id}/module.safetensors"


class UploadJournal(Protocol):
    """Where a writer records its multipart upload, so that an upload it cannot abort is aborted later."""

    def begun(self, key: str, upload_id: str) -> None:
        """A multipart upload was created."""
        ...

    def ended(self, key: str, upload_id: str) -> None:
        """It was completed or aborted: nothing left to clean."""
        ...

    def abandoned(self, key: str, upload_id: str) -> None:
        """Aborting it failed: abort it as soon as S3 answers again."""
        ...


# ---------------------------------------------------------------------------------------------- client
@dataclass(frozen=True)
class PresignedURL:
    url: str
    expires_at: float  # Unix seconds


def _client(settings: Settings, endpoint: str | None) -> BaseClient:
    creds = {}
    if settings.s3_access_key_id is not None and settings.s3_secret_access_key is not None:
        creds = {
            "aws_access_key_id": settings.s3_access_key_id.get_secret_value(),
            "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
        }
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": settings.s3_addressing_style},
        retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=settings.s3_region, config=config, **creds
    )


class ObjectWriter:
    """A streaming upload of one object: feed bytes, upload full parts, then complete (or abort).

    ``feed`` only buffers (cheap, safe on an event loop); ``upload_ready_parts``, ``complete`` and
    ``abort`` do network I/O and belong in a worker thread. An object smaller than one part is
    sent with a single PUT.
    """

    def __init__(
        self,
        client: BaseClient,
        bucket: str,
        key: str,
        content_type: str,
        part_size: int,
        journal: UploadJournal | None = None,
    ) -> None:
        self._client = client
        self._journal = journal
        self._bucket = bucket
        self.key = key
        self.content_type = content_type
        self._part_size = part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, object]] = []
        self.size = 0

    def feed(self, data: bytes | memoryview) -> bool:
        """Buffer ``data``; True when at least one full part waits for :meth:`upload_ready_parts`."""
        self._buffer += data
        self.size += len(data)
        return len(self._buffer) >= self._part_size

    def upload_ready_parts(self) -> None:
        try:
            while len(self._buffer) >= self._part_size:
                if self._upload_id is None:
                    started = self._client.create_multipart_upload(
                        Bucket=self._bucket, Key=self.key, ContentType=self.content_type
                    )
                    self._upload_id = started["UploadId"]
                    if self._journal is not None:
                        self._journal.begun(self.key, self._upload_id)
                number = len(self._parts) + 1
                with memoryview(self._buffer) as view:
                    body = bytes(view[: self._part_size])  # one copy of the part, no intermediate slice
                del self._buffer[: self._part_size]
                sent = self._client.upload_part(
                    Bucket=self._bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=body
                )
                self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"uploading {self.key} failed: {exc}") from exc

    def complete(self) -> int:
        """Send what is buffered and finish the object; returns its size in bytes."""
        try:
            if self._upload_id is None:
                self._client.put_object(
                    Bucket=self._bucket, Key=self.key, Body=bytes(self._buffer), ContentType=self.content_type
                )
            else:
                self.upload_ready_parts()
                if self._buffer or not self._parts:
                    number = len(self._parts) + 1
                    sent = self._client.upload_part(
                        Bucket=self._bucket,
                        Key=self.key,
                        UploadId=self._upload_id,
                        PartNumber=number,
                        Body=bytes(self._buffer),
                    )
                    self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
                if self._journal is not None:
                    self._journal.ended(self.key, self._upload_id)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"uploading {self.key} failed: {exc}") from exc
        self._buffer = bytearray()
        return self.size

    def abort(self) -> None:
        """Drop the upload (and its parts); nothing is left under ``key``.

        If S3 refuses the abort, a writer with a journal hands the upload to it and returns;
        one without raises :class:`StorageUnavailable`.
        """
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self.key, UploadId=self._upload_id)
        except (BotoCoreError, ClientError) as exc:
            if self._journal is None:
                raise StorageUnavailable(f"aborting the upload of {self.key} failed: {exc}") from exc
            self._journal.abandoned(self.key, self._upload_id)
            return
        if self._journal is not None:
            self._journal.ended(self.key, self._upload_id)


class Storage:
    """One bucket. Every method raises :class:`StorageUnavailable` when S3 fails."""

    def __init__(
        self, client: BaseClient, bucket: str, *, part_size: int, presign_client: BaseClient | None = None
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        self._presign = presign_client or client

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        endpoint = str(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
        public = str(settings.s3_public_endpoint_url) if settings.s3_public_endpoint_url else endpoint
        client = _client(settings, endpoint)
        presign = client if public == endpoint else _client(settings, public)
        return cls(client, settings.s3_bucket, part_size=settings.upload_part_bytes, presign_client=presign)

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (development stacks; production provisions it)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise StorageUnavailable(f"bucket {self.bucket}: {exc}") from exc
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except (BotoCoreError, ClientError) as create_exc:
                raise StorageUnavailable(f"creating bucket {self.bucket} failed: {create_exc}") from create_exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 is unreachable: {exc}") from exc

    def check(self) -> None:
        """Readiness: the bucket answers."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"bucket {self.bucket} is not reachable: {exc}") from exc

    def writer(self, key: str, content_type: str, journal: UploadJournal | None = None) -> ObjectWriter:
        return ObjectWriter(self.client, self.bucket, key, content_type, self.part_size, journal)

    def upload_file(self, path: Path, key: str, content_type: str, journal: UploadJournal | None = None) -> None:
        """Upload a local file (multipart above one part, streamed from disk); a failed upload is aborted."""
        writer = self.writer(key, content_type, journal)
        with path.open("rb") as f:
            try:
                while chunk := f.read(self.part_size):
                    if writer.feed(chunk):
                        writer.upload_ready_parts()
                writer.complete()
            except BaseException:
                writer.abort()
                raise

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload (one already gone is fine)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404", "NotFound"):
                return
            raise StorageUnavailable(f"aborting the upload of {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"aborting the upload of {key} failed: {exc}") from exc

    def download_file(self, key: str, path: Path) -> None:
        try:
            self.client.download_file(self.bucket, key, str(path))
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"downloading {key} failed: {exc}") from exc

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"uploading {key} failed: {exc}") from exc

    def _unless_missing(self, key: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """``call()``'s answer about ``key``, or None when ``key`` does not exist."""
        try:
            return call()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageUnavailable(f"reading {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"reading {key} failed: {exc}") from exc

    def size(self, key: str) -> int | None:
        """Size of ``key`` in bytes, or None when it does not exist."""
        head = self._unless_missing(key, lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        return None if head is None else int(head["ContentLength"])

    def read_head(self, key: str, length: int) -> bytes:
        """The first ``length`` bytes of ``key``, for content sniffing."""
        return self._read_range(key, f"bytes=0-{length - 1}")

    def read_tail(self, key: str, length: int) -> bytes:
        """The last ``length`` bytes of ``key`` (all of it when shorter), for the media checks."""
        return self._read_range(key, f"bytes=-{length}")

    def _read_range(self, key: str, byte_range: str) -> bytes:
        """One ranged GET (an HTTP ``Range`` header value)."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)["Body"]
            return bytes(body.read())
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"reading {key} failed: {exc}") from exc

    def stream(self, key: str, chunk_bytes: int = 1024 * 1024) -> Iterator[bytes] | None:
        """``key``'s bytes as an iterator of chunks (streamed from S3), or None when it does not exist."""
        got = self._unless_missing(key, lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        return None if got is None else got["Body"].iter_chunks(chunk_bytes)

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` (missing ones are fine)."""
        batch = [{"Key": k} for k in keys]
        try:
            for start in range(0, len(batch), _DELETE_BATCH):
                result = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch[start : start + _DELETE_BATCH], "Quiet": True}
                )
                if result.get("Errors"):
                    raise StorageUnavailable(f"deleting objects failed: {result['Errors'][:3]}")
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"deleting objects failed: {exc}") from exc

    def presign_get(self, key: str, expires_s: int, *, now: float | None = None) -> PresignedURL:
        moment = time.time() if now is None else now
        url = self._presign.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )
        return PresignedURL(url=url, expires_at=moment + expires_s)

    def presign_put(self, key: str, expires_s: int, *, size: int, now: float | None = None) -> PresignedURL:
        """A PUT URL for exactly ``size`` bytes: Content-Length is a signed header (SigV4), so the
        store refuses a body of any other length, or a chunked one, with 403 SignatureDoesNotMatch."""
        moment = time.time() if now is None else now
        url = self._presign.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": key, "ContentLength": size}, ExpiresIn=expires_s
        )
        return PresignedURL(url=url, expires_at=moment + expires_s)
