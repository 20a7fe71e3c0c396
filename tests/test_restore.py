"""restore_video end to end on real faces, with the real dlib analyzer.

The engine is a test double (tests/engine_doubles.py) that stamps a checkerboard on each crop
and holds crops back across clips, so these tests check the pipeline's own contract: every frame
comes out once, in order, only the selected faces change, and nothing else does.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine_doubles import CheckerboardEngineDouble, StampEngineDouble, stamp
from ipfvr_core.errors import Canceled, InputError
from ipfvr_core.faces.loader import load_analyzer
from ipfvr_core.faces.paste import face_region_mask
from ipfvr_core.restore import RestoreOptions, Restorer
from ipfvr_core.video_io import VideoWriter, iter_frames, probe
from media_factory import first_frames
from report_factory import sample_report


@pytest.fixture(scope="module")
def analyzer():
    return load_analyzer("dlib")


def _frames(path: Path) -> list[np.ndarray]:
    return [f.image for f in iter_frames(path)]


def _write(path: Path, frames: list[np.ndarray], fps: Fraction = Fraction(25), crf: int = 0) -> Path:
    h, w = frames[0].shape[:2]
    with VideoWriter(path, width=w, height=h, fps=fps, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def _two_people(carphone: Path, astronaut: np.ndarray, n: int = 8) -> list[np.ndarray]:
    """Carphone's man (left, scaled ×2) beside the astronaut (right), the astronaut drifting 1 px/frame."""
    men = [cv2.resize(f, (352, 288), interpolation=cv2.INTER_CUBIC) for f in _frames(carphone)[:n]]
    face = cv2.resize(astronaut[:300, 100:400], (288, 288), interpolation=cv2.INTER_AREA)  # (288, 288, 3)
    out = []
    for i, man in enumerate(men):
        right = np.roll(face, i, axis=1)
        out.append(np.ascontiguousarray(np.concatenate([man, right], axis=1)))  # (288, 640, 3)
    return out


def test_restores_every_frame_in_order_with_a_delaying_engine(
    analyzer, carphone_distorted, carphone_reference, tmp_path
):
    engine = CheckerboardEngineDouble(face_size=128, clip_length=5, delay=3)
    out = tmp_path / "out.mp4"
    events = []
    report = Restorer(analyzer, engine).restore(
        carphone_distorted, [carphone_reference], out, RestoreOptions(embed_every=4), progress=events.append
    )
    src, dst = probe(carphone_distorted), probe(out)
    assert dst.frame_count == src.frame_count == 120
    assert dst.fps == src.fps
    assert abs(dst.duration_s - src.duration_s) < 1 / float(src.fps) + 1e-6
    assert report.frames_total == 120
    assert [fr.index for fr in report.frames] == list(range(120))
    assert report.frames_restored >= 96, report.frames_restored  # dlib misses some degraded frames
    assert engine.pushed == report.frames_restored
    assert engine.sessions == len([t for t in report.tracks if t.restored])
    assert all(n is not None and 16 <= n <= 128 for n in engine.native_sizes)
    ident = report.identity
    # Embeddings sampled (every 4th frame, plus faces that start a track or crowd another); the report says so.
    assert ident.metric == "l2" and ident.embed_every == 4
    assert ident.before.n == ident.after.n == ident.frames_measured
    assert report.frames_restored / 4 <= ident.frames_measured < report.frames_restored
    # progress is monotone and ends at 1
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {e.stage for e in events} >= {"analyze", "restore"}
    assert set(report.timings_s) >= {"decode", "detect", "embed", "align", "engine", "paste", "encode", "total"}


def test_embed_every_1_measures_every_restored_frame(analyzer, carphone_distorted, carphone_reference, tmp_path):
    src = first_frames(carphone_distorted, tmp_path / "clip.mp4", 40)
    engine = CheckerboardEngineDouble(face_size=128, clip_length=8)
    report = Restorer(analyzer, engine).restore(
        src, [carphone_reference], tmp_path / "out.mp4", RestoreOptions(embed_every=1)
    )
    ident = report.identity
    assert ident.embed_every == 1
    assert ident.frames_measured == ident.after.n == report.frames_restored >= 32


@pytest.mark.parametrize("bad", [0, -1, 1001, 2.5, True])
def test_embed_every_is_checked(bad) -> None:
    with pytest.raises(InputError) as err:
        RestoreOptions(embed_every=bad).validate()
    assert err.value.field == "embed_every"


