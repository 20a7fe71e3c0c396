"""IPFVRPipeline on a tiny random checkpoint (64 px, latent 8x8, few steps)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors import safe_open
from safetensors.torch import load_file

from ipfvr_core.diffusion.attention_processor import IdentityAttnProcessor, identity_processors
from ipfvr_core.diffusion.config import SAMPLERS
from ipfvr_core.diffusion.guidance import frame_condition_embeds
from ipfvr_core.diffusion.lora import add_identity_lora, save_identity_lora
from ipfvr_core.diffusion.pipeline_ipfvr import IPFVRPipeline
from ipfvr_core.diffusion.random_checkpoint import write_tiny_checkpoint
from ipfvr_core.diffusion.weights import CONV_IN_LQ_FILE, load_pipeline, widen_conv_in
from ipfvr_core.errors import Canceled, ConfigError, InputError
from ipfvr_core.faces.base import Face
from tiny_pipeline import FRAMES, emb, lq, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _plain_backbone(tiny_dir: Path) -> UNetMotionModel:
    """The stock motion U-Net with the same widened conv_in and stock SDPA processors everywhere."""
    unet2d = UNet2DConditionModel.from_pretrained(tiny_dir / "unet", local_files_only=True)
    adapter = MotionAdapter.from_pretrained(tiny_dir / "motion_adapter", local_files_only=True)
    plain = UNetMotionModel.from_unet2d(unet2d, adapter)
    widen_conv_in(plain, load_file(str(tiny_dir / CONV_IN_LQ_FILE))["weight"])
    plain.set_attn_processor(AttnProcessor2_0())
    return plain.eval()


@torch.no_grad()
def test_identity_scale_zero_reproduces_plain_backbone(tiny_dir: Path) -> None:
    pipe = load_pipeline(tiny_dir, overrides={"identity_scale": 0.0})
    plain = _plain_backbone(tiny_dir)
    assert len(identity_processors(pipe.unet)) > 0
    assert all(isinstance(p, IdentityAttnProcessor) is False for p in plain.attn_processors.values())
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 8, FRAMES, 8, 8, generator=gen)  # (1, 2C, F, h, w)
    text = pipe.encode_prompt(["a close-up video of a man"])  # (1, 77, D)
    tokens = pipe.encode_identity(id_embeddings=emb()).tokens  # (1, N, D)
    with_id = frame_condition_embeds(torch.cat([text, tokens], dim=1), FRAMES)
    ours = pipe.unet(sample, 500, encoder_hidden_states=with_id).sample
    reference = plain(sample, 500, encoder_hidden_states=frame_condition_embeds(text, FRAMES)).sample
    assert torch.equal(ours, reference)
    # a loaded but inactive LoRA keeps the backbone exact
    pipe.load_lora("alice", str(tiny_dir / "loras" / "alice.safetensors"))
    pipe.set_lora(None)
    assert torch.equal(pipe.unet(sample, 500, encoder_hidden_states=with_id).sample, reference)
    # lambda > 0 makes the identity tokens count
    for processor in identity_processors(pipe.unet).values():
        processor.scale = 1.0
    assert not torch.allclose(pipe.unet(sample, 500, encoder_hidden_states=with_id).sample, reference)


def test_identity_scale_zero_ignores_identity_end_to_end(tiny_dir: Path) -> None:
    pipe = load_pipeline(tiny_dir, overrides={"identity_scale": 0.0, "num_inference_steps": 2})
    a = run(pipe, id_embeddings=emb(1))
    b = run(pipe, id_embeddings=emb(2))
    assert np.array_equal(a, b)
    pipe1 = load_pipeline(tiny_dir, overrides={"identity_scale": 1.0, "num_inference_steps": 2})
    assert not np.allclose(run(pipe1, id_embeddings=emb(1)), run(pipe1, id_embeddings=emb(2)))


@torch.no_grad()
def test_batched_guidance_equals_separate_calls(pipe: IPFVRPipeline) -> None:
    # U-Net level: one call on the stacked 1+S conditions equals S+1 calls
    text = pipe.encode_prompt(["a man", "blurry", "woman"])  # (3, 77, D)
    identity = pipe.encode_identity(id_embeddings=emb())
    tokens = torch.cat([identity.tokens, identity.negative_tokens.expand(2, -1, -1)])  # (3, N, D)
    embeds = torch.cat([text, tokens], dim=1)  # (3, 77+N, D)
    sample = torch.randn(1, 8, FRAMES, 8, 8, generator=torch.Generator().manual_seed(1))
    batched = pipe.unet(
        sample.expand(3, -1, -1, -1, -1), 400, encoder_hidden_states=frame_condition_embeds(embeds, FRAMES)
    ).sample
    separate = torch.cat(
        [
            pipe.unet(sample, 400, encoder_hidden_states=frame_condition_embeds(embeds[c : c + 1], FRAMES)).sample
            for c in range(3)
        ]
    )
    torch.testing.assert_close(batched, separate, rtol=1e-4, atol=1e-5)


def test_batched_pipeline_equals_unbatched(pipe: IPFVRPipeline) -> None:
    unbatched = load_pipeline_like(pipe, condition_batch_size=1)
    np.testing.assert_allclose(run(pipe), run(unbatched), rtol=1e-4, atol=1e-4)


def test_seed_reproducibility(pipe: IPFVRPipeline) -> None:
    a, b, c = run(pipe, seed=7), run(pipe, seed=7), run(pipe, seed=8)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (FRAMES, 64, 64, 3) and a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0


def test_cancellation_mid_denoise(pipe: IPFVRPipeline) -> None:
    seen: list[int] = []

    def stop_after_two(
        _pipe: IPFVRPipeline, step: int, _t: torch.Tensor, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        seen.append(step)
        assert tensors["latents"].shape == (1, 4, FRAMES, 8, 8)
        if step == 1:
            raise Canceled("stop")
        return {}

    with pytest.raises(Canceled):
        run(pipe, callback_on_step_end=stop_after_two)
    assert seen == [0, 1]


def test_lora_save_load_switch_without_reloading(tiny_dir: Path, tmp_path: Path) -> None:
    pipe = load_pipeline(tiny_dir, overrides={"num_inference_steps": 1})
    unet_before = pipe.unet
    params_before = {id(p) for n, p in pipe.unet.named_parameters() if "lora" not in n}
    single: dict[str, object] = {"negative_prompts": [], "guidance_weights": [], "frames": 4}
    base = run(pipe, **single)
    pipe.load_lora("alice", str(tiny_dir / "loras" / "alice.safetensors"))
    pipe.load_lora("bob", str(tiny_dir / "loras" / "bob.safetensors"))
    assert np.array_equal(run(pipe, **single), base)  # loading activates nothing
    pipe.set_lora("alice")
    out_alice = run(pipe, **single)
    pipe.set_lora("bob")
    out_bob = run(pipe, **single)
    assert not np.allclose(out_alice, base) and not np.allclose(out_bob, out_alice)
    pipe.set_lora(None)
    assert np.array_equal(run(pipe, **single), base)
    pipe.set_lora("alice")
    assert np.array_equal(run(pipe, **single), out_alice)
    assert pipe.unet is unet_before and sorted(pipe.loras) == ["alice", "bob"]
    assert params_before <= {id(p) for _, p in pipe.unet.named_parameters()}  # backbone tensors are the same objects

    # save -> load round trip of a new adapter, in the diffusers LoRA file format
    add_identity_lora(pipe.unet, "carol", pipe.ipfvr_config, init_random=True)
    pipe.set_lora("carol")
    out_carol = run(pipe, **single)
    path = save_identity_lora(pipe.unet, "carol", tmp_path / "carol.safetensors")
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        metadata = f.metadata()
    assert keys and all(k.startswith("unet.") and ".lora_" in k for k in keys)
    assert not any("motion_modules" in k for k in keys)
    assert "lora_adapter_metadata" in metadata
    pipe.unload_lora("carol")
    assert np.array_equal(run(pipe, **single), base)  # carol was active: LoRA is now off
    pipe.load_lora("carol", str(path))
    pipe.set_lora("carol")
    assert np.array_equal(run(pipe, **single), out_carol)
    with pytest.raises(ConfigError) as err:
        pipe.set_lora("dave")
    assert err.value.field == "lora"


def test_blending_in_the_loop(pipe: IPFVRPipeline) -> None:
    steps = pipe.planned_steps()
    previous = [torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(steps)]
    plain = run(pipe, output_type="latent")
    copied = load_pipeline_like(pipe, blend_beta=0.0)
    out = run(copied, output_type="latent", previous_latents=previous)
    assert torch.equal(out[:, :, :2], previous[-1])  # beta = 0 copies the overlap at every step
    off = load_pipeline_like(pipe, blend_beta=math.inf, blend_index_offset=1)
    assert torch.equal(run(off, output_type="latent", previous_latents=previous), plain)
    tail = pipe(
        lq(),
        prompt="a",
        id_embeddings=emb(),
        generator=torch.Generator().manual_seed(0),
        cache_tail_frames=2,
        output_type="latent",
    )
    assert tail.step_latents is not None and len(tail.step_latents) == steps
    assert torch.equal(tail.step_latents[-1], tail.frames[:, :, -2:])


def load_pipeline_like(pipe: IPFVRPipeline, **changes: object) -> IPFVRPipeline:
    """A pipeline sharing ``pipe``'s modules with a changed config (no reload)."""
    shared = pipe.with_config(**changes)
    assert shared.unet is pipe.unet and shared.vae is pipe.vae
    return shared


