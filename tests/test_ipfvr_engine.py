"""IPFVREngine sessions: streaming real aligned crops clip by clip on a tiny checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data, transform

from ipfvr_core.diffusion.clips import plan_clips
from ipfvr_core.diffusion.random_checkpoint import write_tiny_checkpoint
from ipfvr_core.engines.base import IdentityCondition
from ipfvr_core.engines.ipfvr import IPFVREngine
from ipfvr_core.errors import Canceled, ConfigError, InputError


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded; on shared busy cores extra threads only spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0, lora_names=("alice",))


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> IPFVREngine:
    return IPFVREngine.from_pretrained(tiny_dir, device="cpu", overrides={"num_inference_steps": 2})


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """40 aligned 64 px crops: the astronaut portrait drifting by a pixel a frame, with noise (a degraded track)."""
    face = (transform.resize(data.astronaut(), (64, 64), anti_aliasing=True) * 255).astype(np.float32)
    rng = np.random.RandomState(0)
    frames = [np.roll(face, (i % 6) - 3, axis=1) + rng.normal(0, 12, face.shape) for i in range(40)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)  # (40, 64, 64, 3)


def _identity(dim: int = 128, metric: str = "l2", **kwargs: object) -> IdentityCondition:
    emb = np.random.RandomState(3).randn(dim).astype(np.float32)
    return IdentityCondition(embeddings=[emb], metric=metric, **kwargs)  # type: ignore[arg-type]


def _stream(
    engine: IPFVREngine, crops: np.ndarray, chunk: int, seed: int = 0, **kwargs: object
) -> tuple[np.ndarray, object]:
    session = engine.open_session(_identity(**kwargs), seed=seed)  # type: ignore[arg-type]
    outputs = [session.push(crops[i : i + chunk]) for i in range(0, len(crops), chunk)]
    outputs.append(session.flush())
    return np.concatenate(outputs), session


def test_engine_attributes(engine: IPFVREngine) -> None:
    assert engine.name == "ipfvr" and engine.face_size == 64 and engine.clip_length == 24
    versions = engine.versions()
    assert versions["engine"] == "ipfvr" and versions["weights"].startswith("tiny")


def test_streaming_returns_every_crop_in_order(engine: IPFVREngine, crops: np.ndarray) -> None:
    counts: list[int] = []
    session = engine.open_session(
        _identity(attributes={"gender": "female", "age": 45}, prompt="astronaut suit"), seed=1
    )
    outputs = []
    for i in range(0, 40, 10):
        out = session.push(crops[i : i + 10])
        counts.append(len(out))
        outputs.append(out)
    tail = session.flush()
    outputs.append(tail)
    restored = np.concatenate(outputs)
    assert restored.shape == crops.shape and restored.dtype == np.uint8
    assert counts == [0, 0, 16, 16] and len(tail) == 8  # held back: the last m frames of each clip
    spans = [(s.start, s.stop, s.context) for s in session.clips_run]
    assert spans == [(s.start, s.stop, s.context) for s in plan_clips(40, 24, 8)]
    assert "woman" in session.conditions.face2text.prompt and "astronaut suit" in session.conditions.face2text.prompt
    assert [s.name for s in session.conditions.negative_streams] == ["quality", "attribute"]


def test_chunking_and_seed_do_not_change_the_cut(engine: IPFVREngine, crops: np.ndarray) -> None:
    whole, s1 = _stream(engine, crops[:30], chunk=30, seed=5)
    pieces, s2 = _stream(engine, crops[:30], chunk=7, seed=5)
    assert np.array_equal(whole, pieces)  # same seed, same clips: identical result however the track is pushed
    assert [c.stop for c in s1.clips_run] == [24, 30]  # type: ignore[attr-defined]
    assert s1.clips_run == s2.clips_run  # type: ignore[attr-defined]
    other, _ = _stream(engine, crops[:30], chunk=30, seed=6)
    assert not np.array_equal(whole, other)


@pytest.mark.parametrize("length", [1, 5])
def test_track_shorter_than_one_clip(engine: IPFVREngine, crops: np.ndarray, length: int) -> None:
    session = engine.open_session(_identity(), seed=0)
    assert len(session.push(crops[:length])) == 0
    out = session.flush()
    assert out.shape == (length, 64, 64, 3)
    assert np.abs(out.astype(np.int16) - crops[:length]).mean() > 1, "the short track was not restored"
    assert len(session.flush()) == 0  # nothing left


def test_progress_and_cancellation(engine: IPFVREngine, crops: np.ndarray) -> None:
    reports: list[tuple[int, int]] = []
    session = engine.open_session(_identity(), seed=0)
    session.push(crops[:24], progress=lambda done, total: reports.append((done, total)))
    assert reports == [(1, 2), (2, 2)]
    calls = {"n": 0}

    def cancel_after_first_step() -> bool:
        calls["n"] += 1
        return calls["n"] > 1  # checked before the clip, then after each step: stop after step 1 of 2

    progress: list[int] = []
    with pytest.raises(Canceled):
        session.push(
            crops[24:40], progress=lambda done, total: progress.append(done), should_cancel=cancel_after_first_step
        )
    assert progress == [1]  # stopped between denoising steps
    assert len(session.clips_run) == 1  # the interrupted clip was not recorded


def test_identity_must_match_the_weights(engine: IPFVREngine, crops: np.ndarray) -> None:
    with pytest.raises(ConfigError) as err:
        engine.open_session(_identity(dim=512, metric="cosine"))
    assert err.value.field == "id_embedding_dim"
    with pytest.raises(ConfigError) as err:
        engine.open_session(_identity(metric="cosine"))
    assert err.value.field == "id_encoder"
    with pytest.raises(InputError) as err:
        engine.open_session(IdentityCondition(embeddings=[], metric="l2"))
    assert err.value.code == "invalid_reference"
    session = engine.open_session(_identity())
    with pytest.raises(InputError) as err:
        session.push(crops[:4, :32, :32])
    assert err.value.field == "clip"


def test_lora_by_name_from_the_weights_folder(tiny_dir: Path, crops: np.ndarray) -> None:
    engine = IPFVREngine.from_pretrained(tiny_dir, overrides={"num_inference_steps": 1, "clip_length": 8, "overlap": 2})
    base, _ = _stream(engine, crops[:8], chunk=8)
    unet = engine.pipeline.unet
    engine.set_lora("alice")
    with_lora, _ = _stream(engine, crops[:8], chunk=8)
    assert engine.pipeline.unet is unet and engine.versions()["lora"] == "alice"
    assert not np.array_equal(base, with_lora)
    engine.set_lora(None)
    assert np.array_equal(_stream(engine, crops[:8], chunk=8)[0], base)
    with pytest.raises(ConfigError) as err:
        engine.set_lora("nobody")
    assert err.value.code == "weights_invalid" and err.value.field == "lora"


def _tiny_celeba_onnx(path: Path, present: tuple[str, ...]) -> Path:
    """A CelebA-40 classifier stand-in: average pool -> linear, biased so that ``present`` are on."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ipfvr_core.diffusion.face2text import CELEBA_ATTRIBUTES

    bias = np.array([5.0 if name in present else -5.0 for name in CELEBA_ATTRIBUTES], dtype=np.float32)
    weight = np.zeros((3, 40), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        "celeba_test_double",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 40])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_celeba_attribute_model_feeds_face2text(tiny_dir: Path, crops: np.ndarray, tmp_path: Path) -> None:
    model = _tiny_celeba_onnx(tmp_path / "celeba.onnx", present=("Male", "No_Beard", "Eyeglasses", "Young"))
    engine = IPFVREngine.from_pretrained(
        tiny_dir, overrides={"num_inference_steps": 1, "celeba_attribute_model": str(model)}
    )
    conditions = engine.conditions_for(_identity(aligned_references=[crops[0]]))
    assert conditions.face2text.description == "a young man with eyeglasses"
    assert conditions.face2text.attribute_negative.split(", ")[:2] == ["woman", "old"]
    assert "beard" in conditions.face2text.attribute_negative
    with pytest.raises(ConfigError) as err:
        IPFVREngine.from_pretrained(tiny_dir, overrides={"celeba_attribute_model": str(tmp_path / "missing.onnx")})
    assert err.value.field == "celeba_attribute_model"


def test_guidance_scale_rescales_the_negative_streams_keeping_their_ratios(engine: IPFVREngine) -> None:
    default = engine.conditions_for(_identity(negative_prompt="plastic skin"))
    scaled = engine.conditions_for(_identity(negative_prompt="plastic skin", guidance_scale=3.0))
    assert [s.name for s in scaled.negative_streams] == [s.name for s in default.negative_streams]
    assert len(default.negative_streams) >= 2
    assert sum(s.weight for s in scaled.negative_streams) == pytest.approx(3.0)
    base, new = default.negative_streams, scaled.negative_streams
    assert new[0].weight / new[1].weight == pytest.approx(base[0].weight / base[1].weight)
