"""The restore pass's output side: restored faces pasted back, frames encoded and measured for the report."""

from __future__ import annotations

import functools
import time
from functools import partial
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ipfvr_core.faces.base import Face
from ipfvr_core.faces.paste import paste_back
from ipfvr_core.options import RestoreOptions
from ipfvr_core.report import FrameReport
from ipfvr_core.restore.reporting import FrameMeter
from ipfvr_core.restore.stages import Stages
from ipfvr_core.restore.streamer import RestoredFrame
from ipfvr_core.upscale import BackgroundUpscaler, bicubic_upscale, upscaled_affine
from ipfvr_core.video_io import VideoFrame, VideoInfo, VideoWriter


def even(n: int) -> int:
    return n + (n % 2)


@functools.lru_cache(maxsize=4)
def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def label(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with ``text`` in its top-left corner, white on a dark box."""
    h, w = image.shape[:2]
    font = _label_font(max(9, round(min(h, w) / 14)))
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    pad = max(2, round(min(h, w) / 80))
    x0, y0, x1, y1 = draw.textbbox((pad * 2, pad * 2), text, font=font)
    draw.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), fill=(0, 0, 0))
    draw.text((pad * 2, pad * 2), text, font=font, fill=(255, 255, 255))
    return np.asarray(canvas)


def pad_even(image: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: replicate the last row/column when a side is odd."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # (H', W', 3)


class OutputVideos:
    """The output writer and the optional comparison writer; both commit or neither does.

    Use as a context manager; :meth:`write` takes each input frame with its restored version.
    """

    def __init__(
        self,
        output: Path,
        compare: Path | None,
        info: VideoInfo,
        options: RestoreOptions,
        engine_name: str,
        audio: str | Path | None,
    ) -> None:
        scale = options.upscale
        w, h = even(scale * info.width), even(scale * info.height)
        self._scale = scale
        self._engine_name = engine_name
        # Both videos keep the input's timing and audio and the chosen encoding; the comparison is twice as wide.
        writer = partial(
            VideoWriter,
            height=h,
            fps=info.fps,
            time_base=info.time_base,
            audio_from=audio,
            crf=options.crf,
            preset=options.preset,
        )
        self._writer = writer(output, width=w)
        self._compare = writer(compare, width=even(2 * scale * info.width)) if compare is not None else None

    def write(self, frame: VideoFrame, restored: np.ndarray) -> None:
        """Encode ``restored`` (sH, sW, 3) at the input frame's timestamp (and input|restored beside it)."""
        self._writer.write(pad_even(restored), pts=frame.pts)
        if self._compare is not None:
            left = label(bicubic_upscale(frame.image, self._scale), "input")  # (sH, sW, 3)
            right = label(restored, f"restored \u00b7 {self._engine_name}")
            self._compare.write(pad_even(np.concatenate([left, right], axis=1)), pts=frame.pts)  # (sH, 2sW, 3)

    def __enter__(self) -> OutputVideos:
        self._writer.__enter__()
        if self._compare is not None:
            try:
                self._compare.__enter__()
            except BaseException as exc:
                self._writer.__exit__(type(exc), exc, exc.__traceback__)
                raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._compare is not None:
                self._compare.__exit__(exc_type, exc, tb)
        finally:
            self._writer.__exit__(exc_type, exc, tb)


class FrameSink:
    """Where restored frames go, in order: background upscaled, faces pasted back, measured, encoded.

    ``rows`` collects the report's row of every frame written.
    """

    def __init__(
        self,
        videos: OutputVideos,
        meter: FrameMeter,
        upscaler: BackgroundUpscaler | None,
        scale: int,
        detections: list[list[Face]],
        stages: Stages,
    ) -> None:
        self._videos = videos
        self._meter = meter
        self._upscaler = upscaler
        self._scale = scale
        self._detections = detections
        self._stages = stages
        self.rows: list[FrameReport] = []

    def write(self, frames: list[RestoredFrame]) -> None:
        total = len(self._detections)
        for done in frames:
            restored = self._compose(done)
            t = time.perf_counter()
            self.rows.append(self._meter.measure(done, restored, self._detections[done.frame.index]))
            t = self._stages.add("embed_output", t)
            self._videos.write(done.frame, restored)
            self._stages.add("encode", t)
            if len(self.rows) % 4 == 0 or len(self.rows) == total:
                self._stages.report("restore", len(self.rows), total)

    def _compose(self, done: RestoredFrame) -> np.ndarray:
        """The output frame (sH, sW, 3): the input, upscaled, with every restored face pasted back."""
        t = time.perf_counter()
        out = done.frame.image
        if self._upscaler is not None:
            out = self._upscaler.upscale(out)
            t = self._stages.add("upscale", t)
        for face in done.faces:
            out = paste_back(out, face.crop, upscaled_affine(face.affine, self._scale))
        self._stages.add("paste", t)
        return out