def test_init_strength_runs_the_tail_of_the_schedule(pipe: IPFVRPipeline) -> None:
    steps: list[int] = []
    half = load_pipeline_like(pipe, init_strength=0.67, num_inference_steps=3)
    full = load_pipeline_like(pipe, num_inference_steps=3)
    out = run(half, callback_on_step_end=lambda p, i, t, k: steps.append(int(t)) or {})
    assert len(steps) == 2 and half.planned_steps() == 2
    assert steps == [int(t) for t in _timesteps(pipe, 3)[1:]]
    assert not np.allclose(out, run(full))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_with_sdedit_and_blending(pipe: IPFVRPipeline, sampler: str) -> None:
    sdedit = pipe.with_config(sampler=sampler, num_inference_steps=4, init_strength=0.5)
    expected = {
        "ddim": "DDIMScheduler",
        "dpmsolver++": "DPMSolverMultistepScheduler",
        "euler": "EulerDiscreteScheduler",
        "euler_ancestral": "EulerAncestralDiscreteScheduler",
        "unipc": "UniPCMultistepScheduler",
    }[sampler]
    scheduler = sdedit.make_scheduler()
    assert type(scheduler).__name__ == expected
    assert sampler != "dpmsolver++" or scheduler.config.algorithm_type == "dpmsolver++"
    previous = [torch.zeros(1, 4, 2, 8, 8)] * sdedit.planned_steps()
    out = run(sdedit, previous_latents=previous, frames=4)
    assert out.shape == (4, 64, 64, 3) and np.isfinite(out).all()
    assert not np.allclose(out, run(sdedit, frames=4)), "the previous clip's latents were not blended in"


