"""Upscaling the whole frame: the tiler, the pixel-centre geometry, and ``restore`` at x2/x4.

The tiler is checked against the same network run on the whole frame: exactly, with a stand-in
network whose receptive field fits inside the pad (placement of every tile, odd frame sizes), and
within a few grey levels with the real Real-ESRGAN x4plus (the pad is wide enough for its
receptive field: no seams). The pipeline runs on tiny generated clips, bicubic except for one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

import media_factory as mf
from engine_doubles import CheckerboardEngineDouble
from ipfvr_core.engines import ncnn_weights
from ipfvr_core.errors import InputError
from ipfvr_core.faces.align import estimate_affine, transform_points, warp_face
from ipfvr_core.faces.loader import load_analyzer
from ipfvr_core.faces.paste import face_region_mask
from ipfvr_core.restore import RestoreOptions, Restorer
from ipfvr_core.upscale import (
    BackgroundUpscaler,
    TilingConfig,
    bicubic_upscale,
    upscaled_affine,
    upscaled_points,
)
from ipfvr_core.video_io import VideoLimits, VideoWriter, iter_frames, probe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def analyzer():
    return load_analyzer("dlib")


@pytest.fixture(scope="module")
def x4plus():
    return ncnn_weights.load_realesrgan_x4plus()


def _frames(path: Path) -> list[np.ndarray]:
    return [f.image for f in iter_frames(path)]


def _encode(path: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The frames after the pipeline's own lossless-settings encode (crf 0, yuv420p), decoded again."""
    h, w = frames[0].shape[:2]
    with VideoWriter(path, width=w, height=h, fps=Fraction(25), crf=0) as writer:
        for frame in frames:
            writer.write(frame)
    return _frames(path)