def test_every_face_gets_its_own_frames_crop(analyzer, carphone_pristine, astronaut_rgb, astronaut_png, tmp_path):
    # Every face restored side by side (the man, the astronaut, and a third face dlib finds in 7 of the
    # astronaut frames) by sessions that hold back 4, 0 and 4 crops, in clips of 3: each pasted crop
    # must be the one made from that face in that frame. The double adds to crop k of session s a
    # noise stamp naming (s, k); each face of the output is warped back to the crop and named by
    # correlation with every stamp.
    from ipfvr_core.faces.align import estimate_affine, warp_face

    frames = _two_people(carphone_pristine, astronaut_rgb)
    src = _write(tmp_path / "two.mp4", frames)
    out = tmp_path / "out.mp4"
    engine = StampEngineDouble(face_size=128, clip_length=3, delays=(4, 0))
    report = Restorer(analyzer, engine).restore(
        src, [astronaut_png], out, RestoreOptions(faces="all", crf=0, smoothing_sigma=0)
    )
    tracks = [t for t in report.tracks if t.restored]
    assert engine.sessions == len(tracks) == 3 and sorted(t.frames for t in tracks) == [7, 8, 8]
    inner = (slice(24, 104), slice(24, 104))  # the middle of the crop, well inside the paste mask
    stamps = {(s, k): stamp(s, k, 128)[inner].ravel().astype(np.float64) for s in range(3) for k in range(8)}
    first_frame: dict[int, int] = {}  # session -> the frame its crop 0 belongs to
    centres: dict[int, list[np.ndarray]] = {}  # session -> where its crops were found
    for index, (image, restored) in enumerate(zip(_frames(src), _frames(out), strict=True)):
        named = 0
        for face in analyzer.detect(image):
            affine = estimate_affine(face.kps, 128)
            change = warp_face(restored, affine, 128).astype(np.float64) - warp_face(image, affine, 128)  # (S, S, 3)
            change = change.mean(axis=2)[inner].ravel()
            scores = {key: float(np.corrcoef(change, pattern)[0, 1]) for key, pattern in stamps.items()}
            (session, position), best = max(scores.items(), key=lambda item: item[1])
            if best < 0.3:
                continue  # a face the pipeline left alone (its track is not restored in this frame)
            runner_up = sorted(scores.values())[-2]
            assert best - runner_up > 0.2, (index, session, position, best, runner_up)
            start = first_frame.setdefault(session, index - position)
            assert index - position == start, f"frame {index} shows crop {position} of a track from frame {start}"
            centres.setdefault(session, []).append(face.kps.mean(axis=0))
            named += 1
        counts = report.frames[index]
        assert named == min(counts.restored, counts.faces), index  # a bridged face is not detected here
    assert sorted(first_frame) == [0, 1, 2]
    for session, points in centres.items():  # each session's crops sit on one face (the faces drift < 20 px)
        assert np.ptp(np.array(points), axis=0).max() < 40, (session, points)


def test_two_people_only_the_reference_person_changes(
    analyzer, carphone_pristine, astronaut_rgb, astronaut_png, tmp_path
):
    frames = _two_people(carphone_pristine, astronaut_rgb)
    src = _write(tmp_path / "two.mp4", frames)
    plain = _write(tmp_path / "plain.mp4", _frames(src))  # the same re-encode, no restoration
    out = tmp_path / "out.mp4"
    engine = CheckerboardEngineDouble(face_size=128, delay=0)
    report = Restorer(analyzer, engine).restore(src, [astronaut_png], out, RestoreOptions(crf=0, smoothing_sigma=0))

    assert [t.restored for t in report.tracks].count(True) == 1
    restored_frames = report.frames_restored
    assert restored_frames == len(frames)
    assert all(fr.faces >= 2 for fr in report.frames)
    changed_inside = 0
    for i, (a, b) in enumerate(zip(_frames(plain), _frames(out), strict=True)):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)  # (H, W)
        assert diff[:, :352].max() == 0, f"frame {i}: the carphone man (not the reference) changed"
        ys, xs = np.nonzero(diff)
        assert xs.min() >= 352, f"frame {i}: pixels changed outside the astronaut's half"
        changed_inside += int((diff > 10).sum())
    assert changed_inside > 1000, "the astronaut's face should carry the engine's output"


def test_changed_pixels_stay_inside_the_face_region(
    analyzer, carphone_pristine, astronaut_rgb, astronaut_png, tmp_path
):
    from ipfvr_core.faces.align import estimate_affine

    frames = _two_people(carphone_pristine, astronaut_rgb, n=5)
    src = _write(tmp_path / "two.mp4", frames)
    plain = _frames(_write(tmp_path / "plain.mp4", _frames(src)))
    out = tmp_path / "out.mp4"
    Restorer(analyzer, CheckerboardEngineDouble(face_size=128, delay=0)).restore(
        src, [astronaut_png], out, RestoreOptions(crf=0, smoothing_sigma=0)
    )
    for a, b in zip(plain, _frames(out), strict=True):
        faces = [f for f in analyzer.detect(a) if f.bbox[0] >= 352]
        assert len(faces) == 1
        region = face_region_mask(a.shape, estimate_affine(faces[0].kps, 128), 128)
        region = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # chroma is 2×2
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)
        assert diff[~region].max() == 0