def test_with_config_refuses_load_time_fields(pipe: IPFVRPipeline) -> None:
    with pytest.raises(ConfigError) as err:
        pipe.with_config(num_identity_tokens=8)
    assert err.value.field == "num_identity_tokens"


def _timesteps(pipe: IPFVRPipeline, n: int) -> list[int]:
    scheduler = pipe.make_scheduler()
    scheduler.set_timesteps(n)
    return [int(t) for t in scheduler.timesteps]


def test_check_inputs_name_the_argument(pipe: IPFVRPipeline) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"lq_frames": np.zeros((4, 32, 32, 3), np.uint8)}, "lq_frames"),
        ({"guidance_weights": [1.0]}, "guidance_weights"),
        ({"prompt": None}, "prompt"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"init_strength": 0.1}, "init_strength"),  # 0.1 x 2 steps leaves none
        ({"previous_latents": [torch.zeros(1, 4, 2, 8, 8)]}, "previous_latents"),
        ({"output_type": "pil"}, "output_type"),
        ({"id_embeddings": None}, "id_embeddings"),
    ]
    for change, field in cases:
        args: dict[str, object] = {
            "lq_frames": lq(),
            "prompt": "a",
            "negative_prompts": ["b", "c"],
            "guidance_weights": [1.0, 1.0],
            "id_embeddings": emb(),
        }
        args.update(change)
        with pytest.raises(InputError) as err:
            pipe(**args)  # type: ignore[arg-type]
        assert err.value.field == field, change
    with pytest.raises(ConfigError) as err:
        run(pipe, id_embeddings=emb(dim=512))
    assert err.value.field == "id_embedding_dim"


