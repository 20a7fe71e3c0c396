"""IPFVRPipeline: restore one clip of aligned low-quality face crops, keeping the reference identity.

Reads like diffusers' ``AnimateDiffPipeline``; ``__call__`` runs five numbered stages:

1. check inputs (errors name the argument);
2. encode the identity (reference images or precomputed embeddings or tokens) and the prompts
   (the positive Face2Text sentence and S negative streams);
3. prepare latents: VAE latents of the LQ clip, concatenated on the channel axis at every step
   (``conv_in`` is widened, its new weights zero-initialised); the noisy latents start from pure
   noise, or (``init_strength < 1``, SDEdit) from the LQ latents noised to the starting step; the
   overlap frames reuse the previous clip's initial noise of the same frames;
4. denoising loop: ONE U-Net call per step evaluates all 1+S conditions (streams of weight 0 are
   dropped); multi-stream negative guidance; scheduler step; exponential blending of the overlap
   with the previous clip's cached latents of the same step; ``callback_on_step_end`` (progress,
   cancellation). The latents stay float32 through the scheduler whatever the U-Net's dtype;
5. decode, ``vae_slice_frames`` frames per VAE call so memory stays bounded.

Clips longer than a track or streaming across clips are the engine's job
(:mod:`ipfvr_core.engines.ipfvr`); this pipeline restores one clip and can hand back its per-step
tail latents and the initial noise of its tail frames for the next clip. Like diffusers' FreeNoise,
which keeps one initial latent per frame across its windows, a frame shared by two clips starts
from the same noise in both: the blended overlap then mixes two trajectories from the same start
instead of averaging two independent ones, which would lower the overlap frames' variance (soft,
flickering seams).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNetMotionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ipfvr_core.diffusion.attention_processor import identity_settings
from ipfvr_core.diffusion.blending import blend_overlap, blend_weights, step_blend_weights
from ipfvr_core.diffusion.config import COMPONENT_FOLDER_FIELDS, IPFVRConfig
from ipfvr_core.diffusion.guidance import (
    combine_negative_guidance,
    condition_chunks,
    frame_condition_embeds,
    stack_latents,
)
from ipfvr_core.diffusion.identity_tokens import IdentityEncoder, clip_vision_negative_patches, clip_vision_patches
from ipfvr_core.diffusion.lora import (
    activate_identity_lora,
    delete_identity_lora,
    load_identity_lora,
    loaded_loras,
)
from ipfvr_core.diffusion.samplers import make_sampler
from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import FaceAnalyzer

# callback_on_step_end(pipeline, step_index, timestep, {"latents": ...}) -> dict of replaced tensors
StepCallback = Callable[["IPFVRPipeline", int, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass
class IPFVRPipelineOutput:
    """Restored frames and, when asked for, the per-step latents and the initial noise of the clip's last frames."""

    frames: np.ndarray | torch.Tensor  # np: (F, H, W, 3) float32 in [0, 1]; pt: (F, 3, H, W); latent: (1, C, F, h, w)
    step_latents: list[torch.Tensor] | None  # per step i: (1, C, k, h, w) float32 latents of the last k frames
    tail_noise: torch.Tensor | None = None  # (1, C, k, h, w) float32 initial noise of the last k frames


@dataclass
class EncodedIdentity:
    """Identity tokens of the positive condition and of the negatives."""

    tokens: torch.Tensor  # (1, N', C)
    negative_tokens: (
        torch.Tensor
    )  # (1, N', C): tokens of the zero embedding (+ the zero image's CLIP states) or the same tokens


# Config fields baked into the modules at load time (weights shapes, identity encoder, dtypes, layout).
LOAD_TIME_FIELDS = frozenset(
    {
        *COMPONENT_FOLDER_FIELDS,
        "num_identity_tokens",
        "id_embedding_dim",
        "id_encoder",
        "normalize_id_embedding",
        "id_proj_hidden_dim",
        "identity_encoder",
        "perceiver_depth",
        "perceiver_heads",
        "perceiver_head_dim",
        "perceiver_shortcut_scale",
        "reference_embedding_combine",
        "reference_patch_combine",
        "dtype",
        "upcast_vae",
        "channels_last",
        "celeba_attribute_model",
    }
)


def _bad(argument: str, reason: str) -> InputError:
    return InputError(reason, field=argument, code="invalid_option")


