"""Tests of ipfvr_core.video_io's writing side (round trips, audio, rotation, output paths) with PyAV clips."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import media_factory as mf
from ipfvr_core.errors import InputError, OutputError
from ipfvr_core.video_io import (
    VideoInfo,
    VideoWriter,
    check_output_path,
    even_size,
    iter_frames,
    probe,
    rotate_upright,
)


def decoded_times(path: Path) -> list[Fraction]:
    """Presentation times (seconds, exact) of every frame of ``path``, read with PyAV directly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.pts * stream.time_base for frame in container.decode(stream)]


def audio_packets(path: Path, limit: int | None = None) -> list[tuple[Fraction, bytes]]:
    """(start time in seconds, payload) of the audio packets of ``path``, in order."""
    packets = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets.append((packet.pts * packet.time_base, bytes(packet)))
            if limit is not None and len(packets) == limit:
                break
    return packets


def round_trip(source: Path, target: Path, *, frames: int | None = None, **writer_options: object) -> VideoInfo:
    """Decode ``source`` with iter_frames and write it with VideoWriter at the same timestamps."""
    info = probe(source)
    with VideoWriter(
        target, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base, **writer_options
    ) as writer:
        for frame in iter_frames(source, info):
            if frames is not None and frame.index == frames:
                break
            writer.write(frame.image, frame.pts)
    return info


# ---------------------------------------------------------------------------------------------- round trips


def test_carphone_round_trip_keeps_count_rate_duration_and_pts(tmp_path: Path) -> None:
    source = mf.sample_video("carphone_distorted.mp4")
    target = tmp_path / "out.mp4"
    info = round_trip(source, target, preset="veryfast")
    out = probe(target)
    assert out.frame_count == 120
    assert out.fps == Fraction(30000, 1001)
    assert abs(out.duration_s - info.duration_s) <= 1 / float(info.fps)
    assert [f.pts for f in iter_frames(target)] == [f.pts for f in iter_frames(source, info)]
    assert decoded_times(target) == decoded_times(source)
    errors = [
        np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)).mean()
        for a, b in zip(iter_frames(source, info), iter_frames(target, out), strict=True)
    ]
    assert max(errors) < 4, f"re-encoding changed the picture by up to {max(errors):.2f} on average"


def test_colours_survive_a_round_trip_and_are_tagged_bt709(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 120, 40), (30, 30, 30), (240, 240, 240)]
    image = np.zeros((64, 64 * len(colours), 3), np.uint8)  # (H, W, 3)
    for i, colour in enumerate(colours):
        image[:, i * 64 : (i + 1) * 64] = colour
    target = tmp_path / "colours.mp4"
    with VideoWriter(target, width=image.shape[1], height=64, fps=Fraction(25), crf=0, preset="ultrafast") as writer:
        for _ in range(3):
            writer.write(image)
    decoded = next(iter_frames(target)).image
    centres = [tuple(int(v) for v in decoded[32, i * 64 + 32]) for i in range(len(colours))]
    for got, want in zip(centres, colours, strict=True):
        assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 3, f"{want} came back as {got}"
    with av.open(str(target)) as container:
        frame = next(container.decode(video=0))
        assert (frame.colorspace, frame.color_range) == (1, 1)  # AVCOL_SPC_BT709, AVCOL_RANGE_MPEG


def test_frames_without_pts_are_spaced_one_over_fps(tmp_path: Path) -> None:
    target = tmp_path / "cfr.mov"
    fps = Fraction(30000, 1001)
    with VideoWriter(target, width=96, height=64, fps=fps, preset="ultrafast") as writer:
        for i in range(12):
            writer.write(mf.pattern_frame(i, 96, 64))
        assert writer.frames_written == 12
    info = probe(target)
    assert (info.fps, info.frame_count, info.variable_frame_rate) == (fps, 12, False)
    assert decoded_times(target) == [i / fps for i in range(12)]