def test_frames_without_a_face_pass_through(analyzer, carphone_pristine, carphone_reference, tmp_path):
    frames = _frames(carphone_pristine)[:40]
    blank = range(8, 8 + RestoreOptions().max_gap_frames + 4)  # longer than a bridgeable detector miss
    for i in blank:
        frames[i] = np.full_like(frames[i], 90)  # no face in these frames
    src = _write(tmp_path / "gap.mp4", frames)
    plain = _frames(_write(tmp_path / "plain.mp4", _frames(src)))
    out = tmp_path / "out.mp4"
    report = Restorer(analyzer, CheckerboardEngineDouble(face_size=128, delay=2)).restore(
        src, [carphone_reference], out, RestoreOptions(crf=0)
    )
    result = _frames(out)
    assert len(result) == 40
    for i in blank:
        assert report.frames[i].faces == 0 and report.frames[i].restored == 0
        assert np.array_equal(result[i], plain[i]), f"frame {i} has no face and must be unchanged"
    assert report.frames[0].restored == 1 and report.frames[-1].restored == 1


def test_nobody_matches_among_several_faces_is_refused(analyzer, insightface_t1, astronaut_png, tmp_path):
    from ipfvr_core.image_io import read_image

    group = read_image(insightface_t1)
    group = group[: group.shape[0] // 2 * 2, : group.shape[1] // 2 * 2]
    src = _write(tmp_path / "group.mp4", [group] * 5)  # min_track_frames
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError) as err:
        Restorer(analyzer, CheckerboardEngineDouble()).restore(src, [astronaut_png], out)
    assert err.value.code == "target_not_found" and err.value.field == "reference"
    assert not out.exists()
    # faces='all' restores everyone
    report = Restorer(analyzer, CheckerboardEngineDouble()).restore(
        src, [astronaut_png], out, RestoreOptions(faces="all")
    )
    assert all(fr.restored >= 4 for fr in report.frames)


def test_one_face_at_a_time_is_the_target_even_when_unverified(analyzer, carphone_pristine, astronaut_png, tmp_path):
    src = _write(tmp_path / "man.mp4", _frames(carphone_pristine)[:6])
    out = tmp_path / "out.mp4"
    report = Restorer(analyzer, CheckerboardEngineDouble()).restore(src, [astronaut_png], out)
    assert report.frames_restored == 6
    assert any("identity not verified" in w for w in report.warnings)


def test_cancel_leaves_nothing_at_the_output(analyzer, carphone_distorted, carphone_reference, tmp_path):
    src = first_frames(carphone_distorted, tmp_path / "clip.mp4", 30)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, compare = out_dir / "out.mp4", out_dir / "cmp.mp4"
    calls = {"n": 0}

    def should_cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 40  # after the analyze pass (30 calls), mid-restore

    with pytest.raises(Canceled):
        Restorer(analyzer, CheckerboardEngineDouble(clip_length=5)).restore(
            src,
            [carphone_reference],
            out,
            RestoreOptions(compare_path=compare),
            should_cancel=should_cancel,
        )
    assert calls["n"] == 41  # it was mid-restore
    assert not out.exists() and not compare.exists()
    assert list(out_dir.iterdir()) == []


def test_compare_video_is_input_beside_output(analyzer, carphone_pristine, carphone_reference, tmp_path):
    src = _write(tmp_path / "in.mp4", _frames(carphone_pristine)[:5], crf=0)
    out, compare = tmp_path / "out.mp4", tmp_path / "cmp.mp4"
    Restorer(analyzer, CheckerboardEngineDouble(delay=0)).restore(
        src, [carphone_reference], out, RestoreOptions(crf=0, compare_path=compare)
    )
    side = _frames(compare)
    assert len(side) == 5 and side[0].shape == (144, 352, 3)
    # below the labels, a second yuv420p round trip (and chroma shared across the seam): compare on average
    assert np.abs(side[0][30:, 176:].astype(int) - _frames(out)[0][30:].astype(int)).mean() < 2.5
    assert np.abs(side[0][30:, :176].astype(int) - _frames(src)[0][30:].astype(int)).mean() < 2.5
    # each half carries its label: a dark box with light text, different on the two sides
    left_label, right_label = side[0][4:17, 3:32].astype(int), side[0][4:17, 179:208].astype(int)
    for box in (left_label, right_label):
        assert np.median(box) < 40 and box.max() > 200
    assert np.abs(left_label - right_label).mean() > 10


def test_label_writes_the_text_on_a_copy() -> None:
    from ipfvr_core.restore import label

    image = np.full((144, 176, 3), 128, np.uint8)
    input_label, engine_label = label(image, "input"), label(image, "restored \u00b7 reference")
    assert (image == 128).all() and input_label.shape == image.shape
    assert (input_label[:20, :60] != 128).any() and (input_label[40:] == 128).all()
    assert (input_label != engine_label).any()


def test_report_file_mode_follows_the_umask(tmp_path: Path) -> None:
    """The report is renamed from a temporary file; it must not keep mkstemp's private 0600."""
    from ipfvr_core.restore import write_report

    report = sample_report()
    old = os.umask(0o022)
    try:
        path = write_report(report, tmp_path / "report.json")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert json.loads(path.read_text()) == report.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
