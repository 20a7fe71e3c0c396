"""Identities end to end with tiny IP-FVR weights: the real restorer in a Celery worker, uvicorn, Redis, weed S3.

A tenant registers skimage's astronaut from three photos; the worker trains her LoRA psi_id on the
``train.ipfvr`` queue; a job that names the identity (and sends no reference of its own) is
restored with the LoRA active and her photos as references. Another tenant sees none of it, a
photo set of two people fails with the photo named, and a delete removes the record and every
object.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import skimage.data
from PIL import Image

from ipfvr.client import ApiError, Client
from ipfvr_core.diffusion.random_checkpoint import write_tiny_checkpoint
from ipfvr_core.evaluation.synth import reference_variant
from tests.media_factory import first_frames
from tests.service.stack import ServiceStack


def astronaut_photos(folder: Path) -> list[Path]:
    image = skimage.data.astronaut()
    face = image[0:300, 100:340]
    paths = []
    for index, photo in enumerate([image, reference_variant(face, "relight", 1), reference_variant(face, "recrop", 2)]):
        paths.append(folder / f"astronaut-{index}.png")
        Image.fromarray(photo).save(paths[-1])
    return paths


def create_identity(client: httpx.Client, photos: list[Path], **options: Any) -> httpx.Response:
    return client.post(
        "/v1/identities",
        files=[
            ("options", (None, json.dumps(options), "application/json")),
            *(("reference", (p.name, p.read_bytes())) for p in photos),
        ],
    )


def wait_identity(client: httpx.Client, identity_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    identity: dict[str, Any] = {}
    while time.monotonic() < deadline:
        identity = client.get(f"/v1/identities/{identity_id}").json()
        if identity["status"] in ("ready", "failed"):
            return identity
        time.sleep(0.2)
    raise AssertionError(f"identity {identity_id} stayed {identity.get('status')}")


@pytest.mark.slow
def test_identities_train_serve_a_job_stay_private_and_delete(
    make_stack,
    tmp_path: Path,  # noqa: ANN001
    carphone_distorted: Path,
    tom_hanks: Path,
) -> None:
    weights = write_tiny_checkpoint(tmp_path / "tiny", seed=0)
    stack: ServiceStack = make_stack(
        restorer="worker.restorer:load_restorer",
        worker_env={"engine": "ipfvr"},
        weights_dir=str(weights),
        engines=["baseline", "ipfvr"],
        identity_steps=30,
        identity_learning_rate=2e-3,
        job_time_limit_s=540,
        job_kill_grace_s=30,
        visibility_timeout_s=600,
        ready_timeout_s=180,
    )
    photos = astronaut_photos(tmp_path)
    _, key = stack.new_tenant()
    _, other_key = stack.new_tenant()
    with stack.client(key) as client, stack.client(other_key) as other:
        # bad requests are refused before anything is kept
        assert create_identity(client, [], name="nobody").json()["error"]["code"] == "missing_field"
        refused = create_identity(client, photos[:1], name="x", engine="nope")
        assert (refused.status_code, refused.json()["error"]["field"]) == (422, "options.engine")
        with_video = client.post("/v1/identities", files=[("video", ("v.mp4", b"\0" * 64))])
        assert with_video.json()["error"] == {
            "code": "unknown_field",
            "field": "video",
            "message": "an identity takes photos as reference files, not a video",
        }
        assert stack.objects("identities/") == []

        created = create_identity(client, photos, name="astronaut", engine="ipfvr")
        assert created.status_code == 202, created.text
        identity_id = created.json()["id"]
        assert created.json()["status"] == "queued" and created.json()["photos"] == 3
        identity = wait_identity(client, identity_id, timeout_s=300)
        assert identity["status"] == "ready", identity["error"]
        assert identity["module"] is True and identity["summary"]["photos"] == 3
        assert identity["summary"]["loss_end"] < identity["summary"]["loss_start"], identity["summary"]
        assert [i["id"] for i in client.get("/v1/identities").json()["data"]] == [identity_id]

        # another tenant: not found, not listed, not usable
        assert other.get(f"/v1/identities/{identity_id}").status_code == 404
        assert other.get("/v1/identities").json()["data"] == []
        assert other.delete(f"/v1/identities/{identity_id}").status_code == 404
        clip = first_frames(carphone_distorted, tmp_path / "carphone.mp4", 6)
        job_files = [("video", ("carphone.mp4", clip.read_bytes()))]
        options = {"engine": "ipfvr", "identity": identity_id, "faces": "all", "seed": 1}
        stolen = other.post(
            "/v1/jobs", files=[("options", (None, json.dumps(options), "application/json")), *job_files]
        )
        assert stolen.json()["error"]["code"] == "identity_not_found", stolen.text

        # a job named by the identity alone: her photos are the references, her LoRA is active
        job = client.post("/v1/jobs", files=[("options", (None, json.dumps(options), "application/json")), *job_files])
        assert job.status_code == 202, job.text
        done = stack.wait_job(client, job.json()["id"], {"succeeded", "failed", "canceled"}, timeout_s=300)
        assert done["status"] == "succeeded", done["error"]
        report = done["output"]["report"]
        assert report["versions"]["engine_lora"] == identity_id
        assert [r["name"] for r in report["references"]] == [f"astronaut photo {i}" for i in (1, 2, 3)]

        # photos of two people (through the Python client): the identity fails and names the odd photo
        with Client(stack.url, key) as python_client:
            mixed = python_client.create_identity([*photos[:2], tom_hanks], name="mixed", engine="ipfvr")
            failed = wait_identity(client, mixed["id"], timeout_s=120)
            assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_reference", failed
            assert "Tom_Hanks_54745.png" in failed["error"]["message"] and failed["module"] is False
            python_client.delete_identity(mixed["id"])
            with pytest.raises(ApiError) as gone:
                python_client.get_identity(mixed["id"])
            assert gone.value.code == "identity_not_found"

        # delete: the record and every object go; jobs can no longer name it
        assert client.delete(f"/v1/identities/{identity_id}").status_code == 204
        assert client.get(f"/v1/identities/{identity_id}").status_code == 404
        assert not [k for k in stack.objects("identities/") if f"/{identity_id}/" in k]
        again = client.post(
            "/v1/jobs", files=[("options", (None, json.dumps(options), "application/json")), *job_files]
        )
        assert again.json()["error"]["code"] == "identity_not_found", again.text


class EngineDouble:
    """Records what the LRU loads and unloads (a test double of an engine with per-identity modules)."""

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.events: list[str] = []

    def load_identity(self, name: str, path: Path) -> None:
        assert path.read_bytes() == name.encode()
        self.loaded.append(name)
        self.events.append(f"load {name}")

    def unload_identity(self, name: str) -> None:
        self.loaded.remove(name)
        self.events.append(f"unload {name}")


def test_loaded_modules_keep_the_most_recently_used(tmp_path: Path) -> None:
    from worker.restorer import IdentityUse, LoadedModules

    engine = EngineDouble()
    modules = LoadedModules(engine, capacity=2)
    fetched: list[str] = []

    def use(name: str) -> str:
        def fetch(path: Path) -> None:
            fetched.append(name)
            path.write_bytes(name.encode())

        return modules.use(IdentityUse(id=name, fetch_module=fetch), scratch=tmp_path)

    assert [use(n) for n in ("a", "b", "a", "c", "a", "b")] == ["a", "b", "a", "c", "a", "b"]
    assert fetched == ["a", "b", "c", "b"]  # hits fetch nothing; b was the least recent when c came
    assert engine.events == ["load a", "load b", "load c", "unload b", "load b", "unload c"]
    assert sorted(engine.loaded) == ["a", "b"] and not list(tmp_path.iterdir())


def test_identity_transitions_move_only_from_the_expected_state(redis_url: str, redis_prefix) -> None:  # noqa: ANN001
    import redis

    from jobs.store.identities import IdentityRecord, IdentityStatus, IdentityStore, new_identity_id

    store = IdentityStore(redis.Redis.from_url(redis_url, decode_responses=True), redis_prefix())
    record = IdentityRecord(
        id=new_identity_id(),
        tenant="t1",
        name="n",
        engine="ipfvr",
        status=IdentityStatus.QUEUED,
        photos=["k0"],
        photo_names=["p.png"],
        created_at=1.0,
    )
    store.create(record)
    assert store.finish(record.id, status=IdentityStatus.READY) is False  # not training yet
    assert store.start(record.id, max_attempts=2) == "started"
    assert store.start(record.id, max_attempts=2) == "started"  # a redelivery after a lost worker
    assert store.finish(record.id, status=IdentityStatus.READY, module_key="m", summary={"photos": 1}) is True
    ready = store.get(record.id)
    assert ready is not None and ready.status is IdentityStatus.READY and ready.module_key == "m"
    assert store.start(record.id, max_attempts=2) == "ready"  # a late duplicate does not retrain
    store.delete(ready)
    assert store.start(record.id, max_attempts=2) == "missing" and store.list("t1", limit=10) == []
    # a message that keeps killing its worker gives up
    poisoned = IdentityRecord(**{**record.__dict__, "id": new_identity_id(), "status": IdentityStatus.QUEUED})
    store.create(poisoned)
    assert [store.start(poisoned.id, max_attempts=1) for _ in range(2)] == ["started", "attempts"]
    failed = store.get(poisoned.id)
    assert failed is not None and failed.status is IdentityStatus.FAILED and failed.error.code == "poisoned"