def test_variable_frame_rate_timestamps_survive_exactly(tmp_path: Path) -> None:
    source = tmp_path / "vfr.mp4"
    time_base = Fraction(1, 1000)
    pts = [0, 33, 70, 95, 140, 200, 210, 251, 300, 377, 400, 433]
    mf.write_clip(source, frames=len(pts), time_base=time_base, pts=pts)
    info = probe(source)
    assert info.variable_frame_rate is True
    assert [f.time_s for f in iter_frames(source, info)] == pytest.approx([p / 1000 for p in pts])
    target = tmp_path / "vfr_out.mp4"
    round_trip(source, target, preset="ultrafast")
    assert decoded_times(target) == [p * time_base for p in pts]
    assert probe(target).variable_frame_rate is True


def test_variable_frame_rate_is_detected_without_an_index(tmp_path: Path) -> None:
    vfr, cfr = tmp_path / "vfr.mkv", tmp_path / "cfr.mkv"
    irregular = [0, 33, 70, 95, 140, 200, 210, 251, 300, 377, 400, 433]
    mf.write_clip(vfr, frames=len(irregular), time_base=Fraction(1, 1000), pts=irregular)
    mf.write_clip(cfr, frames=12, rate=Fraction(30000, 1001))
    assert probe(vfr).variable_frame_rate is True
    assert probe(cfr).variable_frame_rate is False  # 33/34 ms intervals are rounding, not VFR


def test_mkv_output_keeps_millisecond_timestamps(tmp_path: Path) -> None:
    source = mf.sample_video("carphone_distorted.mp4")
    target = tmp_path / "out.mkv"
    round_trip(source, target, frames=30, preset="ultrafast")
    assert probe(target).frame_count == 30
    for got, want in zip(decoded_times(target), decoded_times(source)[:30], strict=True):
        assert abs(got - want) <= Fraction(1, 1000)


# ---------------------------------------------------------------------------------------------- audio


def test_audio_is_copied_unchanged_and_trimmed_to_the_video_end(tmp_path: Path) -> None:
    source = mf.sample_video("bigbuckbunny.mp4")
    target = tmp_path / "bbb.mp4"
    round_trip(source, target, frames=50, preset="ultrafast", audio_from=source)  # 2 s of video at 25 fps
    info = probe(target)
    assert (info.frame_count, info.has_audio, info.audio_codec) == (50, True, "aac")
    video_end = Fraction(50, 25)
    copied = audio_packets(target)
    original = audio_packets(source, limit=len(copied) + 1)
    assert copied == original[: len(copied)], "audio packets were altered"
    packet_s = Fraction(1024, 48000)
    assert copied[-1][0] < video_end <= copied[-1][0] + packet_s, "audio must end with the packet at the video end"
    assert original[len(copied)][0] >= video_end, "a packet starting before the video end was dropped"


def test_audio_is_interleaved_while_writing(tmp_path: Path) -> None:
    """The muxer holds packets until every stream has some: audio fed as frames arrive lets it write."""
    source = mf.sample_video("bigbuckbunny.mp4")
    info = probe(source)
    with VideoWriter(
        tmp_path / "bbb.mp4",
        width=info.width,
        height=info.height,
        fps=info.fps,
        time_base=info.time_base,
        preset="ultrafast",
        audio_from=source,
    ) as writer:
        assert writer.has_audio
        for frame in iter_frames(source, info):
            writer.write(frame.image, frame.pts)
            if frame.index == 59:
                break
        partial = [p.stat().st_size for p in tmp_path.glob(".bbb.mp4.*.part")]
        assert len(partial) == 1
        assert partial[0] > 500_000, f"only {partial[0]} bytes reached the file after 60 frames"


def test_audio_source_without_audio_gives_a_silent_video(tmp_path: Path) -> None:
    source = mf.sample_video("carphone_distorted.mp4")
    target = tmp_path / "out.mp4"
    round_trip(source, target, frames=10, preset="ultrafast", audio_from=source)
    assert probe(target).has_audio is False


