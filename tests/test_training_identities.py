"""Stage identity on CPU with a tiny model: ``ipfvr identities train`` fits a person's LoRA on their photos,
``ipfvr restore --identity`` uses it, and photos of another person are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skimage.data

import media_factory as mf
from ipfvr_core.diffusion.weights import load_pipeline
from ipfvr_core.training.config import TrainConfig
from training_helpers import ipfvr


@pytest.fixture(scope="module")
def astronaut_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three photos of one person: skimage's astronaut, and a re-lit and a re-cropped crop of her face."""
    from PIL import Image

    from ipfvr_core.evaluation.synth import reference_variant

    folder = tmp_path_factory.mktemp("astronaut-photos")
    image = skimage.data.astronaut()
    face = image[0:300, 100:340]
    paths = []
    for index, photo in enumerate([image, reference_variant(face, "relight", 1), reference_variant(face, "recrop", 2)]):
        Image.fromarray(photo).save(folder / f"photo{index}.png")
        paths.append(folder / f"photo{index}.png")
    return paths


def _tree_digest(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_identities_train_fits_a_lora_that_restore_uses(
    astronaut_photos: list[Path], tiny: Path, tmp_path: Path, carphone_distorted: Path
) -> None:
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(tiny, weights)
    before = _tree_digest(weights)
    photos = [a for p in astronaut_photos for a in ("-r", p)]
    r = ipfvr(
        "identities",
        "train",
        *photos,
        "--name",
        "astro",
        "--weights",
        weights,
        "--steps",
        "60",
        "--learning-rate",
        "5e-3",
        "--face-backend",
        "dlib",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    print(f"\nidentity LoRA, restore loss on the fixed evaluation batch: {summary}")
    assert summary["photos"] == 3 and summary["loss_end"] <= 0.9 * summary["loss_start"], summary
    # the LoRA file is all that changed in the weights folder
    after = _tree_digest(weights)
    assert set(after) - set(before) == {"loras/astro.safetensors"}
    assert all(after[name] == content for name, content in before.items())
    assert ipfvr("identities", "list", "--weights", weights).stdout.split() == ["astro"]
    # a second run does not replace it silently
    again = ipfvr("identities", "train", "-r", astronaut_photos[0], "--name", "astro", "--weights", weights)
    assert again.returncode == 2 and again.stderr.startswith("ipfvr: error: name: identity 'astro' exists"), (
        again.stderr
    )
    # restore with the identity: the LoRA is active and said in the report; an unknown one names the option
    clip = mf.first_frames(carphone_distorted, tmp_path / "clip.mp4", 10)
    report = tmp_path / "report.json"
    common = ["-r", astronaut_photos[0], "--engine", "ipfvr", "--weights", weights, "--faces", "all", "--quiet"]
    r = ipfvr("restore", clip, "-o", tmp_path / "out.mp4", "--identity", "astro", "--report", report, *common)
    assert r.returncode == 0, r.stderr
    restored = json.loads(report.read_text())
    assert restored["versions"]["engine_lora"] == "astro" and restored["options"]["identity"] == "astro"
    assert restored["frames_restored"] >= 8
    from ipfvr_core.engines.ipfvr import IPFVREngine
    from ipfvr_core.errors import ConfigError

    with pytest.raises(ConfigError, match="LoRA file not found") as unknown:
        IPFVREngine.from_pretrained(weights).use_identity("bob")
    assert unknown.value.field == "identity"


def test_identity_photos_must_show_one_person(
    astronaut_photos: list[Path], tiny: Path, tmp_path: Path, tom_hanks: Path
) -> None:
    r = ipfvr(
        "identities",
        "train",
        "-r",
        astronaut_photos[0],
        "-r",
        astronaut_photos[1],
        "-r",
        tom_hanks,
        "--name",
        "mixed",
        "--weights",
        tiny,
        "--face-backend",
        "dlib",
        "--steps",
        "1",
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("ipfvr: error: photos: photo 2 (Tom_Hanks_54745.png) shows another person"), r.stderr
    assert not (tiny / "loras" / "mixed.safetensors").exists()


def test_stage_identity_trains_the_lora_alone(astronaut_photos: list[Path], tiny: Path, tmp_path: Path) -> None:
    from ipfvr_core.faces.loader import load_analyzer
    from ipfvr_core.training.identities import IdentitySettings, train_identity
    from ipfvr_core.training.model import trainable_parameters

    pipe = load_pipeline(tiny)
    from ipfvr_core.diffusion.lora import add_identity_lora

    add_identity_lora(pipe.unet, "astro", pipe.ipfvr_config)
    names = {id(p): n for n, p in pipe.unet.named_parameters()}
    chosen = trainable_parameters(pipe.unet, pipe.identity_encoder, motion=True, lora="astro")
    assert chosen and all("lora_" in names[id(p)] and ".astro." in names[id(p)] for p in chosen)
    assert not any(p.requires_grad for p in pipe.identity_encoder.parameters())
    trained = train_identity(
        astronaut_photos[:1],
        name="astro",
        weights=tiny,
        analyzer=load_analyzer("dlib"),
        work_dir=tmp_path,
        resolution=64,
        settings=IdentitySettings(steps=2),
    )
    assert trained.lora == tmp_path / "loras" / "astro.safetensors" and trained.lora.is_file()
    with pytest.raises(Exception, match="identity_name"):
        TrainConfig(stage="identity", data="d", weights="w", output_dir="o").checked()
