"""A corpus of malformed media, generated here (a few KB each): refused at the API with a stable 4xx
code from sniffing and header checks, or failed by the worker with the library's stable code,
never a crashed or stuck worker.

The worker of this module's stack runs :class:`~tests.service.hostile_doubles.ProbingRestorerDouble`:
the library's real probe, full decode and reference reading with the configured limits.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from jobs.errors import ServiceError
from jobs.media.checks import MediaLimits, check_upload
from jobs.media.header import HEAD_BYTES, TAIL_BYTES, read_image_header, read_isobmff, read_matroska
from jobs.media.sniff import Kind
from jobs.store.workers import WorkerRegistry, WorkerState
from tests.media_factory import png_bomb, remux_video, write_audio_only, write_clip, write_video_track_without_frames
from tests.service.stack import ServiceStack

PROBING = "tests.service.hostile_doubles:load_probing_restorer"
LIMITS = MediaLimits(
    min_side=16, max_side=3840, max_pixels=3840 * 2160, max_duration_s=600, max_reference_pixels=40_000_000
)


# ---------------------------------------------------------------------------------------------- the corpus
def _box(data: bytes, kind: bytes) -> int:
    """Offset of the type of the (only) box ``kind`` after ``ftyp`` (whose brands may spell it too)."""
    start = struct.unpack_from(">I", data, 0)[0]  # end of the ftyp box
    at = data.find(kind, start)
    assert at > 0 and data.find(kind, at + 4) < 0, f"expected one {kind!r} box"
    return at


def declare_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame size an MP4 declares (``tkhd`` 16.16 and the ``avc1`` sample entry); frames unchanged."""
    out = bytearray(data)
    tkhd = _box(data, b"tkhd")
    assert out[tkhd + 4] == 0, "version 0 tkhd expected"
    struct.pack_into(">II", out, tkhd + 4 + 4 + 20 + 52, width << 16, height << 16)
    struct.pack_into(">HH", out, _box(data, b"avc1") + 4 + 24, width, height)
    return bytes(out)


def declare_duration(data: bytes, seconds: int) -> bytes:
    """Rewrite the duration an MP4's ``mvhd`` declares (version 0: timescale, then duration)."""
    out = bytearray(data)
    mvhd = _box(data, b"mvhd")
    timescale = struct.unpack_from(">I", out, mvhd + 4 + 4 + 8)[0]
    struct.pack_into(">I", out, mvhd + 4 + 4 + 12, seconds * timescale)
    return bytes(out)


def image_bytes(fmt: str, size: tuple[int, int] = (64, 64), noise: bool = False) -> bytes:
    buffer = io.BytesIO()
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise else Image.new("RGB", size, "tan")
    image.save(buffer, fmt)
    return buffer.getvalue()


