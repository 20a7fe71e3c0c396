"""Tests of the builtin evaluation suite (ipfvr_core.evaluation.cases) and its synthesis (synth).

The quick suite is really built (twice, in two folders) from the package data; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import media_factory as mf
from ipfvr_core.errors import InputError, OutputError
from ipfvr_core.evaluation import cases as cases_module
from ipfvr_core.evaluation.cases import EvalCase, builtin_suite
from ipfvr_core.evaluation.metrics import psnr
from ipfvr_core.evaluation.suite_builder import SuiteBuilder, read_frames
from ipfvr_core.evaluation.synth import camera_path, reference_variant, render_path

QUICK_NAMES = {
    "carphone/shipped/ref-frame0",
    "carphone/redegraded/moderate",
    "stills/astronaut/moderate-recrop",
    "hijack/carphone-astronaut-ref",
}


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """relative path -> (size, mtime_ns, inode) of every file under folder."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, list[EvalCase]]:
    cache = tmp_path_factory.mktemp("suite-a")
    return cache, builtin_suite(cache, quick=True)


@pytest.fixture(scope="module")
def carphone_pristine_frames(carphone_pristine) -> np.ndarray:
    return read_frames(carphone_pristine)[0]


# ---------------------------------------------------------------------------------------- the suite


def test_eval_case_has_exactly_the_shared_fields():
    fields = [(f.name, f.default) for f in dataclasses.fields(EvalCase)]
    missing = dataclasses.MISSING
    assert fields == [
        ("name", missing),
        ("degraded", missing),
        ("ground_truth", missing),
        ("references", missing),
        ("faces", "target"),
        ("group", ""),
        ("note", ""),
        ("judged_reference", None),
    ]


def test_quick_suite_builds_the_four_smoke_cases(quick):
    cache, cases = quick
    assert {c.name for c in cases} == QUICK_NAMES
    assert {c.group for c in cases} == {"carphone", "carphone-redegraded", "stills", "hijack"}
    for case in cases:
        assert case.degraded.suffix == ".mp4" and case.ground_truth.suffix == ".mp4"
        assert case.degraded.is_file() and case.ground_truth.is_file()
        assert case.references and all(r.suffix == ".png" and r.is_file() for r in case.references)
        assert cache in case.degraded.parents
        assert case.note and "\n" not in case.note
    hijack = next(c for c in cases if c.group == "hijack")
    assert hijack.faces == "all" and hijack.judged_reference is not None and hijack.judged_reference.is_file()
    assert all(c.faces == "target" and c.judged_reference is None for c in cases if c.group != "hijack")
    # no temporary build folder is left behind
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []


def test_second_call_is_a_cache_hit(quick):
    cache, cases = quick
    before = snapshot(cache)
    again = builtin_suite(cache, quick=True)
    assert again == cases
    assert snapshot(cache) == before  # same files, same sizes, mtimes and inodes: nothing was rewritten


def test_degraded_and_ground_truth_match_in_frames_fps_and_size(quick):
    _, cases = quick
    for case in cases:
        degraded, degraded_fps = read_frames(case.degraded)
        truth, truth_fps = read_frames(case.ground_truth)
        assert len(degraded) == len(truth) == 24, case.name
        assert degraded_fps == truth_fps, case.name
        assert degraded.shape == truth.shape, case.name  # resize_back: same size
        assert psnr(degraded, truth) < 32, case.name  # really degraded


def test_reference_is_not_any_ground_truth_frame(quick):
    _, cases = quick
    for case in cases:
        truth, _ = read_frames(case.ground_truth)
        for path in (*case.references, case.judged_reference):
            if path is None:
                continue
            reference = png(path)
            assert not any(reference.shape == f.shape and np.array_equal(reference, f) for f in truth), case.name


def test_carphone_cuts_match_the_originals_frame_for_frame(quick, carphone_pristine_frames, carphone_distorted):
    """Frame 0 is the reference and is cut from both videos: judged frame i is original frame i + 1."""
    _, cases = quick
    case = next(c for c in cases if c.name == "carphone/shipped/ref-frame0")
    pristine = carphone_pristine_frames
    distorted = read_frames(carphone_distorted)[0]
    np.testing.assert_array_equal(png(case.references[0]), pristine[0])
    for video, original in ((case.ground_truth, pristine), (case.degraded, distorted)):
        frames, _ = read_frames(video)
        for i, frame in enumerate(frames):
            scores = [psnr(frame, original[j]) for j in range(len(frames) + 1)]
            assert int(np.argmax(scores)) == i + 1, (video.name, i)
            assert scores[i + 1] > 40, (video.name, i, scores[i + 1])
    hijack = next(c for c in cases if c.group == "hijack")
    np.testing.assert_array_equal(png(hijack.judged_reference), pristine[0])
    assert png(hijack.references[0]).shape == (512, 512, 3)  # the astronaut: a different person


