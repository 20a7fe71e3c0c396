"""The IP-FVR diffusion engine: :class:`IPFVRPipeline` behind the :class:`Engine` interface.

One session restores one face track. It buffers the pushed crops into F-frame clips that overlap
by m frames (:func:`ipfvr_core.diffusion.clips.plan_clips` gives the same cut for a known length),
restores each clip with the pipeline while passing the previous clip's per-step latents of its last
m frames for exponential blending, and holds back the last m output frames of every clip until the
next clip's overlap frames arrive to cross-fade them. ``flush`` restores the final short clip (or
the whole track when it is shorter than one clip) and returns everything still held.

The identity condition is encoded once per session: the embeddings become identity tokens, the
attributes and the user's prompt become the Face2Text sentence, and the negative streams are the
quality stream, the attribute-negation stream and the user's negative prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch

from ipfvr_core.diffusion.blending import crossfade, crossfade_weights
from ipfvr_core.diffusion.clips import ClipSpan
from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.diffusion.face2text import CelebAAttributeModel, Face2TextResult, face_to_text, merge_attributes
from ipfvr_core.diffusion.guidance import NegativeStream, active_streams
from ipfvr_core.diffusion.lora import loaded_loras
from ipfvr_core.diffusion.pipeline_ipfvr import EncodedIdentity, IPFVRPipeline
from ipfvr_core.diffusion.weights import is_random_test_checkpoint, load_pipeline, lora_path, weights_fingerprint
from ipfvr_core.engines.base import CancelFn, Engine, EngineSession, IdentityCondition, ProgressFn, check_canceled
from ipfvr_core.errors import ConfigError, InputError
from ipfvr_core.faces.base import FaceAnalyzer


@dataclass(frozen=True)
class SessionConditions:
    """What a session conditions on, for reports: the sentence and the active negative streams."""

    face2text: Face2TextResult
    negative_streams: tuple[NegativeStream, ...]


class IPFVREngine(Engine):
    """Reference-guided diffusion restoration of aligned face clips."""

    name = "ipfvr"

    def __init__(self, pipeline: IPFVRPipeline, *, weights_dir: str | Path | None = None) -> None:
        self.pipeline = pipeline
        self.config: IPFVRConfig = pipeline.ipfvr_config
        self.clip_length = self.config.clip_length
        self.face_size = self.config.resolution
        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self._celeba: CelebAAttributeModel | None = (
            CelebAAttributeModel(self.config.celeba_attribute_model) if self.config.celeba_attribute_model else None
        )

    @classmethod
    def from_pretrained(
        cls,
        weights_dir: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        overrides: Mapping[str, Any] | None = None,
        lora: str | None = None,
        face_analyzer: FaceAnalyzer | None = None,
    ) -> IPFVREngine:
        """Load from a weights folder (layout in :mod:`ipfvr_core.diffusion.weights`); optionally activate a LoRA."""
        pipeline = load_pipeline(
            weights_dir, device=device, dtype=dtype, overrides=overrides, face_analyzer=face_analyzer
        )
        engine = cls(pipeline, weights_dir=weights_dir)
        if is_random_test_checkpoint(weights_dir):
            engine.warnings = (
                f"the weights in {Path(weights_dir).name} are random test weights (ipfvr weights "
                "init-tiny): the output is noise pasted on the faces, not a restoration",
            )
        if lora is not None:
            engine.set_lora(lora)
        return engine

    def set_lora(self, name: str | None) -> None:
        """Activate per-identity LoRA ``name`` (read from ``loras/<name>.safetensors`` on first use); None = off."""
        if name is not None and name not in loaded_loras(self.pipeline.unet):
            if self.weights_dir is None:
                raise ConfigError(f"LoRA {name!r} is not loaded and the engine has no weights folder", field="lora")
            self.pipeline.load_lora(name, str(lora_path(self.weights_dir, self.config, name)))
        self.pipeline.set_lora(name)

    identity_modules = True  # an identity is a LoRA psi_id

    def use_identity(self, name: str | None) -> None:
        try:
            self.set_lora(name)
        except ConfigError as exc:
            raise ConfigError(exc.message, field="identity", code=exc.code) from exc

    def load_identity(self, name: str, path: str | Path) -> None:
        self.pipeline.load_lora(name, str(path))

    def unload_identity(self, name: str) -> None:
        self.pipeline.unload_lora(name)

    def conditions_for(self, identity: IdentityCondition) -> SessionConditions:
        """The Face2Text sentence and the active negative streams for ``identity``."""
        celeba = None
        if self._celeba is not None and identity.aligned_references:
            celeba = self._celeba.predict_mean(identity.aligned_references)
        attributes = merge_attributes(identity.attributes, celeba, threshold=self.config.celeba_threshold)
        text = face_to_text(
            attributes,
            template=self.config.prompt_template,
            user_text=identity.prompt,
            user_mode=self.config.user_prompt_mode,
            max_details=self.config.face2text_max_details,
        )
        streams = active_streams(
            [
                NegativeStream("quality", self.config.quality_negative_prompt, self.config.quality_guidance_weight),
                NegativeStream("attribute", text.attribute_negative, self.config.attribute_guidance_weight),
                NegativeStream("user", identity.negative_prompt or "", self.config.user_guidance_weight),
            ]
        )
        if identity.guidance_scale is not None and streams:
            # One knob for callers: keep the configured ratios between streams, rescale their sum.
            total = sum(s.weight for s in streams)
            streams = [NegativeStream(s.name, s.text, s.weight * identity.guidance_scale / total) for s in streams]
        return SessionConditions(face2text=text, negative_streams=tuple(streams))

    def check_face_backend(self, analyzer: FaceAnalyzer) -> None:
        """The weights' identity projection was trained on one embedder: refuse another at load."""
        cfg = self.config
        if analyzer.embedding_dim == cfg.id_embedding_dim and analyzer.metric == cfg.id_metric:
            return
        wanted = f"{cfg.id_embedding_dim}-d {cfg.id_encoder} embeddings" + (
            " (insightface buffalo_l's normed_embedding)" if cfg.id_encoder == "arcface" else ""
        )
        fix = (
            "run with --face-backend insightface --insightface-dir PACK (a local buffalo_l folder; "
            "or set IPFVR_INSIGHTFACE_DIR)"
            if cfg.id_encoder == "arcface"
            else "run with --face-backend dlib"
        )
        raise ConfigError(
            f"these weights take {wanted}, but the face backend {analyzer.name!r} gives "
            f"{analyzer.embedding_dim}-d {analyzer.metric} embeddings: {fix}",
            field="face_backend",
            code="weights_invalid",
        )

    def check_identity(self, identity: IdentityCondition) -> np.ndarray:
        """(R, D) float32 embeddings of ``identity``, checked against the model's embedding size and metric."""
        if not identity.embeddings:
            raise InputError(
                "IP-FVR needs at least one reference embedding", field="reference", code="invalid_reference"
            )
        dim = self.config.id_embedding_dim
        for index, emb in enumerate(identity.embeddings):
            if np.asarray(emb).shape != (dim,):
                raise ConfigError(
                    f"reference {index} embedding has shape {np.asarray(emb).shape}; these weights expect ({dim},) "
                    f"({self.config.id_encoder} embeddings)",
                    field="id_embedding_dim",
                )
        if identity.metric != self.config.id_metric:
            raise ConfigError(
                f"embeddings use the {identity.metric!r} metric; "
                f"these weights expect {self.config.id_encoder} ({self.config.id_metric})",
                field="id_encoder",
            )
        return np.stack([np.asarray(e, dtype=np.float32) for e in identity.embeddings])  # (R, D)

    def open_session(self, identity: IdentityCondition, *, seed: int | None = None) -> IPFVRSession:
        embeddings = self.check_identity(identity)
        conditions = self.conditions_for(identity)
        pipe = self.pipeline
        references = identity.aligned_references if pipe.identity_encoder.uses_patches else None
        encoded = pipe.encode_identity(id_embeddings=embeddings, reference_images=references)
        prompt_embeds = pipe.encode_prompt([conditions.face2text.prompt])  # (1, L, D)
        negatives = [s.text for s in conditions.negative_streams]
        negative_embeds = (
            pipe.encode_prompt(negatives) if negatives else prompt_embeds.new_zeros((0, *prompt_embeds.shape[1:]))
        )  # (S, L, D)
        generator = torch.Generator(device="cpu")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return IPFVRSession(
            pipe,
            identity=encoded,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            guidance_weights=tuple(s.weight for s in conditions.negative_streams),
            generator=generator,
            conditions=conditions,
        )

    def versions(self) -> dict[str, str]:
        out = {
            "engine": self.name,
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "sampler": f"{self.config.sampler}x{self.config.num_inference_steps}",
            "lora": self.pipeline.active_lora or "none",
        }
        if self.config.trained_identity_network:
            out["trained_against"] = self.config.trained_identity_network
        if self.weights_dir is not None:
            out["weights"] = f"{self.weights_dir.name}@{weights_fingerprint(self.weights_dir, self.config)}"
        return out


