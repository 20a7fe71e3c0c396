"""Object storage on the real S3 server: ranged reads of an object's head and tail."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ipfvr.devstack import S3Server
from jobs.settings import Settings
from jobs.storage import Storage, StorageUnavailable


@pytest.fixture()
def storage(s3_server: S3Server, redis_prefix: Callable[[], str]) -> Storage:
    settings = Settings(
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,
        s3_bucket=redis_prefix().replace("ipfvrtest-", "ipfvr-o-"),
    )
    bucket = Storage.from_settings(settings)
    bucket.ensure_bucket()
    return bucket


def test_ranged_reads_return_the_head_and_the_tail_of_an_object(storage: Storage) -> None:
    storage.put_bytes("inputs/acme/job/video", bytes(range(100)), "video/mp4")
    assert storage.read_head("inputs/acme/job/video", 4) == bytes([0, 1, 2, 3])
    assert storage.read_tail("inputs/acme/job/video", 4) == bytes([96, 97, 98, 99])
    assert storage.read_tail("inputs/acme/job/video", 1000) == bytes(range(100))  # shorter than asked: all of it
    with pytest.raises(StorageUnavailable):
        storage.read_tail("inputs/acme/job/missing", 4)