def test_redegraded_carphone_is_the_pristine_cut_degraded(quick):
    _, cases = quick
    case = next(c for c in cases if c.group == "carphone-redegraded")
    shipped = next(c for c in cases if c.name == "carphone/shipped/ref-frame0")
    assert case.ground_truth == shipped.ground_truth  # one shared ground-truth file
    assert "moderate" in case.note and "x3" in case.note and "x264 crf" in case.note


def without_degraded_measures(value: object) -> object:
    """``value`` without the ``degraded_*`` entries that are measured on a degraded video."""
    if isinstance(value, dict):
        return {k: without_degraded_measures(v) for k, v in value.items() if not k.startswith("degraded_")}
    if isinstance(value, list):
        return [without_degraded_measures(v) for v in value]
    return value


def test_builds_are_deterministic_and_atomic(quick, tmp_path, monkeypatch):
    cache_a, cases_a = quick
    cache_b = tmp_path / "suite-b"

    # an interrupted build (it fails after the carphone cases are written) leaves nothing behind
    def interrupted(self, recipe):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(SuiteBuilder, "still_case", interrupted)
        with pytest.raises(KeyboardInterrupt):
            builtin_suite(cache_b, quick=True)
    assert list(cache_b.iterdir()) == []

    cases_b = builtin_suite(cache_b, quick=True)
    (folder_a,) = [p for p in cache_a.iterdir() if p.name.startswith("builtin-quick-")]
    (folder_b,) = [p for p in cache_b.iterdir() if p.name.startswith("builtin-quick-")]
    assert folder_a.name == folder_b.name  # same key
    files_a, files_b = snapshot(folder_a), snapshot(folder_b)
    assert files_a.keys() == files_b.keys()
    for relative in files_a:
        a, b = folder_a / relative, folder_b / relative
        if a.suffix == ".mp4":
            # the files are lossless x264 (CRF 0) on several threads, whose bitstream may differ from run
            # to run: the pictures are compared. Ground truth must be equal; a degraded video holds one
            # lossy x264 round trip, equal up to x264's rare variance.
            frames_a, fps_a = read_frames(a)
            frames_b, fps_b = read_frames(b)
            assert fps_a == fps_b, relative
            if a.name == "degraded.mp4":
                mf.assert_same_up_to_x264(frames_a, frames_b)
            else:
                assert np.array_equal(frames_a, frames_b), relative
        elif a.suffix == ".json":  # the manifest: what it measured on a degraded video may move with it
            assert without_degraded_measures(json.loads(a.read_text())) == without_degraded_measures(
                json.loads(b.read_text())
            ), relative
        else:  # byte for byte: the photos
            assert a.read_bytes() == b.read_bytes(), relative
    assert [c.name for c in cases_a] == [c.name for c in cases_b]


def test_a_damaged_cache_is_rebuilt(quick, tmp_path):
    cache_a, cases_a = quick
    (folder_a,) = [p for p in cache_a.iterdir() if p.name.startswith("builtin-quick-")]
    cache_c = tmp_path / "suite-c"
    shutil.copytree(cache_a, cache_c)
    victim = cache_c / folder_a.name / cases_a[0].degraded.relative_to(folder_a)
    victim.unlink()
    cases_c = builtin_suite(cache_c, quick=True)
    assert victim.is_file()
    assert [c.name for c in cases_c] == [c.name for c in cases_a]
    mf.assert_same_up_to_x264(read_frames(victim)[0], read_frames(cases_a[0].degraded)[0])


def test_manifest_records_the_recipes(quick):
    cache, cases = quick
    (folder,) = [p for p in cache.iterdir() if p.name.startswith("builtin-quick-")]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["suite_version"] == cases_module.SUITE_VERSION and manifest["quick"] is True
    still = next(e for e in manifest["cases"] if e["group"] == "stills")
    assert still["details"]["degradation"]["crf"] >= 27  # "moderate" CRF range
    assert 80 <= still["details"]["gt_face_px"] <= 140  # the face is the advertised size in the ground truth
    assert still["details"]["gt_detect_rate"] == 1.0


