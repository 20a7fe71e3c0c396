"""Tests of ipfvr_core.video_io's reading side (probe, decode, limits, bad input) on real and generated videos."""

from __future__ import annotations

import gc
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import media_factory as mf
from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.video_io import (
    VideoLimits,
    VideoWriter,
    iter_frames,
    probe,
)

# ---------------------------------------------------------------------------------------------- probe


def test_probe_reports_carphone_exactly() -> None:
    info = probe(mf.sample_video("carphone_distorted.mp4"))
    assert (info.width, info.height, info.coded_width, info.coded_height) == (176, 144, 176, 144)
    assert info.rotation == 0
    assert info.fps == Fraction(30000, 1001)
    assert info.time_base == Fraction(1, 30000)
    assert info.frame_count == 120
    assert info.duration_s == pytest.approx(4.004)
    assert info.variable_frame_rate is False
    assert info.codec == "h264"
    assert (info.has_audio, info.audio_codec) == (False, None)


def test_probe_reports_audio_of_bigbuckbunny() -> None:
    info = probe(mf.sample_video("bigbuckbunny.mp4"))
    assert (info.width, info.height, info.fps, info.frame_count) == (1280, 720, Fraction(25), 132)
    assert (info.has_audio, info.audio_codec) == (True, "aac")


def _cut_at_frame(path: Path, frames: int = 100, cut: int = 60) -> Path:
    """An mp4 of ``frames`` frames whose bytes end where frame ``cut`` begins; its index (written first) is intact."""
    base = mf.pattern_frame(0, 96, 64)
    with VideoWriter(path, width=96, height=64, fps=Fraction(25), preset="ultrafast") as writer:
        for i in range(frames):
            writer.write(np.roll(base, 3 * i, axis=1))
    with av.open(str(path)) as container:
        positions = sorted(p.pos for p in container.demux(video=0) if p.size)
    path.write_bytes(path.read_bytes()[: positions[cut]])
    return path


def test_probe_decodes_one_frame_not_the_video(tmp_path: Path) -> None:
    # Decoding the whole file would meet the cut (iteration does, below); probe reads the index and
    # decodes the first frame only, so it succeeds.
    path = _cut_at_frame(tmp_path / "cut.mp4")
    info = probe(path)
    assert info.frame_count == 100 and (info.width, info.height) == (96, 64)
    with pytest.raises(InputError) as cut:
        for _ in iter_frames(path, info):
            pass
    assert cut.value.code == "invalid_video"


@pytest.mark.parametrize(
    ("suffix", "encoder", "decoder"),
    [
        (".mp4", "libx264", "h264"),
        (".mov", "libx264", "h264"),
        (".mkv", "libx264", "h264"),
        (".mp4", "mpeg4", "mpeg4"),
        (".mp4", "libx265", "hevc"),
        (".mkv", "libx265", "hevc"),
        (".webm", "libvpx-vp9", "vp9"),
        (".mkv", "libvpx-vp9", "vp9"),
    ],
)
def test_decodes_each_container_and_codec(tmp_path: Path, suffix: str, encoder: str, decoder: str) -> None:
    mf.require_codec(encoder, "w")
    mf.require_codec(decoder, "r")
    path = tmp_path / f"clip{suffix}"
    originals = mf.write_clip(path, codec=encoder, frames=8)
    info = probe(path)
    assert (info.width, info.height, info.codec, info.rotation) == (96, 64, decoder, 0)
    assert info.fps == Fraction(25)
    assert info.frame_count == 8
    frames = list(iter_frames(path, info))
    assert [f.index for f in frames] == list(range(8))
    for frame, original in zip(frames, originals, strict=True):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (64, 96, 3)
        assert frame.image.flags.c_contiguous
        error = np.abs(frame.image.astype(np.int16) - original.astype(np.int16)).mean()
        assert error < 12, f"frame {frame.index} differs by {error:.1f} on average"
    assert [f.time_s for f in frames] == pytest.approx([i / 25 for i in range(8)], abs=1e-3)


# ---------------------------------------------------------------------------------------------- memory


def test_iteration_holds_one_frame_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    width, height, count = 480, 360, 200
    base = mf.pattern_frame(0, width, height)
    with VideoWriter(path, width=width, height=height, fps=Fraction(30), preset="ultrafast") as writer:
        for i in range(count):
            writer.write(np.roll(base, 2 * i, axis=1))
    info = probe(path)

    # Nothing the iterator yielded stays referenced once the caller drops it.
    previous: weakref.ref[np.ndarray] | None = None
    for frame in iter_frames(path, info):
        if previous is not None:
            assert previous() is None, f"frame {frame.index - 1} is still referenced"
        previous = weakref.ref(frame.image)
        del frame
    gc.collect()


def test_iter_frames_is_lazy(tmp_path: Path) -> None:
    # A file cut short at frame 60: an iterator that read ahead would fail before yielding; a lazy
    # one yields the first frame, then fails at the cut.
    path = _cut_at_frame(tmp_path / "clip.mp4")
    info = probe(path)
    frames = iter_frames(path, info)
    first = next(frames)
    assert first.index == 0 and np.array_equal(first.image.shape, (64, 96, 3))
    with pytest.raises(InputError) as cut:
        for _ in frames:
            pass
    assert cut.value.code == "invalid_video"


# ---------------------------------------------------------------------------------------------- bad inputs


def _expect(code: str, path: Path, limits: VideoLimits | None = None, field: str = "video") -> InputError:
    with pytest.raises(InputError) as caught:
        probe(path, limits, field=field)
    assert caught.value.code == code, caught.value
    assert caught.value.field == field
    return caught.value


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    _expect("empty_video", path)