def far_sof_jpeg_bomb(width: int, height: int) -> bytes:
    """A JPEG whose frame header comes after 70 KB of APP segments (past the API's head) and declares a huge size."""
    jpeg = bytearray(image_bytes("JPEG"))
    filler = b"".join(b"\xff\xe2" + struct.pack(">H", 35_002) + bytes(35_000) for _ in range(2))
    jpeg[2:2] = filler
    sof = jpeg.find(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, sof + 5, height, width)
    return bytes(jpeg)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("corpus")
    write_clip(tmp / "clip.mp4", width=64, height=48, frames=6)  # moov at the end
    remux_video(tmp / "clip.mp4", tmp / "fast.mp4")  # moov first
    write_clip(tmp / "tiny.mkv", codec="mpeg4", width=1, height=1, frames=3)
    write_clip(tmp / "tiny.mp4", codec="mpeg4", width=1, height=1, frames=3)
    write_video_track_without_frames(tmp / "zero.mkv")
    write_audio_only(tmp / "audio.mp4")
    write_audio_only(tmp / "audio.m4a")
    png_bomb(tmp / "bomb.png", 30_000, 30_000)
    clip, fast = (tmp / "clip.mp4").read_bytes(), (tmp / "fast.mp4").read_bytes()
    png, jpeg = image_bytes("PNG"), image_bytes("JPEG", (256, 256), noise=True)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("payload.txt", "a zip hidden behind a PNG")
    mdat = _box(fast, b"mdat")
    mdat_size = struct.unpack_from(">I", fast, mdat - 4)[0]
    garbage = fast[: mdat + 4] + os.urandom(mdat_size - 8) + fast[mdat + 4 + mdat_size - 8 :]
    return {
        "clip.mp4": clip,
        "face.png": png,
        "random.mp4": os.urandom(4096),
        "anim.gif": image_bytes("GIF"),
        "audio.m4a": (tmp / "audio.m4a").read_bytes(),
        "audio.mp4": (tmp / "audio.mp4").read_bytes(),
        "jpeg+mp4": jpeg + clip,
        "png+zip": png + zipped.getvalue(),
        "bomb.png": (tmp / "bomb.png").read_bytes(),
        "truncated.png": png[: len(png) // 2],
        "huge-frame.mp4": declare_size(clip, 60_000, 60_000),
        "huge-frame-faststart.mp4": declare_size(fast, 60_000, 60_000),
        "ten-hours.mp4": declare_duration(clip, 10 * 3600),
        "one-by-one.mkv": (tmp / "tiny.mkv").read_bytes(),
        "one-by-one.mp4": (tmp / "tiny.mp4").read_bytes(),
        "truncated.mp4": clip[: len(clip) // 2],
        "zero-frames.mkv": (tmp / "zero.mkv").read_bytes(),
        "garbage-frames.mp4": garbage,
        "mp4+zip": fast + zipped.getvalue(),  # a polyglot whose head and tail both pass the API's checks
        "truncated.jpg": jpeg[: len(jpeg) * 3 // 5],
        "far-sof-bomb.jpg": far_sof_jpeg_bomb(60_000, 60_000),
        "empty": b"",
    }


@pytest.fixture(scope="module")
def probing(make_stack: Callable[..., ServiceStack]) -> ServiceStack:
    return make_stack(restorer=PROBING)


def post(client: httpx.Client, video: bytes, reference: bytes) -> httpx.Response:
    return client.post("/v1/jobs", files=[("video", ("clip.mp4", video)), ("reference", ("face.png", reference))])


# ---------------------------------------------------------------------------------------------- at the API
# (video, reference, status, code, field)
REFUSED_AT_THE_API = [
    ("random.mp4", "face.png", 415, "unsupported_media_type", "video"),
    ("anim.gif", "face.png", 415, "unsupported_media_type", "video"),
    ("clip.mp4", "anim.gif", 415, "unsupported_media_type", "reference[0]"),
    ("audio.m4a", "face.png", 415, "unsupported_media_type", "video"),
    ("audio.mp4", "face.png", 422, "no_video_stream", "video"),
    ("jpeg+mp4", "face.png", 415, "unsupported_media_type", "video"),
    ("png+zip", "face.png", 415, "unsupported_media_type", "video"),
    ("clip.mp4", "png+zip", 422, "invalid_reference", "reference[0]"),
    ("clip.mp4", "truncated.png", 422, "invalid_reference", "reference[0]"),
    ("clip.mp4", "bomb.png", 413, "reference_too_large", "reference[0]"),
    ("huge-frame.mp4", "face.png", 422, "limit_exceeded", "video"),
    ("huge-frame-faststart.mp4", "face.png", 422, "limit_exceeded", "video"),
    ("ten-hours.mp4", "face.png", 422, "limit_exceeded", "video"),
    ("one-by-one.mkv", "face.png", 422, "video_too_small", "video"),
    ("one-by-one.mp4", "face.png", 422, "video_too_small", "video"),
    ("empty", "face.png", 422, "empty_file", "video"),
]


@pytest.mark.parametrize(
    ("video", "reference", "status", "code", "field"),
    REFUSED_AT_THE_API,
    ids=[f"{v}|{r}" for v, r, *_ in REFUSED_AT_THE_API],
)
def test_refused_at_the_api(
    probing: ServiceStack, corpus: dict[str, bytes], video: str, reference: str, status: int, code: str, field: str
) -> None:
    name, key = probing.new_tenant()
    with probing.client(key) as client:
        response = post(client, corpus[video], corpus[reference])
        assert response.status_code == status, response.text
        assert {k: response.json()["error"].get(k) for k in ("code", "field")} == {"code": code, "field": field}
        assert client.get("/v1/jobs").json()["data"] == []
    assert probing.objects(f"inputs/{name}/") == []


def test_presigned_uploads_get_the_same_header_checks(probing: ServiceStack, corpus: dict[str, bytes]) -> None:
    _, key = probing.new_tenant()
    with probing.client(key) as client:

        def upload(purpose: str, data: bytes) -> str:
            slot = client.post("/v1/uploads", json={"purpose": purpose, "size": len(data)}).json()
            assert httpx.put(slot["url"], content=data).status_code == 200
            return slot["id"]

        good_video, good_reference = upload("video", corpus["clip.mp4"]), upload("reference", corpus["face.png"])
        cases = [
            (upload("video", corpus["ten-hours.mp4"]), good_reference, 422, "limit_exceeded", "inputs.video"),
            (upload("video", corpus["audio.mp4"]), good_reference, 422, "no_video_stream", "inputs.video"),
            (good_video, upload("reference", corpus["bomb.png"]), 413, "reference_too_large", "inputs.references[0]"),
            (good_video, upload("reference", corpus["png+zip"]), 422, "invalid_reference", "inputs.references[0]"),
        ]
        for video, reference, status, code, field in cases:
            response = client.post("/v1/jobs", json={"inputs": {"video": video, "references": [reference]}})
            assert response.status_code == status, response.text
            assert (response.json()["error"]["code"], response.json()["error"]["field"]) == (code, field)


# ---------------------------------------------------------------------------------------------- in the worker
FAILED_IN_THE_WORKER = [
    ("truncated.mp4", "face.png", "invalid_video", "video"),
    ("zero-frames.mkv", "face.png", "empty_video", "video"),
    ("garbage-frames.mp4", "face.png", "invalid_video", "video"),
    ("clip.mp4", "truncated.jpg", "invalid_reference", "reference[0]"),
    ("clip.mp4", "far-sof-bomb.jpg", "reference_too_large", "reference[0]"),
]


def test_the_worker_fails_them_with_stable_codes_and_keeps_serving(
    probing: ServiceStack, corpus: dict[str, bytes]
) -> None:
    registry = WorkerRegistry(probing.redis, probing.settings.key_prefix)
    workers_before = {w.id for w in registry.list() if w.state is not WorkerState.FAILED}
    _, key = probing.new_tenant()
    with probing.client(key) as client:
        submitted = []
        for video, reference, code, field in FAILED_IN_THE_WORKER:
            response = post(client, corpus[video], corpus[reference])
            assert response.status_code == 202, f"{video}|{reference}: {response.text}"
            submitted.append((response.json()["id"], code, field, f"{video}|{reference}"))
        for job_id, code, field, label in submitted:
            job = probing.wait_job(client, job_id, {"succeeded", "failed", "canceled"}, timeout_s=30)
            assert job["status"] == "failed", f"{label}: {job}"
            assert (job["error"]["code"], job["error"].get("field")) == (code, field), label
            assert job["attempts"] == 1, f"{label}: the worker process died and the job was redelivered"
            # the message names the client's own file, never the worker's scratch file or folder
            message = job["error"]["message"]
            assert ("clip.mp4" if field == "video" else "face.png") in message, f"{label}: {message}"
            assert "input-video" not in message and "reference-0" not in message, f"{label}: {message}"
            assert str(probing.settings.work_dir) not in message, f"{label}: {message}"
        clean = post(client, corpus["clip.mp4"], corpus["face.png"]).json()
        done = probing.wait_job(client, clean["id"], {"succeeded", "failed"}, timeout_s=30)
        assert done["status"] == "succeeded", done
        assert httpx.get(done["output"]["video_url"]).content == corpus["clip.mp4"]
    workers_after = {w.id for w in registry.list()}
    assert workers_before and workers_before == workers_after  # same pool process, never restarted


@pytest.fixture(scope="module")
def real(make_stack: Callable[..., ServiceStack]) -> ServiceStack:
    """A stack whose worker runs the production restorer (the library, the default face backend)."""
    return make_stack(restorer="worker.restorer:load_restorer", ready_timeout_s=180)


@pytest.mark.slow
def test_the_real_restorer_fails_them_with_stable_codes_and_keeps_serving(
    real: ServiceStack,
    corpus: dict[str, bytes],
    astronaut_png: Path,
) -> None:
    face = astronaut_png.read_bytes()  # a real face: the reference is accepted, so the video is what fails
    registry = WorkerRegistry(real.redis, real.settings.key_prefix)
    workers_before = {w.id for w in registry.list() if w.state is not WorkerState.FAILED}
    # None: it succeeds. The polyglot is read as its MP4 (the zip behind it is never looked at): six
    # pattern frames with nobody in them, copied unchanged with a warning.
    cases = {
        "truncated.mp4": "invalid_video",
        "zero-frames.mkv": "empty_video",
        "garbage-frames.mp4": "invalid_video",
        "mp4+zip": None,
    }
    _, key = real.new_tenant()
    with real.client(key) as client:
        submitted = {}
        for video in cases:
            response = post(client, corpus[video], face)
            assert response.status_code == 202, f"{video}: {response.text}"
            submitted[video] = response.json()["id"]
        for video, code in cases.items():
            job = real.wait_job(client, submitted[video], {"succeeded", "failed", "canceled"}, timeout_s=120)
            assert job["attempts"] == 1, f"{video}: the worker process died and the job was redelivered"
            if code is None:
                report = job["output"]["report"]
                assert job["status"] == "succeeded" and report["output"]["frames"] == 6, f"{video}: {job}"
                assert report["warnings"] == ["no face was found in the video; frames were copied unchanged"]
                continue
            assert job["status"] == "failed" and job["error"]["code"] == code, f"{video}: {job}"
            assert job["error"]["field"] == "video" and "clip.mp4" in job["error"]["message"], job["error"]
    assert workers_before and workers_before == {w.id for w in registry.list()}  # never restarted


# ---------------------------------------------------------------------------------------------- the parsers
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["clip.mp4", "huge-frame-faststart.mp4", "zero-frames.mkv", "face.png", "truncated.jpg"]),
    cut=st.integers(0, 4096),
    flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=16),
)
def test_header_parsers_survive_damaged_headers(
    corpus: dict[str, bytes], name: str, cut: int, flips: list[tuple[int, int]]
) -> None:
    """Truncated and bit-flipped headers give "unknown" or a service error, never a crash."""
    data = bytearray(corpus[name][:cut] if cut else corpus[name])
    for offset, value in flips:
        if offset < len(data):
            data[offset] = value
    head, tail = bytes(data[:HEAD_BYTES]), bytes(data[-TAIL_BYTES:])
    read_isobmff(head, tail)
    read_matroska(head)
    read_image_header(head)
    for kind, media_type in ((Kind.VIDEO, "video/mp4"), (Kind.VIDEO, "video/x-matroska"), (Kind.IMAGE, "image/png")):
        try:
            check_upload(kind, media_type, head, tail, LIMITS, "file")
        except ServiceError as exc:
            assert exc.code in {
                "limit_exceeded",
                "video_too_small",
                "no_video_stream",
                "invalid_reference",
                "reference_too_large",
            }