def test_unwritable_cache_dir_names_the_field(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as info:
        builtin_suite(blocker / "cache", quick=True)
    assert info.value.field == "cache_dir"


# -------------------------------------------------------------------------------------- camera path


def test_camera_path_respects_its_bounds_and_is_smooth():
    path = camera_path(64, 3, pan_px=10.0, zoom_range=(0.9, 1.1), max_rotation_deg=5.0)
    assert path.shape == (64, 2, 3)
    zoom = np.hypot(path[:, 0, 0], path[:, 1, 0])  # (T,)
    angle = np.degrees(np.arctan2(path[:, 1, 0], path[:, 0, 0]))  # (T,)
    pan = path[:, :, 2]  # (T, 2)
    assert np.all(np.abs(pan) <= 10.0 + 1e-9)
    assert np.all((zoom >= 0.9 - 1e-9) & (zoom <= 1.1 + 1e-9))
    assert np.all(np.abs(angle) <= 5.0 + 1e-9)
    # it moves, but smoothly: periods of at least 24 frames bound the per-frame change
    assert np.ptp(pan[:, 0]) > 2 and np.ptp(zoom) > 0.02 and np.ptp(angle) > 1
    assert np.abs(np.diff(pan, axis=0)).max() <= 10.0 * 2 * math.pi / 24 + 1e-9
    assert np.abs(np.diff(pan, n=2, axis=0)).max() <= 10.0 * (2 * math.pi / 24) ** 2 + 1e-9


def test_camera_path_is_seeded_and_prefix_stable():
    a = camera_path(32, 7)
    np.testing.assert_array_equal(a, camera_path(32, 7))
    assert not np.allclose(a, camera_path(32, 8))
    np.testing.assert_array_equal(camera_path(24, 7), a[:24])  # a quick clip is the start of the full one
    with pytest.raises(InputError) as info:
        camera_path(0, 1)
    assert info.value.field == "n_frames"


def test_render_path_identity_and_pan(astronaut_rgb):
    image = astronaut_rgb[:96, :128]
    center = ((128 - 1) / 2, (96 - 1) / 2)
    still = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # (1, 2, 3) identity
    np.testing.assert_array_equal(render_path(image, center, (128, 96), still)[0], image)
    panned = still.copy()
    panned[0, 0, 2] = 5.0  # the scene moves 5 px right
    out = render_path(image, center, (128, 96), panned)[0]
    np.testing.assert_array_equal(out[:, 5:], image[:, :-5])
    np.testing.assert_array_equal(out[:, :5], image[:, 5:0:-1])  # reflect-101 border, no black bars
    far = still.copy()
    far[0, 1, 2] = 60.0
    with pytest.raises(InputError) as info:
        render_path(image, center, (128, 96), far)
    assert info.value.field == "affines"


# ------------------------------------------------------------------------------------------- references


def test_reference_variants(astronaut_rgb):
    crop = astronaut_rgb[40:240, 120:320]  # (200, 200, 3) around the face
    np.testing.assert_array_equal(reference_variant(crop, "flip", 0), crop[:, ::-1])

    lit = reference_variant(crop, "relight", 5)
    assert lit.shape == crop.shape and not np.array_equal(lit, crop)
    np.testing.assert_array_equal(lit, reference_variant(crop, "relight", 5))
    assert not np.array_equal(lit, reference_variant(crop, "relight", 6))
    grey_in, grey_out = crop.mean(axis=2).ravel(), lit.astype(np.float64).mean(axis=2).ravel()
    assert np.corrcoef(grey_in, grey_out)[0, 1] > 0.9  # same picture
    assert np.abs(grey_out - grey_in).mean() > 8  # visibly re-lit
    # on a flat grey photo the re-lighting shows alone: a smooth directional gradient with a colour cast
    flat = reference_variant(np.full((100, 100, 3), 128, np.uint8), "relight", 5).astype(np.float64)
    grey = flat.mean(axis=2)  # (100, 100)
    assert np.ptp(grey) > 20  # +-15-30 % across the photo
    assert max(np.abs(np.diff(grey, axis=0)).max(), np.abs(np.diff(grey, axis=1)).max()) < 2  # smooth
    assert np.ptp(flat.mean(axis=(0, 1))) > 3  # the channels differ: a colour cast

    recrop = reference_variant(crop, "recrop", 5)
    np.testing.assert_array_equal(recrop, reference_variant(crop, "recrop", 5))
    assert recrop.shape != crop.shape or not np.array_equal(recrop, crop)
    assert 0.72 * 0.8 * 200 - 1 <= recrop.shape[0] <= 0.88 * 1.25 * 200 + 1

    with pytest.raises(InputError) as info:
        reference_variant(crop, "sepia", 0)
    assert info.value.field == "kind"