def test_video_track_without_frames_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "noframes.mkv"
    mf.write_video_track_without_frames(path)
    _expect("empty_video", path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("random.mp4", np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()),
        ("notes.txt", b"this is a text file, not a video\n" * 20),
        ("notes.mp4", b"this is a text file, not a video\n" * 20),
    ],
)
def test_non_media_is_invalid(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    error = _expect("invalid_video", path, field="input")
    assert name in error.message


def test_missing_file_is_invalid(tmp_path: Path) -> None:
    _expect("invalid_video", tmp_path / "absent.mp4")


@pytest.mark.parametrize("keep", [0.3, 0.5])
def test_truncated_carphone_is_invalid(tmp_path: Path, keep: float) -> None:
    """carphone keeps its moov atom at the end: any cut loses it."""
    path = mf.truncated_copy(mf.sample_video("carphone_distorted.mp4"), tmp_path / "cut.mp4", keep)
    _expect("invalid_video", path)


def test_truncated_before_the_first_frame_is_invalid(tmp_path: Path) -> None:
    """moov first (faststart), media data cut inside the first frame: the header alone looks fine."""
    faststart = tmp_path / "faststart.mp4"
    mf.remux_video(mf.sample_video("carphone_distorted.mp4"), faststart)
    boxes = {kind: (offset, size) for kind, offset, size in mf.top_level_boxes(faststart.read_bytes())}
    assert boxes[b"moov"][0] < boxes[b"mdat"][0]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: boxes[b"mdat"][0] + 8 + 600])  # the first frame is ~1 kB
    with av.open(str(cut)) as container:
        assert container.streams.video[0].frames == 120  # the index still promises every frame
    error = _expect("invalid_video", cut)
    assert "first frame" in error.message


def _sample_extent(path: Path, sample: int) -> tuple[int, int]:
    """Byte offset and size of one video sample, from the mp4 sample index."""
    with av.open(str(path)) as container:
        entry = container.streams.video[0].index_entries[sample]
        return entry.pos, entry.size


@pytest.mark.parametrize(
    ("where", "reason"),
    [("inside", "a packet is cut short"), ("after", "the file ends after 61 of the 120 frames")],
)
def test_truncated_later_passes_probe_then_fails_while_iterating(tmp_path: Path, where: str, reason: str) -> None:
    faststart = tmp_path / "faststart.mp4"
    mf.remux_video(mf.sample_video("carphone_distorted.mp4"), faststart)
    pos, size = _sample_extent(faststart, 60)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: pos + (size // 2 if where == "inside" else size)])
    info = probe(cut)
    assert info.frame_count == 120
    seen = 0
    with pytest.raises(InputError) as caught:
        for _ in iter_frames(cut, info):
            seen += 1
    assert caught.value.code == "invalid_video"
    assert 40 < seen < 62
    assert f"after {seen} frames" in caught.value.message
    assert reason in caught.value.message


def test_truncated_matroska_fails_while_iterating(tmp_path: Path) -> None:
    """Matroska has no per-frame index; its DURATION tag shows the frames stop early."""
    whole = tmp_path / "whole.mkv"
    mf.remux_video(mf.sample_video("carphone_pristine.mp4"), whole)
    assert sum(1 for _ in iter_frames(whole)) == 120
    cut = mf.truncated_copy(whole, tmp_path / "cut.mkv", 0.5)
    info = probe(cut)
    assert info.duration_s == pytest.approx(4.004)
    with pytest.raises(InputError) as caught:
        for _ in iter_frames(cut, info):
            pass
    assert caught.value.code == "invalid_video"
    assert "of a 4.00 s video track" in caught.value.message


@pytest.mark.parametrize(("name", "codec"), [("tone.m4a", "aac"), ("tone.wav", "pcm_s16le")])
def test_audio_only_file_has_no_video_stream(tmp_path: Path, name: str, codec: str) -> None:
    path = tmp_path / name
    mf.write_audio_only(path, codec)
    error = _expect("no_video_stream", path)
    assert "audio" in error.message


def test_cover_art_is_not_a_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "song.mp4"
    mf.write_audio_with_cover_art(path)
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1  # the picture is demuxed as a video stream
    assert "cover art" in _expect("no_video_stream", path).message


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        (VideoLimits(max_width=100), "max_width=100"),
        (VideoLimits(max_height=100), "max_height=100"),
        (VideoLimits(max_pixels=176 * 144 - 1), "max_pixels=25343"),
        (VideoLimits(max_duration_s=2.0), "max_duration_s=2.0"),
        (VideoLimits(max_frames=119), "max_frames=119"),
    ],
)
def test_limits_are_enforced_and_named(limits: VideoLimits, named: str) -> None:
    source = mf.sample_video("carphone_distorted.mp4")
    error = _expect("limit_exceeded", source, limits)
    assert named in error.message
    probe(source, VideoLimits(max_width=176, max_height=144, max_pixels=176 * 144, max_duration_s=4.1, max_frames=120))


def test_size_limits_apply_to_the_upright_picture(tmp_path: Path) -> None:
    path = tmp_path / "portrait.mp4"
    mf.write_clip(path, frames=2, width=96, height=64)
    mf.set_track_matrix(path, [0, 1 << 16, 0, -(1 << 16), 0, 0, 64 << 16, 0, 1 << 30])
    assert probe(path, VideoLimits(max_width=64, max_height=96)).width == 64
    assert "max_height=80" in _expect("limit_exceeded", path, VideoLimits(max_width=64, max_height=80)).message


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError) as caught:
        VideoLimits(max_frames=0)
    assert caught.value.field == "max_frames"
