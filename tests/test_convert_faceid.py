"""Public weights: the SD-1.5 + AnimateDiff + IP-Adapter-FaceID converter (ipfvr_core.diffusion.convert)
on a tiny SD-shaped checkpoint, and end to end.

* Numerical equivalence with diffusers (the reference implementation) on a tiny SD-shaped U-Net:
  the same synthetic checkpoint through diffusers' ``load_ip_adapter`` + ``IPAdapterAttnProcessor2_0``
  and through our converter + processor gives the same U-Net output.
* End to end: ``ipfvr weights convert`` then ``ipfvr restore --engine ipfvr`` on carphone.

The full-size key mapping is tests/test_convert_faceid_full_size.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from faceid_factory import faceid_state, make_motion_adapter, sd15_unet_config
from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.diffusion.convert import (
    FACEID_LORA,
    convert_faceid,
    convert_faceid_lora,
    convert_image_proj,
)
from ipfvr_core.diffusion.guidance import frame_condition_embeds
from ipfvr_core.diffusion.identity_tokens import IdentityEncoder
from ipfvr_core.diffusion.random_backbone import random_backbone
from ipfvr_core.diffusion.weights import load_pipeline, read_config
from ipfvr_core.errors import ConfigError
from media_factory import first_frames

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- tiny SD-shaped, on disk
def _write_sd15_folder(root: Path, unet2d: UNet2DConditionModel) -> Path:
    """A diffusers-format "SD-1.5" folder (model_index.json and the five component folders, as downloaded):
    the tiny SD-shaped U-Net plus the tiny backbone's other parts."""
    parts = random_backbone("tiny", resolution=64, tokenizer_dir=root.parent / "tokenizer-src", seed=0)
    StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=unet2d,
        scheduler=parts.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def public_like(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny stand-ins of the three downloads, in their public formats."""
    root = tmp_path_factory.mktemp("public")
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(**sd15_unet_config(tiny=True)).eval()
    sd15 = _write_sd15_folder(root / "stable-diffusion-v1-5", unet2d)
    adapter = make_motion_adapter(tiny=True, seed=1, identity_motion=True)
    adapter.save_pretrained(root / "animatediff-motion-adapter")
    faceid = root / "IP-Adapter-FaceID" / "ip-adapter-faceid_sd15.bin"
    faceid.parent.mkdir()
    torch.save(faceid_state(unet2d, rank=4, seed=2), faceid)
    return {"sd15": sd15, "motion_adapter": root / "animatediff-motion-adapter", "faceid": faceid}


@pytest.fixture(scope="module")
def converted(public_like: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("converted")
    report = convert_faceid(
        sd15=public_like["sd15"],
        motion_adapter=public_like["motion_adapter"],
        ip_adapter_faceid=public_like["faceid"],
        output=out,
        config_overrides={"resolution": 64, "num_inference_steps": 4, "clip_length": 8, "overlap": 2},
    )
    assert report.variant == "faceid" and report.identity_layers == 16 and report.lora_rank == 4
    return out


def test_converted_folder_says_what_it_needs(converted: Path, public_like: dict[str, Path]) -> None:
    config = read_config(converted)
    assert (config.id_encoder, config.id_embedding_dim, config.base_loras) == ("arcface", 512, (FACEID_LORA,))
    assert Path(config.unet_folder) == (public_like["sd15"] / "unet").resolve()  # left where it is
    assert Path(config.motion_adapter_folder).is_absolute()
    assert config.init_strength < 1.0  # zero-shot: the LQ video enters only through the SDEdit start
    assert not load_file(str(converted / "ipfvr" / "conv_in_lq.safetensors"))["weight"].any()
    sources = json.loads((converted / "ipfvr" / "converted_from.json").read_text())["sources"]
    assert len(sources["ip_adapter_faceid_sha256"]) == 64


def test_unet_output_matches_diffusers_load_ip_adapter(converted: Path, public_like: dict[str, Path]) -> None:
    """diffusers' FaceID path (load_ip_adapter: IPAdapterAttnProcessor2_0, the LoRA as PEFT adapter faceid_0)
    and ours (converter, IdentityAttnProcessor, base LoRA) give the same noise prediction per frame."""
    scale = 0.7
    reference = StableDiffusionPipeline.from_pretrained(
        public_like["sd15"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
    )
    reference.load_ip_adapter(
        str(public_like["faceid"].parent),
        subfolder="",
        image_encoder_folder=None,
        weight_name=public_like["faceid"].name,
    )
    reference.set_ip_adapter_scale(scale)
    ours = load_pipeline(converted, overrides={"identity_scale": scale})

    frames = 3
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(frames, 4, 16, 16, generator=generator)  # (F, 4, h, w)
    text = torch.randn(1, 7, 32, generator=generator)  # (1, L, D)
    embedding = torch.nn.functional.normalize(torch.randn(1, 512, generator=generator), dim=-1)  # (1, 512)
    t = torch.tensor(501)
    with torch.no_grad():
        expected = reference.unet(
            noise,
            t,
            encoder_hidden_states=text.expand(frames, -1, -1),
            added_cond_kwargs={"image_embeds": [embedding[:, None].expand(frames, -1, -1)]},  # (F, 1, 512)
        ).sample  # (F, 4, h, w)
        tokens = ours.identity_encoder(embedding)  # (1, 4, D)
        sample = torch.cat([noise, torch.zeros_like(noise)], dim=1)  # (F, 8, h, w): zero LQ latents
        sample = sample.permute(1, 0, 2, 3)[None]  # (1, 8, F, h, w)
        condition = frame_condition_embeds(torch.cat([text, tokens], dim=1), frames)  # (F, L+N, D), as the pipeline
        got = ours.unet(sample, t, encoder_hidden_states=condition).sample  # (1, 4, F, h, w)
    got = got[0].permute(1, 0, 2, 3)  # (F, 4, h, w)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Both halves of the identity path matter: without the LoRA, or without the identity K/V, it differs.
    ours.unet.disable_lora()
    with torch.no_grad():
        no_lora = ours.unet(sample, t, encoder_hidden_states=condition).sample
    assert (no_lora[0].permute(1, 0, 2, 3) - expected).abs().max() > 1e-3


def test_a_separate_kohya_format_lora_converts_to_the_same_adapter(
    public_like: dict[str, Path],
    converted: Path,
    tmp_path: Path,
) -> None:
    """ip-adapter-faceid_sd15_lora.safetensors is kohya-format (lora_unet_..., alpha): read through diffusers."""
    state = torch.load(public_like["faceid"], weights_only=True)
    unet2d = UNet2DConditionModel.from_pretrained(public_like["sd15"] / "unet")
    peft_state, rank = convert_faceid_lora(state["ip_adapter"], unet2d)
    kohya: dict[str, torch.Tensor] = {}
    for key, tensor in peft_state.items():
        module, _, kind = key.rpartition(".lora_")
        stem = "lora_unet_" + module.replace(".", "_")
        if kind == "A.weight":
            kohya[f"{stem}.lora_down.weight"] = tensor
            kohya[f"{stem}.alpha"] = torch.tensor(float(rank) / 2)  # alpha r/2: scale 0.5, folded on read
        else:
            kohya[f"{stem}.lora_up.weight"] = tensor * 2
    lora_file = tmp_path / "ip-adapter-faceid_sd15_lora.safetensors"
    save_file(kohya, str(lora_file))
    out = tmp_path / "w"
    convert_faceid(
        sd15=public_like["sd15"],
        motion_adapter=public_like["motion_adapter"],
        ip_adapter_faceid=public_like["faceid"],
        faceid_lora=lora_file,
        output=out,
    )
    a = load_file(str(out / "loras" / "faceid.safetensors"))
    b = load_file(str(converted / "loras" / "faceid.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_plus_v2_needs_the_image_encoder_and_maps_the_perceiver(public_like: dict[str, Path], tmp_path: Path) -> None:
    unet2d = UNet2DConditionModel.from_pretrained(public_like["sd15"] / "unet")
    plus = tmp_path / "ip-adapter-faceid-plusv2_sd15.bin"
    torch.save(faceid_state(unet2d, rank=4, seed=3, plus_clip_dim=32, perceiver_depth=2, perceiver_heads=1), plus)
    args = dict(sd15=public_like["sd15"], motion_adapter=public_like["motion_adapter"], ip_adapter_faceid=plus)
    with pytest.raises(ConfigError) as missing:
        convert_faceid(**args, output=tmp_path / "a")
    assert missing.value.field == "image_encoder"
    parts = random_backbone("tiny", resolution=64, tokenizer_dir=tmp_path / "tok", with_image_encoder=True)
    assert parts.image_encoder is not None
    parts.image_encoder.save_pretrained(tmp_path / "image_encoder")
    report = convert_faceid(
        **args, image_encoder=tmp_path / "image_encoder", output=tmp_path / "b", config_overrides={"resolution": 64}
    )
    config = read_config(tmp_path / "b")
    assert report.variant == "faceid-plusv2"
    assert (config.identity_encoder, config.perceiver_depth, config.perceiver_heads) == ("mlp+perceiver", 2, 1)
    load_pipeline(tmp_path / "b")  # strict load of every converted key


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s["ip_adapter"].pop("1.to_k_ip.weight"), "ip_adapter_faceid"),
        (lambda s: s["ip_adapter"].__setitem__("99.to_k_ip.weight", torch.zeros(1)), "ip_adapter_faceid"),
        (lambda s: s["ip_adapter"].__setitem__("1.to_k_ip.weight", torch.zeros(32, 8)), "ip_adapter_faceid"),
        (lambda s: s["image_proj"].pop("norm.weight"), "ip_adapter_faceid"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_argument(
    public_like: dict[str, Path],
    tmp_path: Path,
    mutate: object,
    field: str,
) -> None:
    state = torch.load(public_like["faceid"], weights_only=True)
    mutate(state)  # type: ignore[operator]
    bad = tmp_path / "bad.bin"
    torch.save(state, bad)
    with pytest.raises(ConfigError) as err:
        convert_faceid(
            sd15=public_like["sd15"],
            motion_adapter=public_like["motion_adapter"],
            ip_adapter_faceid=bad,
            output=tmp_path / "out",
        )
    assert err.value.field == field and err.value.code == "weights_invalid"
    assert not (tmp_path / "out" / "ipfvr" / "config.json").exists()


# ---------------------------------------------------------------------- the CLI, end to end
def _ipfvr(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipfvr", *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=600
    )


def test_cli_converts_then_restores_carphone(
    public_like: dict[str, Path],
    converted: Path,
    carphone_distorted: Path,
    astronaut_png: Path,
    tmp_path: Path,
) -> None:
    """The real FaceID takes 512-d ArcFace embeddings from an insightface pack, which is not on this machine:
    here the synthetic checkpoint's projection takes dlib's 128-d embeddings (``--set id_encoder=dlib``), so
    the converted folder restores real faces end to end with the dlib backend."""
    unet2d = UNet2DConditionModel.from_pretrained(public_like["sd15"] / "unet")
    faceid = tmp_path / "ip-adapter-faceid_sd15.bin"
    torch.save(faceid_state(unet2d, rank=4, seed=4, id_dim=128), faceid)
    weights = tmp_path / "weights"
    convert = [
        "weights",
        "convert",
        "--sd15",
        public_like["sd15"],
        "--motion-adapter",
        public_like["motion_adapter"],
        "--ip-adapter-faceid",
        faceid,
        "-o",
        weights,
        "--set",
        "id_encoder=dlib",
        "--set",
        "resolution=64",
        "--set",
        "num_inference_steps=2",
        "--set",
        "clip_length=8",
        "--set",
        "overlap=2",
        "--init-strength",
        "0.5",
    ]
    r = _ipfvr(*convert)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["lora_rank"] == 4
    again = _ipfvr(*convert)
    assert again.returncode != 0 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1

    clip = first_frames(carphone_distorted, tmp_path / "clip.mp4", 6)
    out = tmp_path / "restored.mp4"
    report = tmp_path / "report.json"
    r = _ipfvr(
        "restore",
        clip,
        "-r",
        astronaut_png,
        "-o",
        out,
        "--engine",
        "ipfvr",
        "--weights",
        weights,
        "--face-backend",
        "dlib",
        "--report",
        report,
    )
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0
    assert json.loads(report.read_text())["versions"]["engine_lora"] == "none"  # the base LoRA is under every one


class Dlib128AnalyzerDouble:
    """Test double: only what the load-time check reads of dlib's analyzer (its name and embedding kind)."""

    name, embedding_dim, metric = "dlib", 128, "l2"


def test_arcface_weights_with_dlib_are_refused_naming_the_face_backend(converted: Path) -> None:
    from ipfvr_core.engines.ipfvr import IPFVREngine
    from ipfvr_core.restore import Restorer

    engine = IPFVREngine.from_pretrained(converted)
    with pytest.raises(ConfigError) as err:
        Restorer(Dlib128AnalyzerDouble(), engine)  # type: ignore[arg-type]
    assert (err.value.code, err.value.field) == ("weights_invalid", "face_backend")
    assert "'dlib'" in err.value.message and "--insightface-dir" in err.value.message


def test_plus_v2_tokens_match_diffusers_faceid_plus_projection(public_like: dict[str, Path]) -> None:
    """Our converted Perceiver (with Plus-v2's shortcut) gives diffusers' IPAdapterFaceIDPlusImageProjection tokens."""
    unet2d = UNet2DConditionModel.from_pretrained(public_like["sd15"] / "unet")
    state = faceid_state(unet2d, rank=4, seed=6, plus_clip_dim=48, perceiver_depth=4, perceiver_heads=1)
    reference = unet2d._convert_ip_adapter_image_proj_to_diffusers(state["image_proj"]).eval()
    converted_state, fields = convert_image_proj(state["image_proj"])
    feature_dim = fields.pop("perceiver_feature_dim")
    config = IPFVRConfig().replace(**fields, perceiver_shortcut_scale=0.8)
    ours = IdentityEncoder.from_config(config, token_dim=32, feature_dim=feature_dim).eval()
    ours.load_state_dict(converted_state, strict=True)

    generator = torch.Generator().manual_seed(7)
    embedding = torch.nn.functional.normalize(torch.randn(1, 512, generator=generator), dim=-1)  # (1, 512)
    patches = torch.randn(1, 10, feature_dim, generator=generator)  # (R=1, P, Dv) CLIP penultimate states
    reference.clip_embeds = patches[:, None]  # (B, images, P, Dv)
    reference.shortcut, reference.shortcut_scale = True, 0.8
    with torch.no_grad():
        expected = reference(embedding)  # (1, N, C)
        got = ours(embedding, patches)  # (1, N, C)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
