"""Review findings on ipfvr_core/diffusion against diffusers: one test per fix, tiny seeded models only.

Most tests swap the U-Net for :class:`IdealDenoiser`, the exact noise prediction for data that are
N(0, s^2) per element: per frame, linear and deterministic, so the blending arithmetic can be checked
exactly (the real tiny U-Net mixes frames through its motion modules and knows no data). s = 1
would make the probability-flow ODE the identity, so s = 0.5.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, UniPCMultistepScheduler

from ipfvr_core.diffusion.attention_processor import identity_processors
from ipfvr_core.diffusion.blending import (
    blend_overlap,
    blend_weights,
    calibrated_step_weights,
    effective_blend_weights,
    step_fade,
)
from ipfvr_core.diffusion.config import SAMPLERS, IPFVRConfig
from ipfvr_core.diffusion.guidance import frame_condition_embeds
from ipfvr_core.diffusion.pipeline_ipfvr import IPFVRPipeline
from ipfvr_core.diffusion.random_checkpoint import write_tiny_checkpoint
from ipfvr_core.diffusion.samplers import make_sampler, training_noise_scheduler
from ipfvr_core.diffusion.weights import load_pipeline
from ipfvr_core.engines.base import IdentityCondition
from ipfvr_core.engines.ipfvr import IPFVREngine
from ipfvr_core.errors import ConfigError, InputError
from tiny_pipeline import emb, lq, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class IdealDenoiser:
    """U-Net stand-in: eps(x_t) = E[eps | x_t] = sqrt(1 - abar) * x_t / (abar * s^2 + 1 - abar) for x0 ~ N(0, s^2).

    Reads only the noisy half of the (B, 2C, F, h, w) input (the LQ half is ignored).
    """

    def __init__(self, pipeline: IPFVRPipeline, data_std: float = 0.5) -> None:
        self.alphas_cumprod = pipeline.make_scheduler().alphas_cumprod
        self.data_var = data_std**2

    def __call__(self, sample: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> Any:
        x = sample[:, : sample.shape[1] // 2].float()  # (B, C, F, h, w) noisy latents
        abar = self.alphas_cumprod[int(t)]
        eps = (1 - abar).sqrt() * x / (abar * self.data_var + 1 - abar)
        return SimpleNamespace(sample=eps.to(sample.dtype))


def _toy(pipe: IPFVRPipeline, **changes: object) -> IPFVRPipeline:
    """A pipeline over ``pipe``'s modules whose U-Net calls go to an :class:`IdealDenoiser`."""
    toy = pipe.with_config(**changes)
    toy._unet_forward = IdealDenoiser(toy)
    return toy


def _latents(pipe: IPFVRPipeline, seed: int, frames: int = 8, **kwargs: object) -> Any:
    """One clip to latents, with a single positive condition."""
    return pipe(
        lq(frames, seed=seed),
        prompt="a",
        id_embeddings=emb(),
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        **kwargs,
    )


# ---------------------------------------------------------------- 1. overlap frames reuse the noise
def test_overlap_frames_keep_their_variance_with_the_previous_clips_noise(pipe: IPFVRPipeline) -> None:
    # calibrated weights put the final mixing weights at 1/0.61/0.37/0.22: two independent
    # trajectories mixed so would lose 20-30 % of the std of frames 1..3
    toy = _toy(pipe, sampler="ddim", num_inference_steps=10, blend_calibrated=True)
    m = 4
    first = _latents(toy, seed=1, frames=16, cache_tail_frames=m)
    assert first.tail_noise is not None and first.tail_noise.shape == (1, 4, m, 8, 8)
    second = _latents(
        toy, seed=2, frames=16, previous_latents=first.step_latents, previous_noise=first.tail_noise
    ).frames  # (1, C, 16, h, w)
    ratio = [float(second[:, :, j].std() / first.frames[:, :, 16 - m + j].std()) for j in range(m)]
    assert ratio == pytest.approx([1.0] * m, abs=1e-4), ratio  # same start, same trajectory: nothing averaged
    overlap, rest = float(second[:, :, :m].std()), float(second[:, :, m:].std())
    assert abs(overlap / rest - 1.0) < 0.05, (overlap, rest)


def test_previous_noise_is_checked(pipe: IPFVRPipeline) -> None:
    steps = pipe.planned_steps()
    cases: list[tuple[dict[str, object], str]] = [
        ({"previous_noise": torch.zeros(1, 4, 2, 4, 4)}, "previous_noise"),
        (
            {"previous_noise": torch.zeros(1, 4, 3, 8, 8), "previous_latents": [torch.zeros(1, 4, 2, 8, 8)] * steps},
            "previous_noise",
        ),
        ({"previous_noise": torch.zeros(1, 4, 2, 8, 8), "latents": torch.zeros(1, 4, 6, 8, 8)}, "previous_noise"),
    ]
    for change, field in cases:
        with pytest.raises(InputError) as err:
            run(pipe, **change)
        assert err.value.field == field, change