def test_audio_codec_the_container_cannot_hold_is_refused_up_front(tmp_path: Path) -> None:
    mf.require_codec("pcm_mulaw", "w")
    tone = tmp_path / "tone.wav"
    mf.write_audio_only(tone, "pcm_mulaw")
    with pytest.raises(OutputError) as caught:
        VideoWriter(tmp_path / "out.mp4", width=96, height=64, fps=Fraction(25), audio_from=tone, field="result")
    assert (caught.value.code, caught.value.field) == ("output_not_writable", "result")
    assert "pcm_mulaw" in caught.value.message
    assert list(tmp_path.iterdir()) == [tone]
    target = tmp_path / "out.mov"  # QuickTime stores mu-law
    with VideoWriter(target, width=96, height=64, fps=Fraction(25), preset="ultrafast", audio_from=tone) as writer:
        for i in range(5):
            writer.write(mf.pattern_frame(i, 96, 64))
    assert (probe(target).audio_codec, len(audio_packets(target)) > 0) == ("pcm_mulaw", True)


# ---------------------------------------------------------------------------------------------- rotation


def test_phone_portrait_matrix_is_applied_clockwise(tmp_path: Path) -> None:
    """A phone's portrait recording stores landscape frames with tkhd matrix (0 1 / -1 0): turn 90° clockwise."""
    path = tmp_path / "portrait.mp4"
    originals = mf.write_clip(path, frames=4, width=96, height=64)
    mf.set_track_matrix(path, [0, 1 << 16, 0, -(1 << 16), 0, 0, 64 << 16, 0, 1 << 30])
    info = probe(path)
    assert (info.rotation, info.width, info.height, info.coded_width, info.coded_height) == (90, 64, 96, 96, 64)
    frames = list(iter_frames(path, info))
    assert all(f.image.shape == (96, 64, 3) and f.image.flags.c_contiguous for f in frames)
    first = frames[0].image
    assert first[:8, -8:].min() > 235, "the top-left marker must end up top-right"
    assert first[:8, :8].mean() < 200
    expected = np.rot90(originals[0], k=-1)  # clockwise
    assert np.abs(first.astype(np.int16) - expected.astype(np.int16)).mean() < 8


@pytest.mark.parametrize(
    ("suffix", "ccw", "tags", "clockwise"),
    [
        (".mp4", 90, None, 270),
        (".mp4", 180, None, 180),
        (".mp4", -90, None, 90),
        (".mkv", -90, None, 90),
        (".mkv", None, {"rotate": "90"}, 90),  # the clockwise tag older FFmpeg copied into remuxes
    ],
)
def test_rotation_metadata_round_trips(
    tmp_path: Path, suffix: str, ccw: int | None, tags: dict[str, str] | None, clockwise: int
) -> None:
    path = tmp_path / f"rotated{suffix}"
    originals = mf.write_clip(path, frames=3, width=96, height=64, display_rotation_ccw=ccw, metadata=tags)
    info = probe(path)
    assert info.rotation == clockwise
    image = next(iter_frames(path, info)).image
    errors = {
        turn: np.abs(image.astype(np.int16) - rotate_upright(originals[0], turn).astype(np.int16)).mean()
        for turn in (0, 90, 180, 270)
        if rotate_upright(originals[0], turn).shape == image.shape
    }
    assert min(errors, key=errors.__getitem__) == clockwise, errors
    # The written file is upright and carries no rotation any more.
    target = tmp_path / "upright.mp4"
    round_trip(path, target, preset="ultrafast")
    assert probe(target).rotation == 0
    assert next(iter_frames(target)).image.shape == image.shape


def test_rotate_upright_turns_clockwise() -> None:
    image = np.arange(6).reshape(2, 3)  # (H=2, W=3)
    assert rotate_upright(image, 90).tolist() == [[3, 0], [4, 1], [5, 2]]
    assert rotate_upright(image, 270).tolist() == [[2, 5], [1, 4], [0, 3]]
    assert rotate_upright(image, 0).tolist() == image.tolist()
    with pytest.raises(ValueError, match="multiple of 90"):
        rotate_upright(image, 45)


# ---------------------------------------------------------------------------------------------- output


