"""Seconds per frame of the reference engine against the baseline, measured side by side in one run.

For each clip (carphone_distorted at 176×144, and a generated 1280×720 clip with the astronaut's
face drifting over a textured background), both engines restore the same frames through the
whole pipeline (`Restorer.restore`), and the engine stage alone is timed from the report. Then
the reference engine's per-track preparation is timed cold (first clip of a session: the
reference is degraded to the face's native size) and cached (the next clips of the session reuse
it). The engine adapts nothing per identity (no fine-tuning), so there is no training time.
Last, what bounds the engine: its base network's multiply-adds per second against this CPU's on one
large plain convolution, timed side by side (best of ``--repeats``).

    python bench/engine_bench.py [--frames 24] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.pipeline_bench import make_clip  # noqa: E402
from ipfvr_core.engines.base import IdentityCondition  # noqa: E402
from ipfvr_core.faces.align import estimate_affine, native_size, warp_face  # noqa: E402
from ipfvr_core.restore import RestoreOptions, Restorer  # noqa: E402
from ipfvr_core.samples import sample_video  # noqa: E402
from ipfvr_core.video_io import VideoWriter, iter_frames, probe  # noqa: E402

ENGINES = ("reference", "baseline")


def first_frames(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` frames of ``src`` re-encoded losslessly (so both engines see the same input)."""
    info = probe(src)
    with VideoWriter(dst, width=info.width, height=info.height, fps=info.fps, crf=0, preset="veryfast") as w:
        for f in iter_frames(src, info):
            if f.index >= n:
                break
            w.write(f.image)
    return dst


def time_pipeline(restorers: dict[str, Restorer], clip: Path, reference: Path, out_dir: Path) -> dict[str, tuple]:
    """{engine: (seconds per frame overall, engine seconds per restored face, faces restored)}."""
    results = {}
    for name, restorer in restorers.items():
        report = restorer.restore(clip, [reference], out_dir / f"{name}.mp4", RestoreOptions(faces="all"))
        faces = sum(fr.restored for fr in report.frames)
        t = report.timings_s
        results[name] = (t["total"] / report.frames_total, t.get("engine", 0.0) / max(1, faces), faces)
    return results


def time_preparation(restorer: Restorer, clip: Path, reference: Path) -> tuple[float, float]:
    """Reference engine: seconds for a session's first clip (cold) and for the same clip again (cached)."""
    analyzer, engine = restorer.analyzer, restorer.engine
    image = np.asarray(Image.open(reference).convert("RGB"))
    ref_face = analyzer.detect(image)[0]
    aligned_ref = warp_face(image, estimate_affine(ref_face.kps, engine.face_size), engine.face_size)
    frames = [f.image for f in iter_frames(clip)][: engine.clip_length]
    crops, natives = [], []
    for frame in frames:
        faces = analyzer.detect(frame)
        if faces:
            affine = estimate_affine(faces[0].kps, engine.face_size)
            crops.append(warp_face(frame, affine, engine.face_size))
            natives.append(native_size(affine, engine.face_size))
    clip_crops = np.stack(crops)  # (T, S, S, 3)
    session = engine.open_session(IdentityCondition(embeddings=[], metric="l2", aligned_references=[aligned_ref]))
    t0 = time.perf_counter()
    session.push(clip_crops, native_size=int(np.median(natives)))
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    session.push(clip_crops, native_size=int(np.median(natives)))
    cached = time.perf_counter() - t0
    return cold / len(clip_crops), cached / len(clip_crops)


def network_macs(model: torch.nn.Module, side: int) -> int:
    """Multiply-adds of one forward at a ``side``² input, counted from every Conv2d's output size."""
    total = 0

    def count(module: torch.nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * module.in_channels // module.groups * kh * kw  # per output element: Cin*k*k

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, side, side))
    for h in hooks:
        h.remove()
    return total


def best_seconds(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up (the least disturbed by other load)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def compute_bound(model: torch.nn.Module, side: int, repeats: int) -> tuple[float, float, float]:
    """(network s/crop, its GMAC/s, this CPU's GMAC/s on one large 64->64 3x3 conv), fp32, same threads.

    The reference engine's time is its base network's (Real-ESRGAN x4plus on each crop); the ratio of
    the two throughputs says how much a faster implementation could still win on this CPU.
    """
    x = torch.rand(1, 3, side, side).contiguous(memory_format=torch.channels_last)  # (1, 3, n, n)
    with torch.inference_mode():
        net_s = best_seconds(lambda: model(x), repeats)
        conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
        big = torch.rand(1, 64, 256, 256).contiguous(memory_format=torch.channels_last)  # (1, 64, 256, 256)
        conv_s = best_seconds(lambda: conv(big), repeats)
    conv_macs = 256 * 256 * 64 * 64 * 9
    return net_s, network_macs(model, side) / net_s / 1e9, conv_macs / conv_s / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24, help="frames per clip (default 24)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the compute-bound check (best kept)")
    args = parser.parse_args()
    restorers = {name: Restorer.load(engine=name) for name in ENGINES}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        small = first_frames(sample_video("carphone_distorted.mp4"), tmp / "carphone.mp4", args.frames)
        small_ref = tmp / "carphone_ref.png"
        Image.fromarray(next(iter(iter_frames(sample_video("carphone_pristine.mp4")))).image).save(small_ref)
        big = make_clip(tmp / "720p.mp4", seconds=args.frames / 10, fps=10)
        big_ref = tmp / "astronaut.png"
        from skimage import data

        Image.fromarray(data.astronaut()).save(big_ref)
        rows = []
        for label, clip, ref in (("176x144", small, small_ref), ("1280x720", big, big_ref)):
            res = time_pipeline(restorers, clip, ref, tmp)
            rows.append((label, res))
        cold, cached = time_preparation(restorers["reference"], small, small_ref)
        baseline = restorers["baseline"].engine
        side = baseline.input_side(None)  # the CPU cap: the side of every face at least that big
        net_s, net_gmacs, conv_gmacs = compute_bound(baseline.model, side, args.repeats)

    print(f"{'clip':<10} {'engine':<10} {'s/frame (pipeline)':>19} {'s/face (engine)':>16} {'faces':>6}")
    for label, res in rows:
        for name in ENGINES:
            per_frame, per_face, faces = res[name]
            print(f"{label:<10} {name:<10} {per_frame:>19.3f} {per_face:>16.3f} {faces:>6}")
        ratio = res["reference"][1] / res["baseline"][1] if res["baseline"][1] > 0 else float("nan")
        print(f"{label:<10} reference / baseline engine time per face: {ratio:.2f}")
    print(
        f"reference engine, first clip of a track (cold): {cold:.3f} s/face; same clip again (cached): "
        f"{cached:.3f} s/face; ratio {cached / cold:.2f}"
    )
    print(
        f"base network (Real-ESRGAN x4plus, fp32, {torch.get_num_threads()} threads) at {side}x{side}: "
        f"{net_s:.3f} s/crop, {net_gmacs:.1f} GMAC/s; one 64->64 3x3 conv at 256x256: {conv_gmacs:.1f} GMAC/s; "
        f"ratio {net_gmacs / conv_gmacs:.2f} (near 1: bound by this CPU's convolution throughput)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