class IPFVRSession(EngineSession):
    """Streams one track through the pipeline clip by clip (see the module docstring)."""

    def __init__(
        self,
        pipeline: IPFVRPipeline,
        *,
        identity: EncodedIdentity,
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor,
        guidance_weights: tuple[float, ...],
        generator: torch.Generator,
        conditions: SessionConditions,
    ) -> None:
        self._pipe = pipeline
        self._cfg = pipeline.ipfvr_config
        self._identity = identity
        self._prompt_embeds = prompt_embeds
        self._negative_embeds = negative_prompt_embeds
        self._weights = guidance_weights
        self._generator = generator
        self.conditions = conditions
        self._size = self._cfg.resolution
        self._pending: list[np.ndarray] = []  # (S, S, 3) uint8 crops from the next clip's first frame on
        self._context = 0  # how many of _pending are the previous clip's last m frames
        self._start = 0  # track index of _pending[0]
        self._prev_latents: list[torch.Tensor] | None = None  # per step (1, C, m, h, w) of the previous clip
        self._prev_noise: torch.Tensor | None = None  # (1, C, m, h, w) initial noise of the previous clip's last m
        self._held: np.ndarray | None = None  # (m, S, S, 3) float32 outputs waiting for the cross-fade
        self._steps = pipeline.planned_steps()
        self.clips_run: list[ClipSpan] = []  # clips restored so far, in track coordinates

    # ------------------------------------------------------------------ EngineSession
    def push(
        self,
        clip: np.ndarray,
        *,
        native_size: int | None = None,  # unused: the diffusion model restores at its own resolution
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:
        expected = (self._size, self._size, 3)
        if not isinstance(clip, np.ndarray) or clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[1:] != expected:
            shape = getattr(clip, "shape", None)
            raise InputError(
                f"expected uint8 (T, {self._size}, {self._size}, 3) crops, got {shape}",
                field="clip",
                code="invalid_option",
            )
        self._pending.extend(list(clip))
        full = self._count_full_clips(len(self._pending))
        tracker = _StepProgress(progress, should_cancel, total=full * self._steps)
        outputs: list[np.ndarray] = []
        while len(self._pending) >= self._cfg.clip_length:
            outputs.append(self._run_clip(self._cfg.clip_length, final=False, tracker=tracker))
        return self._concat(outputs)

    def flush(self, *, progress: ProgressFn | None = None, should_cancel: CancelFn | None = None) -> np.ndarray:
        tracker = _StepProgress(progress, should_cancel, total=self._steps if len(self._pending) > self._context else 0)
        outputs: list[np.ndarray] = []
        if len(self._pending) > self._context:
            outputs.append(self._run_clip(len(self._pending), final=True, tracker=tracker))
        elif self._held is not None:
            outputs.append(self._to_uint8(self._held))
        self._start += len(self._pending)  # a later push starts a new stretch after these frames
        self._pending, self._context, self._prev_latents, self._held = [], 0, None, None
        self._prev_noise = None
        return self._concat(outputs)

    # ------------------------------------------------------------------ internals
    def _count_full_clips(self, buffered: int) -> int:
        f, m = self._cfg.clip_length, self._cfg.overlap
        return 0 if buffered < f else 1 + (buffered - f) // (f - m)

    def _run_clip(self, length: int, *, final: bool, tracker: _StepProgress) -> np.ndarray:
        """Restore ``_pending[:length]``; return the frames that are final now; keep state for the next clip."""
        check_canceled(tracker.should_cancel)
        m = self._cfg.overlap
        context = self._context
        frames = np.stack(self._pending[:length])  # (L, S, S, 3) uint8
        keep_tail = 0 if final else m
        result = self._pipe(
            frames,
            prompt_embeds=self._prompt_embeds,
            negative_prompt_embeds=self._negative_embeds,
            guidance_weights=self._weights,
            identity=self._identity,
            generator=self._generator,
            previous_latents=self._prev_latents if context > 0 else None,
            previous_noise=self._prev_noise if context > 0 else None,
            cache_tail_frames=keep_tail,
            output_type="np",
            callback_on_step_end=tracker.callback,
        )
        restored = result.frames  # (L, S, S, 3) float32 in [0, 1]
        head = restored[:context]  # the overlap with the previous clip
        if context > 0 and self._held is not None:
            head = crossfade(self._held, head, crossfade_weights(context)) if self._cfg.output_crossfade else head
        emit_until = length if final else length - m
        emitted = np.concatenate([head, restored[context:emit_until]])  # (L - m or L, S, S, 3)
        self.clips_run.append(ClipSpan(start=self._start, stop=self._start + length, context=context))
        if final:
            self._held, self._prev_latents = None, None
        else:
            self._held = restored[length - m :] if m > 0 else None  # (m, S, S, 3)
            self._prev_latents = result.step_latents if m > 0 else None
            self._prev_noise = result.tail_noise if m > 0 else None
            self._pending = self._pending[length - m :]
            self._start += length - m
            self._context = m
        return self._to_uint8(emitted)

    @staticmethod
    def _to_uint8(frames: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)

    def _concat(self, parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.zeros((0, self._size, self._size, 3), dtype=np.uint8)
        return np.concatenate(parts)  # (T', S, S, 3)


class _StepProgress:
    """Counts denoising steps over one push/flush; the pipeline calls :meth:`callback` after each step."""

    def __init__(self, progress: ProgressFn | None, should_cancel: CancelFn | None, *, total: int) -> None:
        self.progress = progress
        self.should_cancel = should_cancel
        self.total = total
        self.done = 0

    def callback(
        self, pipeline: IPFVRPipeline, step: int, timestep: torch.Tensor, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
        check_canceled(self.should_cancel)
        return {}