class IPFVRPipeline(DiffusionPipeline):
    """Reference-guided face video restoration over an AnimateDiff motion U-Net (see module docstring)."""

    model_cpu_offload_seq = "text_encoder->image_encoder->identity_encoder->unet->vae"
    _optional_components: ClassVar[list[str]] = ["image_encoder"]
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNetMotionModel,
        scheduler: SchedulerMixin,
        identity_encoder: IdentityEncoder,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        *,
        ipfvr_config: IPFVRConfig | None = None,
        face_analyzer: FaceAnalyzer | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            identity_encoder=identity_encoder,
            image_encoder=image_encoder,
        )
        self.ipfvr_config = (ipfvr_config or IPFVRConfig()).validate()
        self.face_analyzer = face_analyzer
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.active_lora: str | None = None
        self._unet_forward: Callable[..., Any] = torch.compile(self.unet) if self.ipfvr_config.compile else self.unet
        if identity_encoder.uses_patches and image_encoder is None:
            raise ConfigError("the Perceiver identity encoder needs image_encoder/", field="identity_encoder")

    def with_config(self, **changes: Any) -> IPFVRPipeline:
        """A pipeline over the same modules (nothing copied or reloaded) with config fields changed.

        Inference fields only (steps, sampler, guidance, blending, batching, lambda, ...); fields that
        were fixed when the modules were built (:data:`LOAD_TIME_FIELDS`) raise ConfigError naming them.
        """
        for name in changes:
            if name in LOAD_TIME_FIELDS and changes[name] != getattr(self.ipfvr_config, name):
                raise ConfigError(
                    "is fixed when the weights are loaded; load the pipeline again to change it", field=name
                )
        config = self.ipfvr_config.replace(**changes)
        shared = IPFVRPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            identity_encoder=self.identity_encoder,
            image_encoder=self.image_encoder,
            ipfvr_config=config,
            face_analyzer=self.face_analyzer,
        )
        if config.compile == self.ipfvr_config.compile:
            shared._unet_forward = self._unet_forward  # share the compiled U-Net and its compile cache
        shared.active_lora = self.active_lora
        return shared

    # ------------------------------------------------------------------ LoRA psi_id
    def load_lora(self, name: str, path: str) -> None:
        """Load a per-identity LoRA file under ``name``; the active adapter does not change."""
        load_identity_lora(self.unet, name, path)
        activate_identity_lora(self.unet, self.active_lora, always=self.ipfvr_config.base_loras)

    def set_lora(self, name: str | None) -> None:
        """Activate LoRA ``name`` over the base LoRAs (``None``: the base LoRAs alone, or the plain backbone)."""
        activate_identity_lora(self.unet, name, always=self.ipfvr_config.base_loras)
        self.active_lora = name

    def unload_lora(self, name: str) -> None:
        """Remove LoRA ``name``; if it was active, the base LoRAs alone stay on."""
        if name in self.ipfvr_config.base_loras:
            raise ConfigError(f"LoRA {name!r} is a base LoRA of these weights", field="lora")
        delete_identity_lora(self.unet, name)
        if self.active_lora == name:
            self.active_lora = None
        activate_identity_lora(self.unet, self.active_lora, always=self.ipfvr_config.base_loras)

    @property
    def loras(self) -> list[str]:
        """Names of the loaded LoRAs."""
        return loaded_loras(self.unet)

    # ------------------------------------------------------------------ encoders
    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings (N, L, D) of N prompts, padded to the tokenizer's max length."""
        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids  # (N, L)
        return self.text_encoder(ids.to(self._execution_device))[0].to(self.unet.dtype)  # (N, L, D)

    @torch.no_grad()
    def embed_references(self, reference_images: Sequence[np.ndarray]) -> torch.Tensor:
        """(R, D) identity embeddings of raw reference images, with the pipeline's face analyzer."""
        if self.face_analyzer is None:
            raise _bad("reference_images", "raw reference images need a face analyzer; pass id_embeddings instead")
        embeddings = []
        for index, image in enumerate(reference_images):
            faces = self.face_analyzer.detect(image)
            if not faces:
                raise InputError(
                    f"no face found in reference {index}", field="reference_images", code="no_face_in_reference"
                )
            embeddings.append(np.asarray(self.face_analyzer.embed(image, faces[0]), dtype=np.float32))
        return torch.from_numpy(np.stack(embeddings))  # (R, D)

    @torch.no_grad()
    def encode_identity(
        self,
        *,
        id_embeddings: torch.Tensor | np.ndarray | None = None,
        reference_images: Sequence[np.ndarray] | None = None,
    ) -> EncodedIdentity:
        """Identity tokens from precomputed (R, D) embeddings and/or raw (aligned) reference images."""
        if id_embeddings is None:
            if not reference_images:
                raise _bad("id_embeddings", "give id_embeddings or reference_images")
            id_embeddings = self.embed_references(reference_images)
        if isinstance(id_embeddings, np.ndarray):
            emb = torch.from_numpy(np.asarray(id_embeddings, dtype=np.float32))
        else:
            emb = id_embeddings
        if emb.ndim == 1:
            emb = emb[None]  # (1, D)
        if emb.ndim != 2 or emb.shape[1] != self.ipfvr_config.id_embedding_dim:
            raise ConfigError(
                f"identity embeddings have shape {tuple(emb.shape)}; "
                f"the model expects (R, {self.ipfvr_config.id_embedding_dim})",
                field="id_embedding_dim",
            )
        if not torch.isfinite(emb).all():
            raise _bad("id_embeddings", "identity embeddings contain NaN or infinity")
        device, dtype = self._execution_device, self.identity_encoder.dtype
        emb = emb.to(device=device, dtype=dtype)
        patches: torch.Tensor | None = None
        if self.identity_encoder.uses_patches:
            if not reference_images:
                raise _bad("reference_images", "the Perceiver identity encoder needs the aligned reference images")
            patches = clip_vision_patches(
                self.image_encoder, reference_images, device=device, dtype=self.image_encoder.dtype
            )
            patches = patches.to(dtype)  # (R, P, Dv)
        tokens = self.identity_encoder(emb, patches).to(self.unet.dtype)  # (1, N', C)
        if self.ipfvr_config.negative_identity == "same":
            negative = tokens
        else:
            # zero embedding; the Perceiver reads the CLIP states of the all-zero image (IP-Adapter-FaceID-Plus)
            negative_patches = None
            if patches is not None:
                negative_patches = clip_vision_negative_patches(
                    self.image_encoder, patches.shape[0], device=device, dtype=self.image_encoder.dtype
                ).to(dtype)  # (R, P, Dv)
            negative = self.identity_encoder(torch.zeros_like(emb), negative_patches).to(self.unet.dtype)  # (1, N', C)
        return EncodedIdentity(tokens=tokens, negative_tokens=negative)

    @torch.no_grad()
    def encode_lq(self, lq_frames: torch.Tensor) -> torch.Tensor:
        """VAE latents (1, C, F, h, w) of LQ frames (F, 3, H, W) in [0, 1], ``vae_slice_frames`` at a time."""
        x = lq_frames.to(device=self._execution_device, dtype=self.vae.dtype) * 2.0 - 1.0  # (F, 3, H, W) in [-1, 1]
        latents = torch.cat(
            [self.vae.encode(x[s]).latent_dist.mode() for s in self._frame_slices(x.shape[0])]
        )  # (F, C, h, w)
        shift = self.vae.config.shift_factor or 0.0
        latents = (latents - shift) * self.vae.config.scaling_factor
        return latents.permute(1, 0, 2, 3)[None].to(self.unet.dtype)  # (1, C, F, h, w)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Frames (F, 3, H, W) float32 in [0, 1] from latents (1, C, F, h, w), ``vae_slice_frames`` at a time."""
        shift = self.vae.config.shift_factor or 0.0
        z = latents[0].permute(1, 0, 2, 3) / self.vae.config.scaling_factor + shift  # (F, C, h, w)
        z = z.to(self.vae.dtype)
        frames = torch.cat([self.vae.decode(z[s]).sample for s in self._frame_slices(z.shape[0])])  # (F, 3, H, W)
        return (frames.float() / 2.0 + 0.5).clamp(0.0, 1.0)

    def _frame_slices(self, num_frames: int) -> list[slice]:
        size = self.ipfvr_config.vae_slice_frames or num_frames
        return [slice(i, min(i + size, num_frames)) for i in range(0, num_frames, size)]

    # ------------------------------------------------------------------ helpers
    def make_scheduler(self, blended_steps: Sequence[int] = ()) -> SchedulerMixin:
        """A fresh scheduler of the configured sampler per call, so interleaved calls keep separate state.

        ``blended_steps``: indices into the scheduler's timesteps of the steps followed by blending
        (see :func:`~ipfvr_core.diffusion.samplers.make_sampler`).
        """
        cfg = self.ipfvr_config
        return make_sampler(self.scheduler, cfg.sampler, beta_schedule=cfg.beta_schedule, blended_steps=blended_steps)

    def get_timesteps(self, scheduler: SchedulerMixin, num_inference_steps: int, init_strength: float) -> torch.Tensor:
        """Timesteps actually run: all of them, or the last ``int(steps * init_strength)`` (SDEdit)."""
        scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        start = num_inference_steps - self.planned_steps(num_inference_steps, init_strength)
        timesteps = scheduler.timesteps[start * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start * scheduler.order)
        return timesteps

    def planned_steps(self, num_inference_steps: int | None = None, init_strength: float | None = None) -> int:
        """How many denoising steps a call runs (the length of ``step_latents``)."""
        steps = num_inference_steps or self.ipfvr_config.num_inference_steps
        strength = self.ipfvr_config.init_strength if init_strength is None else init_strength
        return min(int(steps * strength), steps)

    def _extra_step_kwargs(self, scheduler: SchedulerMixin, generator: torch.Generator | None) -> dict[str, Any]:
        accepted = set(inspect.signature(scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            kwargs["eta"] = self.ipfvr_config.ddim_eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    @staticmethod
    def _frames_to_tensor(lq_frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(lq_frames, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(lq_frames)).permute(0, 3, 1, 2).float() / 255.0  # (F, 3, H, W)
        return lq_frames.float()

    # ------------------------------------------------------------------ 1. check inputs
    def check_inputs(
        self,
        lq_frames: np.ndarray | torch.Tensor,
        prompt: str | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompts: Sequence[str],
        negative_prompt_embeds: torch.Tensor | None,
        guidance_weights: Sequence[float],
        identity: EncodedIdentity | None,
        id_embeddings: torch.Tensor | np.ndarray | None,
        reference_images: Sequence[np.ndarray] | None,
        num_inference_steps: int,
        init_strength: float,
        previous_latents: Sequence[torch.Tensor] | None,
        previous_noise: torch.Tensor | None,
        latents: torch.Tensor | None,
        cache_tail_frames: int,
        output_type: str,
        callback_on_step_end_tensor_inputs: Sequence[str],
    ) -> None:
        """Validate every argument up front; errors name the argument."""
        size = self.ipfvr_config.resolution
        if isinstance(lq_frames, np.ndarray):
            if lq_frames.dtype != np.uint8 or lq_frames.ndim != 4 or lq_frames.shape[1:] != (size, size, 3):
                raise _bad(
                    "lq_frames", f"expected uint8 (F, {size}, {size}, 3), got {lq_frames.dtype} {lq_frames.shape}"
                )
        elif isinstance(lq_frames, torch.Tensor):
            if (
                not lq_frames.is_floating_point()
                or lq_frames.ndim != 4
                or tuple(lq_frames.shape[1:]) != (3, size, size)
            ):
                raise _bad(
                    "lq_frames", f"expected float (F, 3, {size}, {size}) in [0, 1], got {tuple(lq_frames.shape)}"
                )
        else:
            raise _bad("lq_frames", "expected a numpy uint8 array or a float tensor")
        num_frames = lq_frames.shape[0]
        if num_frames < 1:
            raise _bad("lq_frames", "needs at least one frame")
        max_frames = int(getattr(self.unet.config, "motion_max_seq_length", num_frames) or num_frames)
        if num_frames > max_frames:
            raise _bad("lq_frames", f"{num_frames} frames exceed the motion modules' limit of {max_frames}")
        if (prompt is None) == (prompt_embeds is None):
            raise _bad("prompt", "give exactly one of prompt and prompt_embeds")
        if prompt_embeds is not None and (prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1):
            raise _bad("prompt_embeds", f"expected (1, L, D), got {tuple(prompt_embeds.shape)}")
        if negative_prompts and negative_prompt_embeds is not None:
            raise _bad("negative_prompts", "give negative_prompts or negative_prompt_embeds, not both")
        num_negatives = len(negative_prompts) if negative_prompt_embeds is None else negative_prompt_embeds.shape[0]
        if len(guidance_weights) != num_negatives:
            raise _bad(
                "guidance_weights",
                f"expected one weight per negative stream ({num_negatives}), got {len(guidance_weights)}",
            )
        if any(not np.isfinite(w) for w in guidance_weights):
            raise _bad("guidance_weights", "weights must be finite")
        if negative_prompt_embeds is not None:
            if negative_prompt_embeds.ndim != 3:
                raise _bad("negative_prompt_embeds", f"expected (S, L, D), got {tuple(negative_prompt_embeds.shape)}")
            if prompt_embeds is not None and negative_prompt_embeds.shape[1:] != prompt_embeds.shape[1:]:
                raise _bad("negative_prompt_embeds", "must have the same (L, D) as prompt_embeds")
        if identity is None and id_embeddings is None and not reference_images:
            raise _bad("id_embeddings", "give identity, id_embeddings or reference_images")
        if identity is not None and identity.tokens.shape != identity.negative_tokens.shape:
            raise _bad("identity", "positive and negative identity tokens differ in shape")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise _bad("num_inference_steps", f"must be a positive integer, got {num_inference_steps!r}")
        if not 0.0 < init_strength <= 1.0:
            raise _bad("init_strength", f"must be in (0, 1], got {init_strength}")
        steps = self.planned_steps(num_inference_steps, init_strength)
        if steps < 1:
            raise _bad("init_strength", f"{init_strength} x {num_inference_steps} steps leaves no step to run")
        if previous_latents is not None:
            if len(previous_latents) != steps:
                raise _bad("previous_latents", f"expected {steps} per-step latents, got {len(previous_latents)}")
            h = size // self.vae_scale_factor
            for latent in previous_latents:
                expected = (1, self.latent_channels, h, h)
                if latent.ndim != 5 or (latent.shape[0], latent.shape[1], *latent.shape[3:]) != expected:
                    raise _bad(
                        "previous_latents",
                        f"expected (1, {self.latent_channels}, m, {h}, {h}), got {tuple(latent.shape)}",
                    )
                if latent.shape[2] > num_frames:
                    raise _bad("previous_latents", f"{latent.shape[2]} overlap frames exceed the clip's {num_frames}")
        if previous_noise is not None:
            h = size // self.vae_scale_factor
            if previous_noise.ndim != 5 or (
                previous_noise.shape[0],
                previous_noise.shape[1],
                *previous_noise.shape[3:],
            ) != (1, self.latent_channels, h, h):
                raise _bad(
                    "previous_noise",
                    f"expected (1, {self.latent_channels}, m, {h}, {h}), got {tuple(previous_noise.shape)}",
                )
            if previous_noise.shape[2] > num_frames:
                raise _bad("previous_noise", f"{previous_noise.shape[2]} overlap frames exceed the clip's {num_frames}")
            if previous_latents and previous_latents[0].shape[2] != previous_noise.shape[2]:
                raise _bad(
                    "previous_noise",
                    f"covers {previous_noise.shape[2]} frames; previous_latents cover {previous_latents[0].shape[2]}",
                )
            if latents is not None:
                raise _bad("previous_noise", "give latents (the whole initial noise) or previous_noise, not both")
        if not 0 <= cache_tail_frames <= num_frames:
            raise _bad("cache_tail_frames", f"must be in [0, {num_frames}], got {cache_tail_frames}")
        if output_type not in ("np", "pt", "latent"):
            raise _bad("output_type", f"must be 'np', 'pt' or 'latent', got {output_type!r}")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise _bad(
                "callback_on_step_end_tensor_inputs",
                f"unknown tensor inputs {unknown}; allowed: {self._callback_tensor_inputs}",
            )

    # ------------------------------------------------------------------ 3. latents
    def prepare_latents(
        self,
        scheduler: SchedulerMixin,
        lq_latents: torch.Tensor,
        timesteps: torch.Tensor,
        init_strength: float,
        generator: torch.Generator | None,
        latents: torch.Tensor | None,
        previous_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(initial noisy latents, the unit noise they were made from), both float32 (1, C, F, h, w).

        The latents are pure noise, or the LQ latents noised to the first timestep. The noise is
        ``latents`` when given, else drawn; ``previous_noise`` (1, C, m, h, w) replaces its first m frames.
        """
        shape = tuple(lq_latents.shape)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise _bad("latents", f"expected shape {shape}, got {tuple(latents.shape)}")
            noise = latents.to(device=lq_latents.device, dtype=torch.float32)
        else:
            noise = randn_tensor(shape, generator=generator, device=lq_latents.device, dtype=torch.float32)
        if previous_noise is not None and previous_noise.shape[2] > 0:
            m = previous_noise.shape[2]
            head = previous_noise.to(device=noise.device, dtype=torch.float32)  # (1, C, m, h, w)
            noise = torch.cat([head, noise[:, :, m:]], dim=2)  # (1, C, F, h, w)
        if init_strength >= 1.0:
            return noise * scheduler.init_noise_sigma, noise
        return scheduler.add_noise(lq_latents.float(), noise, timesteps[:1]), noise

    # ------------------------------------------------------------------ __call__
    @torch.no_grad()
    def __call__(
        self,
        lq_frames: np.ndarray | torch.Tensor,
        *,
        prompt: str | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompts: Sequence[str] = (),
        negative_prompt_embeds: torch.Tensor | None = None,
        guidance_weights: Sequence[float] = (),
        identity: EncodedIdentity | None = None,
        id_embeddings: torch.Tensor | np.ndarray | None = None,
        reference_images: Sequence[np.ndarray] | None = None,
        num_inference_steps: int | None = None,
        init_strength: float | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        previous_latents: Sequence[torch.Tensor] | None = None,
        previous_noise: torch.Tensor | None = None,
        cache_tail_frames: int = 0,
        output_type: Literal["np", "pt", "latent"] = "np",
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> IPFVRPipelineOutput:
        """Restore one clip.

        Args:
            lq_frames: the degraded aligned crops, uint8 (F, S, S, 3) or float (F, 3, S, S) in [0, 1].
            prompt / prompt_embeds: the positive text (Face2Text sentence) or its (1, L, D) embeddings.
            negative_prompts / negative_prompt_embeds: S negative streams, texts or (S, L, D) embeddings.
            guidance_weights: w_s per negative stream; a stream of weight 0 is dropped (no U-Net work).
            identity / id_embeddings / reference_images: precomputed tokens, (R, D) embeddings, or raw
                reference images (embedded with the face analyzer; also fed to the Perceiver).
            num_inference_steps, init_strength: default to the config.
            generator: seeded ``torch.Generator`` for reproducible noise.
            latents: initial noise (1, C, F, h, w) instead of drawing it.
            previous_latents: per-step (1, C, m, h, w) latents of the previous clip's last m frames;
                frame j < m of this clip is blended with them after every step.
            previous_noise: (1, C, m, h, w) initial noise of the previous clip's last m frames (its
                ``tail_noise``); this clip's first m frames start from it instead of fresh noise.
            cache_tail_frames: k > 0 returns this clip's per-step latents of its last k frames and
                their initial noise (``step_latents``, ``tail_noise``).
            output_type: "np" (F, S, S, 3) float32, "pt" (F, 3, S, S) float32, or "latent" (float32).
            callback_on_step_end: called after every step as in diffusers; may raise to cancel; the
                latents it returns are the ones cached for the next clip.
        """
        cfg = self.ipfvr_config
        steps = num_inference_steps if num_inference_steps is not None else cfg.num_inference_steps
        strength = cfg.init_strength if init_strength is None else init_strength

        # 1. Check inputs. Raise error if not correct
        self.check_inputs(
            lq_frames,
            prompt,
            prompt_embeds,
            negative_prompts,
            negative_prompt_embeds,
            guidance_weights,
            identity,
            id_embeddings,
            reference_images,
            steps,
            strength,
            previous_latents,
            previous_noise,
            latents,
            cache_tail_frames,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        device = self._execution_device
        frames = self._frames_to_tensor(lq_frames)  # (F, 3, S, S) in [0, 1]
        num_frames = frames.shape[0]

        # 2. Encode identity and prompts; a stream of weight 0 changes nothing, so it is not run
        active = [s for s, weight in enumerate(guidance_weights) if weight != 0.0]
        guidance_weights = [float(guidance_weights[s]) for s in active]
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds[active]  # (S', L, D)
        else:
            negative_prompts = [negative_prompts[s] for s in active]
        if identity is None:
            identity = self.encode_identity(id_embeddings=id_embeddings, reference_images=reference_images)
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt([prompt or ""])  # (1, L, D)
        if negative_prompt_embeds is None:
            negative_prompt_embeds = (
                self.encode_prompt(list(negative_prompts))
                if negative_prompts
                else prompt_embeds.new_zeros((0, *prompt_embeds.shape[1:]))
            )  # (S, L, D)
        num_negatives = negative_prompt_embeds.shape[0]
        unet_dtype = self.unet.dtype
        text = torch.cat([prompt_embeds, negative_prompt_embeds]).to(device=device, dtype=unet_dtype)  # (1+S, L, D)
        id_tokens = torch.cat([identity.tokens, identity.negative_tokens.expand(num_negatives, -1, -1)]).to(
            device=device, dtype=unet_dtype
        )  # (1+S, N', D)
        condition_embeds = torch.cat([text, id_tokens], dim=1)  # (1+S, L+N', D)
        encoder_states = frame_condition_embeds(condition_embeds, num_frames)  # ((1+S)*F, L+N', D)

        # 3. Prepare blending weights, timesteps and latents (float32 through the scheduler)
        num_steps = self.planned_steps(steps, strength)
        overlap = 0 if previous_latents is None else previous_latents[0].shape[2]
        alphas = blend_weights(overlap, cfg.blend_beta, cfg.blend_index_offset)  # (m,)
        step_weights = step_blend_weights(
            alphas, num_steps, cfg.blend_fade_steps, calibrated=cfg.blend_calibrated
        )  # (n, m)
        first = steps - num_steps  # index of the first step run in the scheduler's timesteps
        blended = [first + i for i in range(num_steps) if overlap > 0 and bool(step_weights[i].any())]
        scheduler = self.make_scheduler(blended_steps=blended)
        timesteps = self.get_timesteps(scheduler, steps, strength)
        lq_latents = self.encode_lq(frames)  # (1, C, F, h, w) in the U-Net's dtype
        latents, noise = self.prepare_latents(
            scheduler, lq_latents, timesteps, strength, generator, latents, previous_noise
        )  # 2 x (1, C, F, h, w) float32
        extra_step_kwargs = self._extra_step_kwargs(scheduler, generator)
        chunks = condition_chunks(1 + num_negatives, cfg.condition_batch_size)
        step_latents: list[torch.Tensor] | None = [] if cache_tail_frames > 0 else None
        self._num_timesteps = len(timesteps)

        # 4. Denoising loop (the identity token count and lambda are this call's, restored afterwards)
        with identity_settings(self.unet, num_tokens=identity.tokens.shape[1], scale=cfg.identity_scale):
            for i, t in enumerate(timesteps):
                model_input = scheduler.scale_model_input(latents, t).to(unet_dtype)  # (1, C, F, h, w)
                model_input = torch.cat([model_input, lq_latents], dim=1)  # (1, 2C, F, h, w)
                predictions = []
                for chunk in chunks:
                    batch = stack_latents(model_input, chunk.stop - chunk.start)  # (n, 2C, F, h, w)
                    states = encoder_states[chunk.start * num_frames : chunk.stop * num_frames]  # (n*F, L+N', D)
                    predictions.append(self._unet_forward(batch, t, encoder_hidden_states=states).sample)
                stacked = torch.cat(predictions).float()  # (1+S, C, F, h, w) float32 for the scheduler
                noise_pred = combine_negative_guidance(stacked, guidance_weights)[None]  # (1, C, F, h, w)

                latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs).prev_sample
                if previous_latents is not None and overlap > 0:
                    latents = blend_overlap(latents, previous_latents[i], step_weights[i])

                if callback_on_step_end is not None:
                    callback_kwargs = {k: latents for k in callback_on_step_end_tensor_inputs if k == "latents"}
                    outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = outputs.pop("latents", latents).to(torch.float32)
                if step_latents is not None:  # after the callback: what it returned is what the next clip sees
                    step_latents.append(latents[:, :, num_frames - cache_tail_frames :].clone())  # (1, C, k, h, w)
        tail_noise = (
            noise[:, :, num_frames - cache_tail_frames :].clone() if cache_tail_frames > 0 else None
        )  # (1, C, k, h, w)

        # 5. Decode
        if output_type == "latent":
            return IPFVRPipelineOutput(frames=latents, step_latents=step_latents, tail_noise=tail_noise)
        video = self.decode_latents(latents)  # (F, 3, S, S) float32 in [0, 1]
        if output_type == "np":
            video_np = video.permute(0, 2, 3, 1).cpu().numpy()  # (F, S, S, 3)
            return IPFVRPipelineOutput(frames=video_np, step_latents=step_latents, tail_noise=tail_noise)
        return IPFVRPipelineOutput(frames=video, step_latents=step_latents, tail_noise=tail_noise)

    @property
    def num_timesteps(self) -> int:
        """Steps run by the last call."""
        return getattr(self, "_num_timesteps", 0)