class FaceAnalyzerTestDouble:
    """Finds one face per non-black image; the embedding is a fixed function of the mean colour."""

    name = "test-double"
    embedding_dim = 128
    metric = "l2"
    match_threshold = 0.6
    confident_score = 0.5
    track_score = None

    def detect(self, image: np.ndarray) -> list[Face]:
        if image.max() == 0:
            return []
        return [Face(bbox=np.array([0, 0, 63, 63], np.float32), kps=np.zeros((5, 2), np.float32), score=1.0)]

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        return np.full(128, image.mean() / 255.0, dtype=np.float32) + np.arange(128, dtype=np.float32) / 128

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


def test_raw_reference_images_need_a_face(tiny_dir: Path) -> None:
    analyzer = FaceAnalyzerTestDouble()
    pipe = load_pipeline(tiny_dir, overrides={"num_inference_steps": 1}, face_analyzer=analyzer)
    reference = lq(1, seed=5)[0]
    face = analyzer.detect(reference)[0]
    from_images = run(pipe, id_embeddings=None, reference_images=[reference])
    from_embeddings = run(pipe, id_embeddings=analyzer.embed(reference, face)[None])
    assert np.array_equal(from_images, from_embeddings)
    with pytest.raises(InputError) as err:
        run(pipe, id_embeddings=None, reference_images=[np.zeros((64, 64, 3), np.uint8)])
    assert (err.value.code, err.value.field) == ("no_face_in_reference", "reference_images")


def test_perceiver_identity_path_and_reference_concat(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(
        tmp_path,
        seed=1,
        id_embedding_dim=512,
        identity_encoder="mlp+perceiver",
        config_overrides={"reference_embedding_combine": "concat", "num_inference_steps": 1},
    )
    pipe = load_pipeline(root)
    assert pipe.image_encoder is not None and pipe.identity_encoder.uses_patches
    refs = [lq(1, seed=s)[0] for s in (1, 2)]
    identity = pipe.encode_identity(
        id_embeddings=np.random.RandomState(0).randn(2, 512).astype(np.float32), reference_images=refs
    )
    assert identity.tokens.shape == (1, 2 * 4, 32)  # concat: N tokens per reference
    assert not torch.equal(identity.tokens, identity.negative_tokens)
    out = pipe(lq(4), prompt="a", identity=identity, generator=torch.Generator().manual_seed(0)).frames
    assert out.shape == (4, 64, 64, 3) and np.isfinite(out).all()
    with pytest.raises(InputError) as err:
        pipe.encode_identity(id_embeddings=np.zeros((1, 512), np.float32))
    assert err.value.field == "reference_images"