def _vfr_clip_with_audio(path: Path, width: int = 64, height: int = 48) -> Path:
    """Six pattern frames at irregular timestamps (ms), and an AAC tone longer than the video."""
    pts = [0, 40, 80, 130, 170, 230]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "0"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        audio = container.add_stream("aac", rate=48_000)
        audio.layout = "stereo"
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(mf.pattern_frame(i, width, height), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        mf._write_aac_frames(container, audio, 20)
    return path


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


class LocalDouble(torch.nn.Module):
    """A stand-in x4 network whose receptive field (3x3 conv, nearest x4, 3x3 conv) fits in a 2 px pad:
    tiled and whole-frame runs must agree exactly. The second conv makes the output vary within each
    4x4 block, so an x2 taken by anything other than an area average shows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.conv_hr = torch.nn.Conv2d(3, 3, 3, padding=1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for conv in (self.conv, self.conv_hr):
                conv.weight.copy_(torch.rand(3, 3, 3, 3, generator=g) / 27 * 2)
                conv.bias.zero_()
        self.shapes: list[tuple[int, ...]] = []  # every input shape seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, h, w) -> (B, 3, 4h, 4w)
        self.shapes.append(tuple(x.shape))
        return self.conv_hr(torch.nn.functional.interpolate(self.conv(x), scale_factor=4.0, mode="nearest"))


# ---------------------------------------------------------------------------------------------- tiler
@pytest.mark.parametrize("scale", [2, 4])
def test_tiles_are_placed_exactly(scale):
    image = np.random.default_rng(1).integers(0, 256, (203, 301, 3), dtype=np.uint8)  # odd sides, 4 x 5 tiles
    model = LocalDouble()
    whole = BackgroundUpscaler(scale, model=model, config=TilingConfig(tile=1024, pad=0)).upscale(image)
    tiler = BackgroundUpscaler(scale, model=model, config=TilingConfig(tile=64, pad=4))
    tiled = tiler.upscale(image)
    assert tiled.shape == whole.shape == (203 * scale, 301 * scale, 3)
    assert tiler.windows_run == 4 * 5
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4, (diff.max(), (diff > 0).mean())  # float rounding only
    if scale == 2:  # x4 through the network, then a 2x2 area average
        x4 = BackgroundUpscaler(4, model=model, config=TilingConfig(tile=64, pad=4)).upscale(image)
        assert np.array_equal(tiled, cv2.resize(x4, (602, 406), interpolation=cv2.INTER_AREA))


def test_network_input_is_bounded_by_the_tile_not_the_frame():
    model = LocalDouble()
    tiler = BackgroundUpscaler(2, model=model)  # default tiling
    cfg = tiler.config
    out = tiler.upscale(np.zeros((720, 1280, 3), np.uint8))
    assert out.shape == (1440, 2560, 3)
    side = cfg.tile + 2 * cfg.pad
    assert all(b == 1 and h <= side and w <= side for b, _, h, w in model.shapes), set(model.shapes)
    assert tiler.peak_input_shape == max(model.shapes, key=np.prod)
    assert tiler.windows_run == len(model.shapes) == 4 * 7  # ceil(720 / 192) x ceil(1280 / 192)


def test_tiles_match_the_untiled_real_network(x4plus, carphone_pristine):
    """No seams: the pad gives each tile enough context that Real-ESRGAN's output barely changes."""
    image = np.ascontiguousarray(_frames(carphone_pristine)[0][50:82, 40:120])  # (32, 80, 3): face and background
    whole = BackgroundUpscaler(4, model=x4plus, config=TilingConfig(tile=256)).upscale(image)
    tiler = BackgroundUpscaler(4, model=x4plus, config=TilingConfig(tile=32))  # default pad
    tiled = tiler.upscale(image)
    assert tiler.windows_run == 3 and tiler.peak_input_shape == (1, 3, 32, 27 + 2 * tiler.config.pad)
    diff = np.abs(tiled.astype(int) - whole.astype(int))  # (128, 320, 3)
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 4, (diff.mean(), np.percentile(diff, 99), diff.max())


def test_the_upscaled_affine_samples_the_same_face_crop():
    """A crop warped from the bicubic x s frame with upscaled_affine equals the crop from the input."""
    ys, xs = np.mgrid[0:96, 0:128]
    smooth = 128 + 100 * np.sin(2 * np.pi * xs / 16) * np.cos(2 * np.pi * ys / 20)  # (96, 128)
    image = np.repeat(smooth[..., None], 3, axis=2).round().astype(np.uint8)  # (96, 128, 3)
    kps = np.array([[52, 40], [76, 41], [64, 54], [55, 66], [73, 66]], dtype=np.float64)
    affine = estimate_affine(kps, 128)
    direct = warp_face(image, affine, 128).astype(int)
    for s in (2, 4):
        pts = np.array([[0, 0], [10.5, 3], [127, 95]], dtype=np.float64)
        assert np.allclose(
            transform_points(upscaled_affine(affine, s), upscaled_points(pts, s)),
            transform_points(affine, pts),
            atol=1e-4,
        )
        via_upscaled = warp_face(bicubic_upscale(image, s), upscaled_affine(affine, s), 128).astype(int)
        assert np.abs(via_upscaled - direct)[16:-16, 16:-16].mean() < 1.5, s
    assert upscaled_affine(affine, 1) is affine or np.array_equal(upscaled_affine(affine, 1), affine)


# ---------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"upscale": 3}, "upscale"),
        ({"upscale": 0}, "upscale"),
        ({"upscale": True}, "upscale"),
        ({"background": "lanczos"}, "background"),
    ],
)
def test_invalid_options_name_the_field(kwargs, field):
    with pytest.raises(InputError) as err:
        RestoreOptions(**kwargs).validate()
    assert err.value.field == field and err.value.code == "invalid_option"


@pytest.mark.parametrize(("args", "field"), [(("--upscale", "3"), "upscale"), (("--background", "nope"), "background")])
def test_cli_refuses_a_bad_upscale_in_one_line(args, field, carphone_distorted, carphone_reference, tmp_path):
    out = tmp_path / "out.mp4"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ipfvr",
            "restore",
            str(carphone_distorted),
            "-r",
            str(carphone_reference),
            "-o",
            str(out),
            *args,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"ipfvr: error: {field}: ") and lines[0].endswith("[invalid_option]"), lines[0]
    assert not out.exists()