def test_check_output_path_accepts_writable_video_paths(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.MOV", "c.mkv"):
        assert check_output_path(tmp_path / name) == tmp_path / name
    assert list(tmp_path.iterdir()) == [], "the writability check must leave nothing behind"


@pytest.mark.parametrize("case", ["missing_dir", "parent_is_file", "proc", "is_dir"])
def test_unwritable_outputs_are_refused(tmp_path: Path, case: str) -> None:
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    (tmp_path / "taken.mp4").mkdir()
    target = {
        "missing_dir": tmp_path / "nope" / "out.mp4",
        "parent_is_file": regular / "out.mp4",
        "proc": Path("/proc/out.mp4"),
        "is_dir": tmp_path / "taken.mp4",
    }[case]
    for attempt in (
        lambda: check_output_path(target, field="output_path"),
        lambda: VideoWriter(target, width=64, height=64, fps=Fraction(25), field="output_path"),
    ):
        with pytest.raises(OutputError) as caught:
            attempt()
        assert (caught.value.code, caught.value.field) == ("output_not_writable", "output_path")
        assert "\n" not in caught.value.message


def test_unsupported_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        check_output_path(tmp_path / "out.avi")
    assert (caught.value.code, caught.value.field) == ("invalid_option", "output")


def test_exception_inside_with_leaves_nothing_at_path(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(fresh, width=96, height=64, fps=Fraction(25), preset="ultrafast") as writer:
            for i in range(5):
                writer.write(mf.pattern_frame(i, 96, 64))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(existing, width=96, height=64, fps=Fraction(25), preset="ultrafast") as writer:
            writer.write(mf.pattern_frame(0, 96, 64))
            raise RuntimeError("boom")
    assert existing.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [existing]


def test_output_appears_only_on_close(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    with VideoWriter(target, width=96, height=64, fps=Fraction(25), preset="ultrafast") as writer:
        writer.write(mf.pattern_frame(0, 96, 64))
        assert not target.exists()
    assert probe(target).frame_count == 1
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    kinds = [kind for kind, _, _ in mf.top_level_boxes(target.read_bytes())]
    assert kinds.index(b"moov") < kinds.index(b"mdat"), "mp4 output must start playing before it is fully downloaded"


def test_closing_without_frames_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match="no frame"):
        with VideoWriter(target, width=96, height=64, fps=Fraction(25)):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"crf": 52}, "crf"),
        ({"crf": -1}, "crf"),
        ({"crf": 18.5}, "crf"),
        ({"preset": "warp"}, "preset"),
        ({"width": 95}, "width"),
        ({"height": 63}, "height"),
        ({"fps": Fraction(0)}, "fps"),
    ],
)
def test_encoder_options_are_validated(tmp_path: Path, options: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"width": 96, "height": 64, "fps": Fraction(25), **options}
    with pytest.raises(InputError) as caught:
        VideoWriter(tmp_path / "out.mp4", **arguments)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.field) == ("invalid_option", field)
    assert list(tmp_path.iterdir()) == []


def test_write_checks_shape_and_timestamps(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "out.mp4", width=96, height=64, fps=Fraction(25), preset="ultrafast") as writer:
        with pytest.raises(ValueError, match=r"\(64, 96, 3\) uint8"):
            writer.write(np.zeros((64, 96, 3), np.float32))
        writer.write(mf.pattern_frame(0, 96, 64), pts=5)
        with pytest.raises(ValueError, match="pts must increase"):
            writer.write(mf.pattern_frame(1, 96, 64), pts=5)
        writer.write(mf.pattern_frame(1, 96, 64), pts=6)


def test_even_size_crops_to_even() -> None:
    assert even_size(177, 145) == (176, 144)
    assert even_size(176, 144) == (176, 144)
    with pytest.raises(ValueError):
        even_size(1, 10)


def test_check_output_path_leaves_existing_file_alone(tmp_path: Path) -> None:
    existing = tmp_path / "out.mkv"
    existing.write_bytes(b"keep")
    assert check_output_path(existing) == existing
    assert existing.read_bytes() == b"keep"
    assert os.access(existing, os.R_OK)
