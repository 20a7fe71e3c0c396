"""The reference engine on real data: carphone's own pristine frame brings back detail that is really
there (checked against the ground truth, with no identity network), someone else's photo changes
nothing (the hijack guard), and the pipeline reports which reference each frame used."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ipfvr_core.engines.base import IdentityCondition
from ipfvr_core.engines.reference import ReferenceConfig, ReferenceEngine, gate
from ipfvr_core.errors import ConfigError
from ipfvr_core.evaluation.judges import DlibJudge
from ipfvr_core.faces.align import estimate_affine, native_size, warp_face
from ipfvr_core.faces.paste import template_face_mask
from ipfvr_core.report import Transfer
from ipfvr_core.video_io import iter_frames

S = 256  # crop side for these tests (the engine's default is 512; everything scales with it)
FRAMES = (4, 12, 20, 60, 70, 80)  # judged frames of carphone: none is the reference (frame 0)


@pytest.fixture(scope="module")
def analyzer():
    from ipfvr_core.faces.dlib_backend import DlibFaceAnalyzer

    return DlibFaceAnalyzer()


@pytest.fixture(scope="module")
def carphone(carphone_distorted: Path, carphone_pristine: Path, analyzer) -> dict:
    """Aligned crops of the degraded frames, the same crops of the ground truth, and the reference.

    The alignment comes from landmarks on the pristine frames, so the test isolates the engine
    from detection on degraded video (which the pipeline tests cover).
    """
    pristine = [f.image for f in iter_frames(carphone_pristine)]
    distorted = [f.image for f in iter_frames(carphone_distorted)]
    affines = [estimate_affine(analyzer.detect(pristine[i])[0].kps, S) for i in FRAMES]
    reference = warp_face(pristine[0], estimate_affine(analyzer.detect(pristine[0])[0].kps, S), S)
    return {
        "lq": np.stack([warp_face(distorted[i], a, S) for i, a in zip(FRAMES, affines, strict=True)]),  # (T, S, S, 3)
        "gt": np.stack([warp_face(pristine[i], a, S) for i, a in zip(FRAMES, affines, strict=True)]),  # (T, S, S, 3)
        "native": int(np.median([native_size(a, S) for a in affines])),
        "reference": reference,
    }


@pytest.fixture(scope="module")
def other_person(astronaut_rgb: np.ndarray, analyzer) -> np.ndarray:
    return warp_face(astronaut_rgb, estimate_affine(analyzer.detect(astronaut_rgb)[0].kps, S), S)


def _engine() -> ReferenceEngine:
    return ReferenceEngine(ReferenceConfig(face_size=S, base="none"))


def _identity(*references: np.ndarray) -> IdentityCondition:
    return IdentityCondition(embeddings=[], metric="l2", aligned_references=list(references))


def _fine_band_correlation(a: np.ndarray, b: np.ndarray, native: int) -> float:
    """Correlation of the detail bands (between 0.5 and 2 native pixels) of two crops inside the face."""
    weight = template_face_mask(S)
    sig = S / native

    def band(x: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return (cv2.GaussianBlur(g, (0, 0), 0.5 * sig) - cv2.GaussianBlur(g, (0, 0), 2 * sig)) * weight

    x, y = band(a), band(b)
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def _masked_psnr(a: np.ndarray, b: np.ndarray) -> float:
    w = template_face_mask(S)[..., None]
    mse = float((((a.astype(np.float64) - b.astype(np.float64)) ** 2) * w).sum() / (w.sum() * 3))
    return 10 * np.log10(255.0**2 / mse)


def test_own_reference_brings_back_the_ground_truths_detail(carphone: dict) -> None:
    session = _engine().open_session(_identity(carphone["reference"]))
    out = session.push(carphone["lq"], native_size=carphone["native"])
    notes = session.crop_notes(len(out))
    assert out.shape == carphone["lq"].shape and out.dtype == np.uint8
    assert all(n.reference == 0 and n.confidence > 0.5 for n in notes), notes
    # Identity, judged as `ipfvr eval` does (dlib's ResNet at the ground truth's face box); the
    # engine never sees this network.
    judge = DlibJudge()
    l2_before, l2_after = [], []
    for lq, o, gt in zip(carphone["lq"], out, carphone["gt"], strict=True):
        box = judge.analyzer.detect(gt)[0].bbox
        truth = judge.embed(gt, box)
        l2_before.append(judge.compare(judge.embed(lq, box), truth))
        l2_after.append(judge.compare(judge.embed(o, box), truth))
    assert np.mean(l2_after) < np.mean(l2_before) - 0.08, (l2_before, l2_after)
    # The detail band of the output matches the truth's better than the degraded crop's does.
    before = [
        _fine_band_correlation(lq, gt, carphone["native"])
        for lq, gt in zip(carphone["lq"], carphone["gt"], strict=True)
    ]
    after = [_fine_band_correlation(o, gt, carphone["native"]) for o, gt in zip(out, carphone["gt"], strict=True)]
    assert np.mean(after) > np.mean(before) + 0.02, (before, after)
    psnr_before = np.mean([_masked_psnr(lq, gt) for lq, gt in zip(carphone["lq"], carphone["gt"], strict=True)])
    psnr_after = np.mean([_masked_psnr(o, gt) for o, gt in zip(out, carphone["gt"], strict=True)])
    assert psnr_after >= psnr_before, (psnr_before, psnr_after)


def test_someone_elses_reference_changes_nothing(carphone: dict, other_person: np.ndarray) -> None:
    session = _engine().open_session(_identity(other_person))
    out = session.push(carphone["lq"], native_size=carphone["native"])
    notes = session.crop_notes(len(out))
    # No base restoration here, so "no transfer" means the crops come back bit for bit.
    np.testing.assert_array_equal(out, carphone["lq"])
    assert all(n.reference is None and n.confidence == 0.0 for n in notes), notes


def test_the_reference_that_matches_is_chosen_among_several(carphone: dict, other_person: np.ndarray) -> None:
    session = _engine().open_session(_identity(other_person, carphone["reference"]))
    out = session.push(carphone["lq"], native_size=carphone["native"])
    assert {n.reference for n in session.crop_notes(len(out))} == {1}


def test_notes_follow_the_crops_across_pushes(carphone: dict) -> None:
    session = _engine().open_session(_identity(carphone["reference"]))
    first = session.push(carphone["lq"][:2], native_size=carphone["native"])
    second = session.push(carphone["lq"][2:], native_size=carphone["native"])
    assert len(session.crop_notes(len(first))) == 2
    assert len(session.crop_notes(len(second))) == len(FRAMES) - 2
    assert len(session.flush()) == 0 and session.crop_notes(0) == []


def test_transfer_is_deterministic(carphone: dict) -> None:
    a = _engine().open_session(_identity(carphone["reference"])).push(carphone["lq"], native_size=carphone["native"])
    b = _engine().open_session(_identity(carphone["reference"])).push(carphone["lq"], native_size=carphone["native"])
    np.testing.assert_array_equal(a, b)


def test_gate_is_a_ramp() -> None:
    assert gate(0.30, 0.45, 0.55) == 0.0
    assert gate(0.45, 0.45, 0.55) == 0.0
    assert gate(0.50, 0.45, 0.55) == pytest.approx(0.5)
    assert gate(0.70, 0.45, 0.55) == 1.0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"base": "gfpgan"}, "base"),
        ({"flow_side": 8}, "flow_side"),
        ({"flow_momentum": 1.0}, "flow_momentum"),
        ({"gate_low": 0.6, "gate_high": 0.5}, "gate_low"),
        ({"detail_cutoff": 0.0}, "detail_cutoff"),
        ({"face_size": 32}, "face_size"),
    ],
)
def test_config_errors_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ReferenceConfig(**changes)
    assert err.value.field == field


@pytest.fixture(scope="module")
def short_carphone(tmp_path_factory: pytest.TempPathFactory, carphone_distorted: Path) -> Path:
    from ipfvr_core.video_io import VideoWriter, probe

    info = probe(carphone_distorted)
    path = tmp_path_factory.mktemp("clips") / "carphone12.mp4"
    with VideoWriter(path, width=info.width, height=info.height, fps=info.fps, crf=0, preset="veryfast") as w:
        for f in iter_frames(carphone_distorted, info):
            if f.index >= 12:
                break
            w.write(f.image)
    return path


def test_no_hijack_through_the_pipeline(short_carphone: Path, astronaut_png: Path, analyzer, tmp_path: Path) -> None:
    """Someone else's photo with faces='all': the reference engine's video is the baseline's, bit for bit."""
    from ipfvr_core.engines.baseline import BaselineConfig, BaselineEngine
    from ipfvr_core.restore import RestoreOptions, Restorer

    size = 128
    options = RestoreOptions(faces="all", crf=0)
    reference_engine = ReferenceEngine(ReferenceConfig(face_size=size))
    guarded = Restorer(analyzer, reference_engine).restore(
        short_carphone, [astronaut_png], tmp_path / "ref.mp4", options
    )
    Restorer(analyzer, BaselineEngine(BaselineConfig(face_size=size))).restore(
        short_carphone, [astronaut_png], tmp_path / "base.mp4", options
    )
    transfers = [t for fr in guarded.frames for t in fr.transfer]
    assert transfers and all(t == Transfer(reference=None, confidence=0.0) for t in transfers), transfers
    ours = [f.image for f in iter_frames(tmp_path / "ref.mp4")]
    theirs = [f.image for f in iter_frames(tmp_path / "base.mp4")]
    assert len(ours) == len(theirs) == 12
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_report_names_the_reference_of_each_frame(
    short_carphone: Path, carphone_pristine: Path, analyzer, tmp_path: Path
) -> None:
    from PIL import Image

    from ipfvr_core.restore import RestoreOptions, Restorer

    ref = tmp_path / "pristine0.png"
    Image.fromarray(next(iter(iter_frames(carphone_pristine))).image).save(ref)
    report = Restorer(analyzer, ReferenceEngine(ReferenceConfig(face_size=128, base="none"))).restore(
        short_carphone, [ref], tmp_path / "out.mp4", RestoreOptions()
    )
    restored = [fr for fr in report.frames if fr.restored]
    assert restored
    for fr in restored:
        assert [t.reference for t in fr.transfer] == ["pristine0.png"]
        assert all(0.0 < t.confidence <= 1.0 for t in fr.transfer)
    assert all(fr.transfer == [] for fr in report.frames if not fr.restored)
