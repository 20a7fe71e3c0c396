"""The `ipfvr` command on bad input: one line on stderr, exit 2, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import av
import numpy as np
import pytest

from media_factory import first_frames, remux_prefix

ROOT = Path(__file__).resolve().parents[1]


def ipfvr(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ipfvr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def assert_clean_failure(result: subprocess.CompletedProcess, code: str, *outputs: Path) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("ipfvr: error: ") and lines[0].endswith(f"[{code}]"), lines[0]
    for out in outputs:
        assert not out.exists(), f"{out} was written"


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG that claims width×height (a decompression bomb when large), with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory, carphone_distorted) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    data = carphone_distorted.read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 20)
    (d / "random.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "notimage.png").write_text("not an image")
    _png_header_only(d / "bomb.png", 30000, 30000)
    _audio_only(d / "audio.m4a")
    from PIL import Image

    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(d / "noface.png")
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.parametrize(
    "video, code",
    [
        ("empty", "empty_video"),
        ("text", "invalid_video"),
        ("random", "invalid_video"),
        ("truncated", "invalid_video"),
        ("audio", "no_video_stream"),
    ],
)
def test_bad_video(bad, video, code, carphone_reference, tmp_path):
    out = tmp_path / "out.mp4"
    r = ipfvr("restore", bad[video], "-r", carphone_reference, "-o", out, "--report", tmp_path / "r.json")
    assert_clean_failure(r, code, out, tmp_path / "r.json")
    assert r.stderr.startswith("ipfvr: error: video: "), r.stderr  # the field at fault


@pytest.mark.parametrize(
    "reference, code",
    [("notimage", "invalid_reference"), ("bomb", "reference_too_large"), ("noface", "no_face_in_reference")],
)
def test_bad_reference(bad, reference, code, carphone_distorted, tmp_path):
    out = tmp_path / "out.mp4"
    r = ipfvr("restore", carphone_distorted, "-r", bad[reference], "-o", out, "--quiet")
    assert_clean_failure(r, code, out)
    assert bad[reference].name in r.stderr, "the message must name the file"


def test_bad_reference_with_progress_bars_shows_only_the_error(bad, carphone_distorted, tmp_path):
    """Without --quiet the references bar has started when the photo is refused; its line is wiped."""
    out = tmp_path / "out.mp4"
    r = subprocess.run(
        [sys.executable, "-m", "ipfvr", "restore", str(carphone_distorted), "-r", str(bad["noface"]), "-o", str(out)],
        capture_output=True,
        timeout=300,
        cwd=ROOT,
    )  # bytes: keep the \r
    stderr = r.stderr.decode()
    # what a terminal shows: each line ends as its last carriage-return segment left it
    visible = [line.split("\r")[-1] for line in stderr.split("\n") if line.split("\r")[-1].strip()]
    assert r.returncode == 2 and len(visible) == 1, repr(stderr)
    assert visible[0].startswith("ipfvr: error: ") and visible[0].endswith("[no_face_in_reference]")


def test_limits(carphone_distorted, carphone_reference, tmp_path):
    out = tmp_path / "out.mp4"
    r = ipfvr("restore", carphone_distorted, "-r", carphone_reference, "-o", out, "--max-duration", "2")
    assert_clean_failure(r, "limit_exceeded", out)
    r = ipfvr("restore", carphone_distorted, "-r", carphone_reference, "-o", out, "--max-side", "160")
    assert_clean_failure(r, "limit_exceeded", out)


def test_unwritable_output(carphone_distorted, carphone_reference, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = ipfvr("restore", carphone_distorted, "-r", carphone_reference, "-o", blocker / "out.mp4")
    assert_clean_failure(r, "output_not_writable")
    r = ipfvr("restore", carphone_distorted, "-r", carphone_reference, "-o", tmp_path / "missing" / "out.mp4")
    assert_clean_failure(r, "output_not_writable")


def test_missing_input_file(carphone_reference, tmp_path):
    r = ipfvr("restore", tmp_path / "nope.mp4", "-r", carphone_reference, "-o", tmp_path / "o.mp4")
    assert_clean_failure(r, "invalid_video", tmp_path / "o.mp4")


def _probe(path: Path):
    from ipfvr_core.video_io import probe

    return probe(path)


@pytest.mark.slow
def test_ipfvr_engine_with_tiny_weights_restores_carphone(carphone_distorted, carphone_reference, tmp_path):
    weights = tmp_path / "tiny"
    r = ipfvr("weights", "init-tiny", weights)
    assert r.returncode == 0, r.stderr
    assert (weights / "ipfvr" / "config.json").is_file() and (weights / "unet").is_dir()
    # no library chatter; one warning that the weights are random
    assert r.stderr.strip().splitlines() == [
        "warning: its weights are random: it tests the plumbing and restores nothing"
    ], r.stderr
    r = ipfvr("weights", "check", weights)
    assert r.returncode == 0 and json.loads(r.stdout)["engine"] == "ipfvr"
    assert r.stderr.strip().splitlines() == [
        "warning: the weights in tiny are random test weights (ipfvr weights init-tiny): the output is noise "
        "pasted on the faces, not a restoration"
    ], r.stderr
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    clip = first_frames(carphone_distorted, tmp_path / "clip.mp4", 40)  # two 24-frame clips with their overlap
    r = ipfvr(
        "restore",
        clip,
        "-r",
        carphone_reference,
        "-o",
        out,
        "--engine",
        "ipfvr",
        "--weights",
        weights,
        "--report",
        report,
        "--seed",
        "1",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    src, dst = _probe(clip), _probe(out)
    assert (dst.frame_count, dst.fps, dst.width, dst.height) == (src.frame_count, src.fps, src.width, src.height)
    assert abs(dst.duration_s - src.duration_s) < 1 / float(src.fps) + 1e-6
    data = json.loads(report.read_text())
    assert data["versions"]["engine"] == "ipfvr" and data["frames_restored"] >= 32
    assert any("random test weights" in w for w in data["warnings"]), data["warnings"]
    assert "identity distance to reference" in r.stdout


def test_ipfvr_engine_needs_weights(carphone_distorted, carphone_reference, tmp_path):
    r = ipfvr("restore", carphone_distorted, "-r", carphone_reference, "-o", tmp_path / "o.mp4", "--engine", "ipfvr")
    assert_clean_failure(r, "weights_invalid", tmp_path / "o.mp4")
    r = ipfvr(
        "restore",
        carphone_distorted,
        "-r",
        carphone_reference,
        "-o",
        tmp_path / "o.mp4",
        "--engine",
        "ipfvr",
        "--weights",
        tmp_path,
    )
    assert_clean_failure(r, "weights_invalid", tmp_path / "o.mp4")


@pytest.mark.slow
def test_audio_is_kept_and_timing_matches(bigbuckbunny, carphone_reference, tmp_path):
    """bigbuckbunny (1280x720, h264 + AAC) has no human face: the default detector's weak hits on
    the cartoon never make a face track (its track-score floor), every frame passes through, and
    the output keeps frame count, rate, duration and the AAC track. Its first 2 s, stream-copied."""
    bigbuckbunny = remux_prefix(bigbuckbunny, tmp_path / "bbb_2s.mp4", 2.0)
    out, report = tmp_path / "bbb.mp4", tmp_path / "bbb.json"
    r = ipfvr("restore", bigbuckbunny, "-r", carphone_reference, "-o", out, "--report", report, "--quiet")
    assert r.returncode == 0, r.stderr
    src, dst = _probe(bigbuckbunny), _probe(out)
    assert src.has_audio and dst.has_audio and dst.audio_codec == src.audio_codec == "aac"
    assert (dst.frame_count, dst.fps, dst.width, dst.height) == (src.frame_count, src.fps, 1280, 720)
    assert abs(dst.duration_s - src.duration_s) < 0.05
    data = json.loads(report.read_text())
    assert data["frames_restored"] == 0 and data["versions"]["face_backend"] == "centerface"
    assert any("only weak detections" in w for w in data["warnings"]), data["warnings"]
    with av.open(str(bigbuckbunny)) as a, av.open(str(out)) as b:
        pa = [bytes(p) for p in a.demux(audio=0) if p.size]
        pb = [bytes(p) for p in b.demux(audio=0) if p.size]
    assert pb == pa[: len(pb)] and len(pb) >= len(pa) - 1, "AAC packets are copied, not re-encoded"