def test_an_output_above_the_limits_is_refused_before_any_work(analyzer, carphone_reference, tmp_path):
    clip = tmp_path / "in.mp4"
    mf.write_clip(clip, width=64, height=48, frames=2)
    limits = VideoLimits(max_width=200, max_height=200)
    with pytest.raises(InputError) as err:
        Restorer(analyzer, CheckerboardEngineDouble()).restore(
            clip, [carphone_reference], tmp_path / "out.mp4", RestoreOptions(upscale=4, limits=limits)
        )
    assert err.value.field == "upscale" and err.value.code == "limit_exceeded"
    assert not (tmp_path / "out.mp4").exists()


def test_the_worker_passes_upscale_and_background_to_the_library(tmp_path):
    from jobs.options import JobOptions
    from worker.restorer import LibraryRestorer, RestorerConfig, RestoreRequest

    seen = []

    class Capture:
        def restore(self, video, references, output, *, options, progress, should_cancel):
            seen.append(options)
            return {}

    config = RestorerConfig(
        engine="baseline",
        weights=None,
        face_backend="dlib",
        insightface_dir=None,
        device="cpu",
        dtype=None,
        max_side=3840,
        max_pixels=3840 * 2160,
        max_duration_s=600.0,
        max_reference_pixels=40_000_000,
    )
    for raw in ('{"upscale": 4, "background": "bicubic"}', "{}"):
        request = RestoreRequest(
            video=tmp_path / "v.mp4",
            references=[],
            output=tmp_path / "o.mp4",
            options=JobOptions.model_validate_json(raw),
        )
        LibraryRestorer(Capture(), config).restore(request, progress=lambda ev: None, should_cancel=lambda: False)
    assert [(o.upscale, o.background) for o in seen] == [(4, "bicubic"), (1, "realesrgan")]


# ---------------------------------------------------------------------------------------------- pipeline
def test_x2_and_x4_keep_timing_and_audio(analyzer, carphone_reference, tmp_path, monkeypatch):
    """Bicubic backgrounds: the size changes, nothing else does (and x1 or bicubic loads no network)."""

    def no_network(*args, **kwargs):
        raise AssertionError("x1 and bicubic must not load Real-ESRGAN")

    monkeypatch.setattr(ncnn_weights, "load_realesrgan_x4plus", no_network)
    clip = _vfr_clip_with_audio(tmp_path / "in.mp4")
    src = probe(clip)
    src_times = [f.time_s for f in iter_frames(clip)]
    restorer = Restorer(analyzer, CheckerboardEngineDouble())
    outputs = {}
    x1 = None  # the x1 output's probe, which the x2 and x4 outputs are compared with
    for s in (1, 2, 4):
        out = tmp_path / f"x{s}.mp4"
        events = []
        report = restorer.restore(
            clip,
            [carphone_reference],
            out,
            RestoreOptions(upscale=s, background="bicubic", crf=0),
            progress=events.append,
        )
        dst = probe(out)
        assert (dst.width, dst.height) == (64 * s, 48 * s)
        assert (report.output.width, report.output.height) == (64 * s, 48 * s)
        assert report.options.upscale == s and report.options.background == "bicubic"
        assert ("upscale" in report.timings_s) == (s > 1)
        assert (dst.frame_count, dst.time_base) == (src.frame_count, src.time_base)
        assert [f.time_s for f in iter_frames(out)] == src_times  # variable frame rate, to the tick
        assert abs(dst.duration_s - src.duration_s) < 1 / float(src.fps)
        if s > 1:  # the container's average rate and duration exactly as at x1
            assert x1 is not None and (dst.fps, dst.duration_s) == (x1.fps, x1.duration_s)
        else:
            x1 = dst
        fractions = [e.fraction for e in events]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        outputs[s] = out
    audio_in, audio_x1 = _audio_packets(clip), _audio_packets(outputs[1])
    assert audio_x1 and audio_x1 == audio_in[: len(audio_x1)]
    for s in (2, 4):
        assert _audio_packets(outputs[s]) == audio_x1
        expected = _encode(tmp_path / f"expected{s}.mp4", [bicubic_upscale(f, s) for f in _frames(clip)])
        got = _frames(outputs[s])
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))  # no face: background only


