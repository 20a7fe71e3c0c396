"""IPFVRConfig: every design choice of the IP-FVR engine, in one validated dataclass.

The paper (Han et al., arXiv 2507.10293) states the clip length (24), decoupled cross-attention,
per-identity LoRA, exponential inter-clip blending and multi-stream negative guidance; every other
choice is ours and lives here as a field so that it can change when the full paper or checkpoints
appear. The dataclass is stored as ``ipfvr/config.json`` in a weights folder
(see :mod:`ipfvr_core.diffusion.weights`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ipfvr_core.errors import ConfigError

Sampler = Literal["ddim", "dpmsolver++", "euler", "euler_ancestral", "unipc"]
SAMPLERS: tuple[str, ...] = ("ddim", "dpmsolver++", "euler", "euler_ancestral", "unipc")
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
ID_ENCODERS: dict[str, str] = {"arcface": "cosine", "dlib": "l2"}  # embedding source -> FaceAnalyzer.metric


# The fields naming the backbone's component folders (baked into the modules at load time).
COMPONENT_FOLDER_FIELDS = (
    "unet_folder",
    "motion_adapter_folder",
    "vae_folder",
    "text_encoder_folder",
    "tokenizer_folder",
    "scheduler_folder",
    "image_encoder_folder",
)


@dataclass
class IPFVRConfig:
    """Model and inference configuration. Call :meth:`validate` after building or changing one."""

    # --- backbone folders, relative to the weights folder (or absolute paths) ---
    unet_folder: str = "unet"  # stock UNet2DConditionModel (SD-1.5 family)
    motion_adapter_folder: str = "motion_adapter"  # stock AnimateDiff MotionAdapter
    vae_folder: str = "vae"  # stock AutoencoderKL, spatial scale factor 8
    text_encoder_folder: str = "text_encoder"  # stock CLIPTextModel
    tokenizer_folder: str = "tokenizer"  # stock CLIPTokenizer (vocab.json + merges.txt)
    scheduler_folder: str = "scheduler"  # scheduler_config.json; its betas are reused by every sampler
    image_encoder_folder: str = "image_encoder"  # CLIPVisionModelWithProjection, only read by the Perceiver path
    lora_folder: str = "loras"  # per-identity LoRAs psi_id: <lora_folder>/<name>.safetensors

    # --- clips (paper: 24-frame clips) ---
    clip_length: int = 24  # F: frames denoised together by the motion U-Net
    overlap: int = 8  # m: frames shared by consecutive clips (blended in latents, cross-faded in pixels)

    # --- exponential inter-clip blending ---
    # beta in alpha_j = exp(-beta * (j + blend_index_offset)); math.inf disables blending. alpha_j is a PER-STEP
    # weight: applied at K steps it compounds to a final weight 1 - (1 - alpha_j)**K of the previous clip
    # (blending module docstring); blend_calibrated makes the final weight alpha_j instead
    blend_beta: float = 0.5
    blend_index_offset: int = 0  # 0 = design text (alpha_0 = 1 pins the first overlap frame); 1 = every alpha < 1
    blend_fade_steps: int = 0  # blending fades linearly to zero over this many final denoising steps (0 = never)
    blend_calibrated: bool = False  # per-step weights chosen so the compounded final weight equals alpha_j
    output_crossfade: bool = True  # linearly cross-fade the overlap frames of consecutive clips in the output

    # --- sampler ---
    sampler: Sampler = "ddim"  # scheduler class built from scheduler/scheduler_config.json
    beta_schedule: Literal["linear", "scaled_linear"] = "linear"  # AnimateDiff's; replaces the scheduler folder's
    num_inference_steps: int = 25  # denoising steps of a full-strength run
    ddim_eta: float = 0.0  # DDIM eta (0 = deterministic DDIM); ignored by the other samplers

    # --- multi-stream negative guidance: eps = eps(c+) + sum_s w_s (eps(c+) - eps(c-_s)) ---
    # = classifier-free guidance at scale 1 + W (W = sum_s w_s) against the w-weighted mean negative, so a job's
    # guidance_scale g (which sets W = g, keeping the ratios) is CFG scale 1 + g; a weight-0 stream runs no U-Net work
    quality_negative_prompt: str = "blurry, low quality, jpeg artifacts, noise, deformed face"  # quality stream text
    quality_guidance_weight: float = 1.5  # w for the quality stream (0 drops the stream)
    attribute_guidance_weight: float = 0.5  # w for the Face2Text attribute-negation stream (0 drops it)
    user_guidance_weight: float = 1.0  # w for the user's negative prompt stream (0 drops it)
    negative_identity: Literal["zero", "same"] = (
        "zero"  # negatives carry tokens of a zero embedding, or the same tokens
    )
    condition_batch_size: int = 0  # conditions per U-Net call; 0 = all 1+S conditions in one batched call

    # --- identity tokens and decoupled cross-attention ---
    identity_scale: float = 1.0  # lambda in Attn(Q,K_txt,V_txt) + lambda * Attn(Q,K_id,V_id); 0 = plain backbone
    num_identity_tokens: int = 4  # N tokens produced per identity embedding
    id_embedding_dim: int = 512  # D of the face embedding (512 ArcFace/insightface, 128 dlib)
    id_encoder: Literal["arcface", "dlib"] = "arcface"  # which face embedder the projection was trained on
    normalize_id_embedding: bool = True  # L2-normalise embeddings before combining and after averaging
    id_proj_hidden_dim: int = 1024  # hidden width of the embedding -> tokens MLP
    identity_encoder: Literal["mlp", "mlp+perceiver"] = "mlp"  # add a Perceiver over CLIP-vision patch features
    perceiver_depth: int = 4  # Perceiver resampler layers
    perceiver_heads: int = 12  # attention heads per Perceiver layer
    perceiver_head_dim: int = 64  # width of one Perceiver head
    perceiver_shortcut_scale: float = 1.0  # tokens = mlp_tokens + scale * perceiver(mlp_tokens, patches)
    reference_embedding_combine: Literal["mean", "concat"] = "mean"  # several references: average, or N tokens each
    reference_patch_combine: Literal["concat", "mean"] = "concat"  # several references' CLIP patch tokens

    # --- per-identity LoRA psi_id ---
    lora_rank: int = 16  # r of new adapters
    lora_alpha: float = 16.0  # LoRA alpha of new adapters (scale alpha / r)
    lora_target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections adapted
    lora_on_motion_modules: bool = False  # also adapt the motion modules' temporal attention
    trained_identity_network: str | None = None  # the network stage feedback rewarded identity by; judge with another
    base_loras: tuple[str, ...] = ()  # LoRAs in <lora_folder> always active, under the identity's (backbone LoRA)

    # --- Face2Text ---
    prompt_template: str = "a close-up video of {description}, sharp focus, detailed skin, high quality"  # sentence
    user_prompt_mode: Literal["extend", "override"] = "extend"  # user text appended to, or replacing, the sentence
    celeba_attribute_model: str | None = None  # path to a CelebA-40 attribute ONNX model (logits), optional
    celeba_threshold: float = 0.5  # probability above which a CelebA attribute counts as present
    face2text_max_details: int = 6  # most attribute phrases after "with" (keeps the sentence inside CLIP's 77 tokens)

    # --- resolution, LQ conditioning, SDEdit ---
    resolution: int = 512  # side of the aligned face crops (multiple of 8 * 2**(down blocks - 1))
    init_strength: float = 1.0  # 1 = start from pure noise; s < 1 = SDEdit from LQ latents noised to fraction s

    # --- VAE ---
    vae_slice_frames: int = 8  # frames per VAE encode/decode call (bounded memory); 0 = all at once
    upcast_vae: bool = False  # run the VAE in float32 even when the U-Net runs in half precision

    # --- runtime ---
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # weights dtype when the loader is given none
    compile: bool = False  # torch.compile the U-Net forward
    channels_last: bool = False  # channels_last memory format for the U-Net and VAE (GPU speed)

    # ------------------------------------------------------------------ API
    def validate(self) -> IPFVRConfig:
        """Check every field; raise :class:`ConfigError` (code ``config_invalid``) naming the first bad one."""
        for name in (*COMPONENT_FOLDER_FIELDS, "lora_folder"):
            _require(
                isinstance(getattr(self, name), str) and getattr(self, name) != "", name, "must be a non-empty path"
            )
        _int_range(self, "clip_length", 1, 1024)  # the motion adapter's own limit is checked at load
        _int_range(self, "overlap", 0, self.clip_length - 1)
        _require(
            _is_number(self.blend_beta) and not math.isnan(self.blend_beta) and self.blend_beta >= 0,
            "blend_beta",
            "must be a number >= 0 (math.inf disables blending)",
        )
        _int_range(self, "blend_index_offset", 0, 1)
        _int_range(self, "blend_fade_steps", 0, 1000)
        _require(isinstance(self.blend_calibrated, bool), "blend_calibrated", "must be true or false")
        _require(isinstance(self.output_crossfade, bool), "output_crossfade", "must be true or false")
        _choice(self, "sampler", SAMPLERS)
        _choice(self, "beta_schedule", ("linear", "scaled_linear"))
        _int_range(self, "num_inference_steps", 1, 1000)
        _float_range(self, "ddim_eta", 0.0, 1.0)
        _require(isinstance(self.quality_negative_prompt, str), "quality_negative_prompt", "must be a string")
        for name in ("quality_guidance_weight", "attribute_guidance_weight", "user_guidance_weight"):
            _float_range(self, name, 0.0, 50.0)
        _choice(self, "negative_identity", ("zero", "same"))
        _int_range(self, "condition_batch_size", 0, 64)
        _float_range(self, "identity_scale", 0.0, 10.0)
        _int_range(self, "num_identity_tokens", 1, 256)
        _int_range(self, "id_embedding_dim", 1, 8192)
        _choice(self, "id_encoder", tuple(ID_ENCODERS))
        _require(isinstance(self.normalize_id_embedding, bool), "normalize_id_embedding", "must be true or false")
        _int_range(self, "id_proj_hidden_dim", 1, 65536)
        _choice(self, "identity_encoder", ("mlp", "mlp+perceiver"))
        _int_range(self, "perceiver_depth", 1, 64)
        _int_range(self, "perceiver_heads", 1, 128)
        _int_range(self, "perceiver_head_dim", 1, 1024)
        _float_range(self, "perceiver_shortcut_scale", 0.0, 100.0)
        _choice(self, "reference_embedding_combine", ("mean", "concat"))
        _choice(self, "reference_patch_combine", ("concat", "mean"))
        _int_range(self, "lora_rank", 1, 1024)
        _float_range(self, "lora_alpha", 1e-6, 1e6)
        _require(
            self.trained_identity_network is None
            or (isinstance(self.trained_identity_network, str) and bool(self.trained_identity_network)),
            "trained_identity_network",
            "must be null or a network's name",
        )
        _require(
            isinstance(self.base_loras, tuple)
            and len(set(self.base_loras)) == len(self.base_loras)
            and all(isinstance(n, str) and re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", n) for n in self.base_loras),
            "base_loras",
            "must be distinct LoRA names (letters, digits, '_', '.', '-')",
        )
        _require(
            isinstance(self.lora_target_modules, tuple)
            and len(self.lora_target_modules) > 0
            and all(isinstance(m, str) and m for m in self.lora_target_modules),
            "lora_target_modules",
            "must be a non-empty list of module names",
        )
        _require(isinstance(self.lora_on_motion_modules, bool), "lora_on_motion_modules", "must be true or false")
        _require(
            isinstance(self.prompt_template, str) and "{description}" in self.prompt_template,
            "prompt_template",
            "must be a string containing '{description}'",
        )
        _choice(self, "user_prompt_mode", ("extend", "override"))
        _require(
            self.celeba_attribute_model is None
            or (isinstance(self.celeba_attribute_model, str) and self.celeba_attribute_model != ""),
            "celeba_attribute_model",
            "must be null or a path",
        )
        _float_range(self, "celeba_threshold", 0.0, 1.0)
        _int_range(self, "face2text_max_details", 0, 40)
        _int_range(self, "resolution", 8, 4096)
        _require(self.resolution % 8 == 0, "resolution", "must be a multiple of 8 (VAE scale factor)")
        _require(
            _is_number(self.init_strength) and 0.0 < self.init_strength <= 1.0,
            "init_strength",
            "must be in (0, 1]",
        )
        _int_range(self, "vae_slice_frames", 0, 4096)
        _require(isinstance(self.upcast_vae, bool), "upcast_vae", "must be true or false")
        _choice(self, "dtype", DTYPES)
        _require(isinstance(self.compile, bool), "compile", "must be true or false")
        _require(isinstance(self.channels_last, bool), "channels_last", "must be true or false")
        return self

    @property
    def id_metric(self) -> str:
        """The FaceAnalyzer metric ("cosine" or "l2") of the embeddings this model expects."""
        return ID_ENCODERS[self.id_encoder]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["lora_target_modules"] = list(self.lora_target_modules)
        out["base_loras"] = list(self.base_loras)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IPFVRConfig:
        """Build and validate from a dict; unknown keys raise ConfigError naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"unknown config field {key!r}", field=key)
        values = dict(data)
        for name in ("lora_target_modules", "base_loras"):
            if name in values and isinstance(values[name], list):
                values[name] = tuple(values[name])
        return cls(**values).validate()

    def replace(self, **changes: Any) -> IPFVRConfig:
        """A validated copy with ``changes`` applied; unknown names raise ConfigError naming them."""
        merged = self.to_dict()
        merged.update(changes)
        return IPFVRConfig.from_dict(merged)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, name: str, reason: str) -> None:
    if not ok:
        raise ConfigError(reason, field=name, code="config_invalid")


def _int_range(cfg: IPFVRConfig, name: str, lo: int, hi: int) -> None:
    value = getattr(cfg, name)
    _require(
        isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
        name,
        f"must be an integer in [{lo}, {hi}], got {value!r}",
    )


def _float_range(cfg: IPFVRConfig, name: str, lo: float, hi: float) -> None:
    value = getattr(cfg, name)
    _require(
        _is_number(value) and math.isfinite(value) and lo <= value <= hi,
        name,
        f"must be a number in [{lo}, {hi}], got {value!r}",
    )


def _choice(cfg: IPFVRConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    _require(value in choices, name, f"must be one of {', '.join(choices)}; got {value!r}")