class _PipelineSpy:
    """Delegates to a pipeline and records the keyword arguments and result of every call."""

    def __init__(self, pipeline: IPFVRPipeline) -> None:
        self._pipeline = pipeline
        self.calls: list[tuple[dict[str, Any], Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)

    def __call__(self, frames: np.ndarray, **kwargs: Any) -> Any:
        result = self._pipeline(frames, **kwargs)
        self.calls.append((kwargs, result))
        return result


def test_session_hands_each_clip_the_previous_clips_tail_noise(tiny_dir: Path) -> None:
    engine = IPFVREngine.from_pretrained(tiny_dir, overrides={"clip_length": 6, "overlap": 2, "num_inference_steps": 1})
    spy = _PipelineSpy(engine.pipeline)
    engine.pipeline = spy  # type: ignore[assignment]
    emb = np.random.RandomState(3).randn(128).astype(np.float32)
    session = engine.open_session(IdentityCondition(embeddings=[emb], metric="l2"), seed=0)
    session.push(lq(10))
    session.flush()
    assert len(spy.calls) == 2
    (first_args, first), (second_args, _) = spy.calls
    assert first_args["previous_noise"] is None
    assert first.tail_noise is not None and torch.equal(second_args["previous_noise"], first.tail_noise)


# ---------------------------------------------------------------- 2. blending survives UniPC
def _final_weights(blended: torch.Tensor, unblended: torch.Tensor, previous: torch.Tensor) -> list[float]:
    """Per overlap frame, the weight W with blended = W * previous + (1 - W) * unblended (least squares)."""
    pull, gap = blended - unblended, previous - unblended  # (1, C, m, h, w)
    return [float((pull[:, :, j] * gap[:, :, j]).sum() / (gap[:, :, j] ** 2).sum()) for j in range(gap.shape[2])]


# euler_ancestral adds fresh noise of each clip's own generator after every step: no fixed final weight
@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "euler_ancestral"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_the_blend_survives_every_sampler(pipe: IPFVRPipeline, sampler: str, strength: float) -> None:
    # calibrated weights make the final mixing weight alpha_j (exactly for one-step samplers, to a
    # few % for multistep ones); UniPC's corrector left on kept only ~1/3 of it (0.13 for 0.37)
    toy = _toy(
        pipe,
        sampler=sampler,
        num_inference_steps=8,
        init_strength=strength,
        blend_beta=1.0,
        blend_index_offset=1,
        blend_calibrated=True,
    )
    m = 3
    previous = _latents(toy, seed=1, frames=4, cache_tail_frames=m)
    unblended = _latents(toy, seed=2, frames=4).frames[:, :, :m]
    blended = _latents(toy, seed=2, frames=4, previous_latents=previous.step_latents).frames[:, :, :m]
    weights = _final_weights(blended, unblended, previous.frames[:, :, -m:])
    assert weights == pytest.approx(blend_weights(m, 1.0, 1).tolist(), rel=0.1, abs=0.01)


def test_unipc_corrector_is_off_only_after_blended_steps(pipe: IPFVRPipeline) -> None:
    scheduler = pipe.with_config(sampler="unipc").make_scheduler(blended_steps=[3, 1])
    assert isinstance(scheduler, UniPCMultistepScheduler) and list(scheduler.config.disable_corrector) == [1, 3]
    assert list(pipe.with_config(sampler="unipc").make_scheduler().config.disable_corrector) == []


# ---------------------------------------------------------------- 3. AnimateDiff's beta schedule
def test_samplers_use_the_configured_beta_schedule_not_the_folders() -> None:
    folder = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=True, num_train_timesteps=1000
    ).config  # a public SD-1.5 folder's
    linear = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float32)
    for sampler in SAMPLERS:
        scheduler = make_sampler(folder, sampler, beta_schedule=IPFVRConfig().beta_schedule)
        assert scheduler.config.beta_schedule == "linear", sampler
        torch.testing.assert_close(scheduler.betas, linear, rtol=0, atol=1e-9)
        if "clip_sample" in inspect.signature(type(scheduler).__init__).parameters:  # DDIM; the rest never clip
            assert scheduler.config.clip_sample is False, sampler
    scaled = make_sampler(folder, "ddim", beta_schedule="scaled_linear")
    torch.testing.assert_close(scaled.betas, torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    # training noises with the same betas as sampling
    noise = training_noise_scheduler(folder, beta_schedule="linear")
    torch.testing.assert_close(
        noise.alphas_cumprod, make_sampler(folder, "ddim", beta_schedule="linear").alphas_cumprod
    )
    assert not noise.config.clip_sample
    with pytest.raises(ConfigError) as err:
        IPFVRConfig(beta_schedule="squaredcos_cap_v2").validate()  # type: ignore[arg-type]
    assert err.value.field == "beta_schedule"


def test_pipeline_and_trainer_take_the_schedule_from_the_config(pipe: IPFVRPipeline) -> None:
    import ipfvr_core.training.trainer as trainer

    assert pipe.scheduler.config.beta_schedule == "scaled_linear"  # the tiny folder says so
    assert pipe.make_scheduler().config.beta_schedule == "linear"
    assert pipe.with_config(beta_schedule="scaled_linear").make_scheduler().config.beta_schedule == "scaled_linear"
    assert trainer.training_noise_scheduler is training_noise_scheduler and trainer.make_sampler is make_sampler


# ---------------------------------------------------------------- 4. Perceiver's negative condition
def test_perceiver_negative_reads_clip_states_of_the_zero_image(tmp_path: Path) -> None:
    root = write_tiny_checkpoint(
        tmp_path,
        seed=1,
        id_embedding_dim=512,
        identity_encoder="mlp+perceiver",
        config_overrides={"reference_embedding_combine": "concat"},
    )
    pipe = load_pipeline(root)
    emb = np.random.RandomState(0).randn(2, 512).astype(np.float32)
    identity = pipe.encode_identity(id_embeddings=emb, reference_images=[lq(1, seed=s)[0] for s in (1, 2)])
    size = int(pipe.image_encoder.config.image_size)
    with torch.no_grad():
        zero_image = pipe.image_encoder(pixel_values=torch.zeros(1, 3, size, size), output_hidden_states=True)
        states = zero_image.hidden_states[-2].expand(2, -1, -1)  # (R, P, Dv)
        expected = pipe.identity_encoder(torch.zeros(2, 512), states)  # (1, R*N, C)
    torch.testing.assert_close(identity.negative_tokens, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- 5. blend_beta's meaning, calibrated
def test_calibrated_blending_makes_alpha_the_final_mixing_weight(pipe: IPFVRPipeline) -> None:
    m = 4
    alphas = blend_weights(m, 0.5)  # 1, 0.61, 0.37, 0.22
    for calibrated, fade_steps in ((True, 0), (True, 3), (False, 0)):
        toy = _toy(
            pipe, sampler="ddim", num_inference_steps=6, blend_calibrated=calibrated, blend_fade_steps=fade_steps
        )
        previous = _latents(toy, seed=1, cache_tail_frames=m)
        unblended = _latents(toy, seed=2).frames
        blended = _latents(toy, seed=2, previous_latents=previous.step_latents).frames
        if calibrated:
            final = alphas
        else:  # per-step weights compound: 1 - (1 - alpha_j)**6 = 1, 1.00, 0.94, 0.78
            final = 1 - (1 - alphas) ** 6
        w = final.view(1, 1, m, 1, 1)  # (1, 1, m, 1, 1)
        expected = w * previous.frames[:, :, -m:] + (1 - w) * unblended[:, :, :m]  # (1, C, m, h, w)
        torch.testing.assert_close(blended[:, :, :m], expected, rtol=0, atol=1e-4)
        assert torch.equal(blended[:, :, m:], unblended[:, :, m:])


def test_calibrated_step_weights_compound_to_alpha() -> None:
    alphas = blend_weights(6, 0.3, index_offset=1)
    for n, fade_steps in ((1, 0), (25, 0), (25, 5), (3, 3)):
        fades = [step_fade(i, n, fade_steps) for i in range(n)]
        weights = calibrated_step_weights(alphas, fades)  # (n, m)
        assert weights.shape == (n, 6) and bool((weights >= 0).all()) and bool((weights <= 1).all())
        torch.testing.assert_close(effective_blend_weights(weights), alphas, rtol=0, atol=1e-6)
    pinned = calibrated_step_weights(blend_weights(2, math.inf), [1.0, 1.0])
    assert torch.equal(pinned, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # a_0 = 1 pins, alpha 0 never blends


# ---------------------------------------------------------------- 6a. cache after the callback
def test_latents_a_callback_returns_are_the_ones_cached(pipe: IPFVRPipeline) -> None:
    toy = _toy(pipe, num_inference_steps=3)
    returned: list[torch.Tensor] = []

    def shift(
        _pipe: IPFVRPipeline, step: int, _t: torch.Tensor, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        returned.append(tensors["latents"] + 1.0)
        return {"latents": returned[-1]}

    out = _latents(toy, seed=1, frames=4, cache_tail_frames=2, callback_on_step_end=shift)
    assert out.step_latents is not None and len(out.step_latents) == 3
    for cached, replaced in zip(out.step_latents, returned, strict=True):
        assert torch.equal(cached, replaced[:, :, -2:])


# ---------------------------------------------------------------- 6b. weight-0 streams cost nothing
def test_a_stream_of_weight_zero_runs_no_unet_work(pipe: IPFVRPipeline) -> None:
    batches: list[int] = []
    real = pipe._unet_forward

    def spy(sample: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> Any:
        batches.append(sample.shape[0])
        return real(sample, t, **kwargs)

    counted = pipe.with_config()
    counted._unet_forward = spy
    with_zero = run(counted, negative_prompts=["blurry", "woman"], guidance_weights=[1.0, 0.0])
    assert batches == [2] * counted.planned_steps()  # the positive and "blurry": "woman" is not run
    without = run(pipe, negative_prompts=["blurry"], guidance_weights=[1.0])
    np.testing.assert_allclose(with_zero, without, rtol=0, atol=1e-6)
    embeds = pipe.encode_prompt(["blurry", "woman"])  # (2, L, D)
    batches.clear()
    run(counted, negative_prompts=[], negative_prompt_embeds=embeds, guidance_weights=[0.0, 0.0])
    assert batches == [1] * counted.planned_steps()


# ---------------------------------------------------------------- 6c. float32 latents under bf16
def test_latents_stay_float32_under_bfloat16_weights(tiny_dir: Path) -> None:
    half = load_pipeline(tiny_dir, dtype=torch.bfloat16, overrides={"num_inference_steps": 2})
    assert half.unet.dtype == torch.bfloat16
    seen: list[torch.dtype] = []

    def record(
        _pipe: IPFVRPipeline, step: int, _t: torch.Tensor, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        seen.append(tensors["latents"].dtype)
        return {}

    previous = [torch.randn(1, 4, 2, 8, 8).to(torch.bfloat16) for _ in range(2)]
    out = _latents(
        half,
        seed=0,
        frames=4,
        previous_latents=previous,
        previous_noise=torch.randn(1, 4, 2, 8, 8),
        cache_tail_frames=2,
        callback_on_step_end=record,
    )
    assert seen == [torch.float32, torch.float32]
    assert out.frames.dtype == torch.float32 and out.tail_noise.dtype == torch.float32
    assert all(s.dtype == torch.float32 for s in out.step_latents)
    assert torch.isfinite(out.frames).all()


# ---------------------------------------------------------------- 6d. with_config copies don't leak lambda
@torch.no_grad()
def test_a_with_config_copy_leaves_the_shared_unets_identity_settings(pipe: IPFVRPipeline) -> None:
    sample = torch.randn(1, 8, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # (1, 2C, F, h, w)
    tokens = pipe.encode_identity(id_embeddings=emb()).tokens  # (1, N, D)
    states = frame_condition_embeds(torch.cat([pipe.encode_prompt(["a"]), tokens], dim=1), 4)  # (F, 77+N, D)
    before = {name: (p.num_tokens, p.scale) for name, p in identity_processors(pipe.unet).items()}
    reference = pipe.unet(sample, 500, encoder_hidden_states=states).sample
    run(pipe.with_config(identity_scale=0.0))
    assert {name: (p.num_tokens, p.scale) for name, p in identity_processors(pipe.unet).items()} == before
    assert torch.equal(pipe.unet(sample, 500, encoder_hidden_states=states).sample, reference)


# ---------------------------------------------------------------- 6e. CPU offload covers every model
def test_cpu_offload_sequence_names_every_model(pipe: IPFVRPipeline) -> None:
    models = {name for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}
    assert models == {"vae", "text_encoder", "unet", "identity_encoder"}  # no image encoder on the MLP path
    sequence = IPFVRPipeline.model_cpu_offload_seq.split("->")
    assert models <= set(sequence) and "image_encoder" in sequence
    assert sequence.index("image_encoder") < sequence.index("identity_encoder") < sequence.index("unet")


# ---------------------------------------------------------------- 6f. cached latents follow the current ones
def test_blend_overlap_moves_the_previous_latents_to_the_current_device_and_dtype() -> None:
    current = torch.zeros(1, 2, 4, 2, 2, device="meta")  # a device other than the CPU the cache sits on
    out = blend_overlap(current, torch.randn(1, 2, 2, 2, 2), torch.tensor([1.0, 0.5]))
    assert out.device.type == "meta" and out.shape == (1, 2, 4, 2, 2)
    mixed = blend_overlap(
        torch.zeros(1, 2, 4, 2, 2, dtype=torch.float64), torch.ones(1, 2, 2, 2, 2).bfloat16(), torch.tensor([1.0, 0.5])
    )
    assert mixed.dtype == torch.float64 and float(mixed[0, 0, 1, 0, 0]) == 0.5