def test_faces_are_pasted_at_the_output_scale(analyzer, carphone_pristine, carphone_reference, tmp_path):
    src = tmp_path / "in.mp4"
    _encode(src, _frames(carphone_pristine)[:4])
    frames = _frames(src)
    out, compare = tmp_path / "out.mp4", tmp_path / "cmp.mp4"
    report = Restorer(analyzer, CheckerboardEngineDouble(face_size=128, delay=0)).restore(
        src,
        [carphone_reference],
        out,
        RestoreOptions(upscale=2, background="bicubic", crf=0, smoothing_sigma=0, compare_path=compare, embed_every=1),
    )
    assert report.frames_restored == 4 and report.identity.after.n == 4
    plain = _encode(tmp_path / "plain.mp4", [bicubic_upscale(f, 2) for f in frames])  # the background alone
    result = _frames(out)
    for i, (frame, a, b) in enumerate(zip(frames, plain, result, strict=True)):
        assert b.shape == (288, 352, 3)
        face = max(analyzer.detect(frame), key=lambda f: f.score)  # the track's (a weak false hit aside)
        region = face_region_mask(b.shape, upscaled_affine(estimate_affine(face.kps, 128), 2), 128)
        region = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # chroma is 2x2
        diff = np.abs(a.astype(int) - b.astype(int)).max(axis=2)  # (288, 352)
        assert diff[~region].max() == 0, f"frame {i}: pixels changed outside the scaled face region"
        assert (diff[region] > 10).sum() > 2000, f"frame {i}: the face should carry the engine's output"
    side = _frames(compare)
    assert len(side) == 4 and side[0].shape == (288, 704, 3)
    # below the halves' labels ("input", "restored · <engine>")
    assert np.abs(side[0][48:, 352:].astype(int) - result[0][48:].astype(int)).mean() < 2.5
    assert np.abs(side[0][48:, :352].astype(int) - plain[0][48:].astype(int)).mean() < 2.5


def test_realesrgan_background_loads_the_network_once(analyzer, carphone_reference, x4plus, tmp_path, monkeypatch):
    loads = []

    def counted(*args, **kwargs):
        loads.append(args)
        return x4plus

    monkeypatch.setattr(ncnn_weights, "load_realesrgan_x4plus", counted)
    clip = tmp_path / "in.mp4"
    mf.write_clip(clip, width=48, height=32, frames=2)
    restorer = Restorer(analyzer, CheckerboardEngineDouble())
    outs = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for out in outs:
        report = restorer.restore(clip, [carphone_reference], out, RestoreOptions(upscale=2, crf=0))
        assert report.options.background == "realesrgan" and "upscale" in report.timings_s
    assert len(loads) == 1, "the x4plus network is loaded once per Restorer"
    upscaler = BackgroundUpscaler(2, model=x4plus)
    expected = _encode(tmp_path / "expected.mp4", [upscaler.upscale(f) for f in _frames(clip)])
    for out in outs:
        got = _frames(out)
        assert got[0].shape == (64, 96, 3)
        assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(got, expected, strict=True))


def test_the_baseline_engine_shares_its_network(analyzer, carphone_reference, tmp_path, monkeypatch):
    from ipfvr_core.engines.baseline import BaselineEngine

    engine = BaselineEngine()

    def no_second_copy(*args, **kwargs):
        raise AssertionError("the baseline engine's x4plus network must be reused")

    monkeypatch.setattr(ncnn_weights, "load_realesrgan_x4plus", no_second_copy)
    clip = tmp_path / "in.mp4"
    mf.write_clip(clip, width=48, height=32, frames=2)
    out = tmp_path / "out.mp4"
    Restorer(analyzer, engine).restore(clip, [carphone_reference], out, RestoreOptions(upscale=4, crf=0))
    expected = BackgroundUpscaler(4, model=engine.model).upscale(_frames(clip)[0])
    got = _frames(out)[0]
    assert got.shape == (128, 192, 3) and np.abs(got.astype(int) - expected.astype(int)).mean() < 2
