"""Restore-pipeline overhead and memory, measured side by side in one run.

1. Frames per second of the whole pipeline with the engine excluded (decode ×2, detect, embed,
   track, align, paste, encode; the engine is a pass-through that returns its crops), against a
   plain PyAV decode + H.264 re-encode of the same file, as a ratio.
2. Peak RSS while processing a generated 60 s 1280×720 clip, sampled at each quarter of the job:
   flat means memory does not grow with the video's length.

    python bench/pipeline_bench.py [--seconds 60] [--fps 10] [--ratio-seconds 8] [--embed-every 1,4]
                                   [--face-backend auto]

The generated clip is the astronaut's face (skimage) drifting over a textured 720p background.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import psutil

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipfvr_core.engines.base import Engine, EngineSession, IdentityCondition  # noqa: E402
from ipfvr_core.faces.loader import load_analyzer  # noqa: E402
from ipfvr_core.restore import RestoreOptions, Restorer  # noqa: E402
from ipfvr_core.video_io import VideoLimits, VideoWriter  # noqa: E402


class PassThroughSession(EngineSession):
    def push(self, clip, *, native_size=None, progress=None, should_cancel=None):
        return clip

    def flush(self, *, progress=None, should_cancel=None):
        return np.zeros((0, 512, 512, 3), np.uint8)


class PassThroughEngine(Engine):
    """Measurement device: returns the aligned crops unchanged, so only the pipeline is timed."""

    name = "pass-through"
    clip_length = 8
    face_size = 512

    def open_session(self, identity: IdentityCondition, *, seed: int | None = None) -> EngineSession:
        return PassThroughSession()


def make_clip(path: Path, seconds: float, fps: int, width: int = 1280, height: int = 720) -> Path:
    from skimage import data

    face = cv2.resize(data.astronaut()[:300, 100:400], (300, 300), interpolation=cv2.INTER_AREA)  # (300, 300, 3)
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 6)
    n = int(seconds * fps)
    with VideoWriter(path, width=width, height=height, fps=Fraction(fps), crf=23, preset="veryfast") as writer:
        for i in range(n):
            frame = background.copy()
            x = int((width - 300) * (0.5 + 0.4 * np.sin(2 * np.pi * i / (fps * 6))))
            y = int((height - 300) * (0.5 + 0.3 * np.cos(2 * np.pi * i / (fps * 9))))
            frame[y : y + 300, x : x + 300] = face
            writer.write(frame)
    return path


def plain_reencode(src: Path, dst: Path) -> int:
    """The floor: PyAV decode + libx264 encode, same CRF and preset as the pipeline."""
    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        s_in.thread_type = "AUTO"
        s_out = out.add_stream("libx264", rate=s_in.average_rate)
        s_out.width, s_out.height, s_out.pix_fmt = s_in.width, s_in.height, "yuv420p"
        s_out.options = {"crf": "18", "preset": "medium"}
        for frame in inp.decode(s_in):
            rgb = frame.to_ndarray(format="rgb24")
            for packet in s_out.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
            n += 1
        for packet in s_out.encode(None):
            out.mux(packet)
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the memory clip (s)")
    parser.add_argument("--fps", type=int, default=10, help="frame rate of the memory clip")
    parser.add_argument("--ratio-seconds", type=float, default=8.0, help="length of the fps-ratio clip (s)")
    parser.add_argument(
        "--embed-every",
        default="1,4",
        help="identity-embedding samplings to compare, comma-separated (1 = every face of every "
        "frame, the default of RestoreOptions)",
    )
    parser.add_argument(
        "--face-backend",
        default="auto",
        help="face analysis backend (default: the service's, centerface unless an insightface pack is configured)",
    )
    args = parser.parse_args()

    restorer = Restorer(load_analyzer(args.face_backend), PassThroughEngine())
    proc = psutil.Process(os.getpid())
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        from PIL import Image
        from skimage import data

        ref = tmpd / "ref.png"
        Image.fromarray(data.astronaut()).save(ref)

        # 1. fps ratio on the same file
        short = make_clip(tmpd / "short.mp4", args.ratio_seconds, 25)
        t = time.perf_counter()
        n = plain_reencode(short, tmpd / "plain.mp4")
        plain_s = time.perf_counter() - t
        print(f"clip: {n} frames 1280x720, one face per frame")
        print(f"  {'run':<34}{'fps':>8}{'ratio':>8}  identity before -> after (frames measured)")
        print(f"  {'plain PyAV decode+encode':<34}{n / plain_s:>8.1f}{1.0:>8.3f}")
        breakdowns: dict[str, dict[str, float]] = {}
        for every in (int(k) for k in args.embed_every.split(",")):
            t = time.perf_counter()
            report = restorer.restore(short, [ref], tmpd / "out_short.mp4", RestoreOptions(embed_every=every))
            pipe_s = time.perf_counter() - t
            ident = report.identity
            name = f"pipeline, engine excluded, k={every}"
            print(
                f"  {name:<34}{n / pipe_s:>8.1f}{plain_s / pipe_s:>8.3f}  {ident.before.mean:.3f} -> "
                f"{ident.after.mean:.3f} ({ident.frames_measured} of {report.frames_restored} "
                f"restored frames)"
            )
            breakdowns[f"k={every}"] = {k: v for k, v in report.timings_s.items() if k not in ("total", "engine")}
        stages = sorted(
            {s for b in breakdowns.values() for s in b}, key=lambda s: -max(b.get(s, 0) for b in breakdowns.values())
        )
        width = max(len(s) for s in stages) + 2
        print("\n  time per stage (s)  " + "".join(f"{s:>{width}}" for s in stages))
        for run, b in breakdowns.items():
            print(f"  {run:<20}" + "".join(f"{b.get(s, 0.0):>{width}.2f}" for s in stages))

        # 2. peak RSS over a long clip, sampled per quarter
        long_clip = make_clip(tmpd / "long.mp4", args.seconds, args.fps)
        samples: dict[int, float] = {}
        marks = iter([25, 50, 75, 100])
        state = {"next": next(marks)}
        rss_start = proc.memory_info().rss / 2**20

        def on_progress(ev) -> None:
            rss = proc.memory_info().rss / 2**20
            state["peak"] = max(state.get("peak", 0.0), rss)
            if ev.stage == "restore" and ev.total and 100 * ev.current / ev.total >= state["next"]:
                samples[state["next"]] = state["peak"]
                state["next"] = next(marks, 101)

        limits = VideoLimits(max_duration_s=args.seconds + 10)
        t = time.perf_counter()
        restorer.restore(long_clip, [ref], tmpd / "out_long.mp4", RestoreOptions(limits=limits), progress=on_progress)
        long_s = time.perf_counter() - t
        frames = int(args.seconds * args.fps)
        print(
            f"\nlong clip: {args.seconds:.0f} s, {frames} frames 1280x720 in {long_s:.1f} s ({frames / long_s:.1f} fps)"
        )
        print(
            f"RSS before: {rss_start:.0f} MiB; peak RSS by restore progress: "
            + ", ".join(f"{k}% {v:.0f} MiB" for k, v in samples.items())
        )
        if 25 in samples and 100 in samples:
            print(
                f"peak growth from 25% to 100%: {samples[100] - samples[25]:+.0f} MiB "
                f"(one decoded frame is {1280 * 720 * 3 / 2**20:.1f} MiB)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
