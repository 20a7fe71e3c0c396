"""The IP-FVR weights folder: layout, loader and writer of our own files.

Layout (every path relative to the weights folder; the component folder names are fields of
``ipfvr/config.json`` and may also be absolute paths, so a public SD-1.5 download can be shared)::

    WEIGHTS/
      unet/               stock   UNet2DConditionModel (SD-1.5 family), diffusers format
      motion_adapter/     stock   MotionAdapter (AnimateDiff motion modules for SD-1.5)
      vae/                stock   AutoencoderKL, spatial scale factor 8
      text_encoder/       stock   CLIPTextModel (CLIP ViT-L/14 text tower for SD-1.5)
      tokenizer/          stock   CLIPTokenizer (vocab.json, merges.txt)
      scheduler/          stock   scheduler_config.json (its betas; the sampler class is ipfvr/config.json's)
      image_encoder/      stock   CLIPVisionModelWithProjection; only for identity_encoder "mlp+perceiver"
      ipfvr/config.json               ours  IPFVRConfig (every design choice; see config.py)
      ipfvr/conv_in_lq.safetensors    ours  "weight" (C0, C_lq, k, k): conv_in input weights for the
                                            LQ latent channels (stock conv_in keeps its own weights and bias;
                                            zero-initialised before training)
      ipfvr/identity_proj.safetensors ours  IdentityEncoder state dict (MLP, optional Perceiver resampler)
      ipfvr/identity_kv.safetensors   ours  "<processor>.to_k_id.weight" / "<processor>.to_v_id.weight" per
                                            spatial cross-attention layer (decoupled identity K/V)
      loras/<name>.safetensors        ours  per-identity LoRA psi_id, diffusers/PEFT LoRA format

The stock parts come unchanged from public releases (e.g. an SD-1.5 checkpoint in diffusers format
and ``guoyww/animatediff-motion-adapter-v1-5-*``); ``random_checkpoint.init_ipfvr_weights`` writes untrained
``ipfvr/`` files next to them (zero LQ weights, identity K/V copied from the text K/V, random
identity projection; use ``identity_scale = 0`` and ``init_strength < 1`` until they are trained).
Everything loads from local files only (safe under ``HF_HUB_OFFLINE=1``). A missing or invalid
file raises ``ConfigError(code="weights_invalid", field="weights")`` naming it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ipfvr_core.diffusion.attention_processor import (
    identity_kv_state_dict,
    identity_processors,
    install_identity_processors,
    load_identity_kv,
)
from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.diffusion.identity_tokens import IdentityEncoder
from ipfvr_core.diffusion.lora import LORA_SUFFIX, check_lora_name, load_identity_lora
from ipfvr_core.diffusion.pipeline_ipfvr import IPFVRPipeline
from ipfvr_core.diffusion.random_backbone import BackboneComponents
from ipfvr_core.errors import ConfigError
from ipfvr_core.faces.base import FaceAnalyzer

IPFVR_DIR = "ipfvr"
CONFIG_FILE = "ipfvr/config.json"
CONV_IN_LQ_FILE = "ipfvr/conv_in_lq.safetensors"
IDENTITY_PROJ_FILE = "ipfvr/identity_proj.safetensors"
IDENTITY_KV_FILE = "ipfvr/identity_kv.safetensors"

T = TypeVar("T")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _invalid(message: str) -> ConfigError:
    return ConfigError(message, field="weights", code="weights_invalid")


def resolve_dtype(dtype: torch.dtype | str | None, config: IPFVRConfig) -> torch.dtype:
    """``dtype`` as a torch dtype; ``None`` means the config's."""
    if dtype is None:
        return _DTYPES[config.dtype]
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ConfigError(f"unsupported dtype {dtype}", field="dtype")
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"must be one of {', '.join(_DTYPES)}, got {dtype!r}", field="dtype")
    return _DTYPES[dtype]


def read_config(weights_dir: str | Path) -> IPFVRConfig:
    """Read and validate ``ipfvr/config.json``; every failure is ``weights_invalid`` naming the file."""
    path = Path(weights_dir) / CONFIG_FILE
    if not path.is_file():
        raise _invalid(f"missing {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _invalid(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise _invalid(f"{path}: expected a JSON object")
    try:
        return IPFVRConfig.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise _invalid(f"{path}: {exc}") from exc


def write_config(weights_dir: str | Path, config: IPFVRConfig) -> Path:
    """Write ``ipfvr/config.json``."""
    path = Path(weights_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.validate().to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def component_path(weights_dir: str | Path, folder: str) -> Path:
    """A component folder: absolute as given, else relative to the weights folder."""
    p = Path(folder)
    return p if p.is_absolute() else Path(weights_dir) / p


def lora_path(weights_dir: str | Path, config: IPFVRConfig, name: str) -> Path:
    """``<lora_folder>/<name>.safetensors``."""
    return component_path(weights_dir, config.lora_folder) / f"{check_lora_name(name)}{LORA_SUFFIX}"


def available_loras(weights_dir: str | Path, config: IPFVRConfig) -> list[str]:
    """Names of the LoRA files in the weights folder."""
    folder = component_path(weights_dir, config.lora_folder)
    return sorted(p.name.removesuffix(LORA_SUFFIX) for p in folder.glob(f"*{LORA_SUFFIX}")) if folder.is_dir() else []


def _require_folder(weights_dir: Path, folder: str, marker: str) -> Path:
    path = component_path(weights_dir, folder)
    if not (path / marker).is_file():
        raise _invalid(f"missing {path / marker}")
    return path


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise _invalid(f"missing {path}")
    try:
        return load_file(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise _invalid(f"cannot read {path}: {exc}") from exc


def widen_conv_in(unet: UNetMotionModel, lq_weight: torch.Tensor) -> None:
    """Append LQ input channels to ``unet.conv_in``: stock weights and bias kept, ``lq_weight`` (C0, C_lq, k, k) new."""
    old = unet.conv_in
    if (
        lq_weight.ndim != 4
        or lq_weight.shape[0] != old.out_channels
        or tuple(lq_weight.shape[2:]) != tuple(old.kernel_size)
    ):
        raise ValueError(
            f"LQ conv_in weight has shape {tuple(lq_weight.shape)}, "
            f"expected ({old.out_channels}, C_lq, {old.kernel_size[0]}, {old.kernel_size[1]})"
        )
    new = nn.Conv2d(
        old.in_channels + lq_weight.shape[1],
        old.out_channels,
        kernel_size=old.kernel_size,
        padding=old.padding,
        stride=old.stride,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.cat([old.weight, lq_weight.to(old.weight)], dim=1))  # (C0, C_in + C_lq, k, k)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)


def _guard(what: Path | str, fn: Callable[[], T]) -> T:
    """Run a loading step; library errors become ``weights_invalid`` naming ``what``."""
    try:
        return fn()
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise _invalid(f"cannot load {what}: {exc}") from exc


def load_components(root: Path, config: IPFVRConfig, dtype: torch.dtype) -> BackboneComponents:
    """Load the stock components named by ``config`` from a weights folder (local files only)."""
    vae_dtype = torch.float32 if config.upcast_vae else dtype
    unet_dir = _require_folder(root, config.unet_folder, "config.json")
    adapter_dir = _require_folder(root, config.motion_adapter_folder, "config.json")
    vae_dir = _require_folder(root, config.vae_folder, "config.json")
    text_dir = _require_folder(root, config.text_encoder_folder, "config.json")
    tok_dir = _require_folder(root, config.tokenizer_folder, "tokenizer_config.json")
    sched_dir = _require_folder(root, config.scheduler_folder, "scheduler_config.json")
    image_dir = (
        _require_folder(root, config.image_encoder_folder, "config.json")
        if config.identity_encoder == "mlp+perceiver"
        else None
    )
    local = {"local_files_only": True}
    return BackboneComponents(
        unet2d=_guard(unet_dir, lambda: UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=dtype, **local)),
        motion_adapter=_guard(
            adapter_dir, lambda: MotionAdapter.from_pretrained(adapter_dir, torch_dtype=dtype, **local)
        ),
        vae=_guard(vae_dir, lambda: AutoencoderKL.from_pretrained(vae_dir, torch_dtype=vae_dtype, **local)),
        text_encoder=_guard(text_dir, lambda: CLIPTextModel.from_pretrained(text_dir, dtype=dtype, **local)),
        tokenizer=_guard(tok_dir, lambda: CLIPTokenizer.from_pretrained(tok_dir, **local)),
        scheduler=_guard(sched_dir, lambda: DDIMScheduler.from_pretrained(sched_dir, **local)),
        image_encoder=None
        if image_dir is None
        else _guard(image_dir, lambda: CLIPVisionModelWithProjection.from_pretrained(image_dir, dtype=dtype, **local)),
    )


def assemble_pipeline(
    components: BackboneComponents,
    config: IPFVRConfig,
    *,
    lq_weight: torch.Tensor | None = None,
    identity_proj: Mapping[str, torch.Tensor] | None = None,
    identity_kv: Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    face_analyzer: FaceAnalyzer | None = None,
    seed: int = 0,
    sources: Mapping[str, str] | None = None,
) -> IPFVRPipeline:
    """Build the pipeline from stock components plus our weights.

    Missing pieces are initialised as before training: zero LQ conv_in weights, identity K/V copied
    from each layer's text K/V, a seeded random identity projection. ``sources`` names the file of
    each of ``lq_weight``/``identity_proj``/``identity_kv`` for error messages.
    """
    names = dict(sources or {})
    unet = _guard(
        names.get("unet", config.motion_adapter_folder),
        lambda: UNetMotionModel.from_unet2d(components.unet2d, components.motion_adapter),
    )
    max_frames = int(unet.config.motion_max_seq_length)
    if config.clip_length > max_frames:
        raise ConfigError(f"{config.clip_length} exceeds the motion adapter's {max_frames} frames", field="clip_length")
    vae, text_encoder, image_encoder = components.vae, components.text_encoder, components.image_encoder
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    if scale != 8:
        raise _invalid(f"{config.vae_folder}: VAE scale factor is {scale}, expected 8")
    if config.resolution % (scale * 2 ** (len(unet.config.block_out_channels) - 1)) != 0:
        raise ConfigError(f"{config.resolution} is not divisible by the VAE and U-Net downsampling", field="resolution")
    if text_encoder.config.hidden_size != unet.config.cross_attention_dim:
        raise _invalid(
            f"{config.text_encoder_folder}: hidden size {text_encoder.config.hidden_size} != "
            f"U-Net cross-attention {unet.config.cross_attention_dim}"
        )
    latent_channels = int(vae.config.latent_channels)
    conv = unet.conv_in
    if lq_weight is None:
        lq_weight = torch.zeros(conv.out_channels, latent_channels, *conv.kernel_size)
    elif lq_weight.ndim != 4 or lq_weight.shape[1] != latent_channels:
        raise _invalid(
            f"{names.get('lq', CONV_IN_LQ_FILE)}: expected 'weight' with {latent_channels} LQ input channels"
        )
    _guard(names.get("lq", CONV_IN_LQ_FILE), lambda: widen_conv_in(unet, lq_weight))
    install_identity_processors(unet, num_tokens=config.num_identity_tokens, scale=config.identity_scale)
    if identity_kv is None:
        _copy_text_kv(unet)
    else:
        _guard(names.get("kv", IDENTITY_KV_FILE), lambda: load_identity_kv(unet, identity_kv))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        identity_encoder = IdentityEncoder.from_config(
            config,
            token_dim=int(unet.config.cross_attention_dim),
            feature_dim=None if image_encoder is None else int(image_encoder.config.hidden_size),
        ).to(unet.device)
    if identity_proj is not None:
        _guard(
            names.get("proj", IDENTITY_PROJ_FILE),
            lambda: identity_encoder.load_state_dict(dict(identity_proj), strict=True),
        )
    torch_dtype = dtype or unet.dtype
    unet.to(dtype=torch_dtype)
    text_encoder.to(dtype=torch_dtype)
    identity_encoder.to(dtype=torch_dtype)
    if image_encoder is not None:
        image_encoder.to(dtype=torch_dtype)
    vae.to(dtype=torch.float32 if config.upcast_vae else torch_dtype)
    for module in (unet, vae, text_encoder, identity_encoder, image_encoder):
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    if config.channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    pipeline = IPFVRPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=components.tokenizer,
        unet=unet,
        scheduler=components.scheduler,
        identity_encoder=identity_encoder,
        image_encoder=image_encoder,
        ipfvr_config=config,
        face_analyzer=face_analyzer,
    )
    pipeline.to(device)
    return pipeline


def _copy_text_kv(unet: UNetMotionModel) -> None:
    """Initialise every identity K/V from its layer's text K/V (IP-Adapter's initialisation)."""
    modules = dict(unet.named_modules())
    with torch.no_grad():
        for name, processor in identity_processors(unet).items():
            attn = modules[name.removesuffix(".processor")]
            processor.to_k_id.weight.copy_(attn.to_k.weight)
            processor.to_v_id.weight.copy_(attn.to_v.weight)


def load_pipeline(
    weights_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    face_analyzer: FaceAnalyzer | None = None,
) -> IPFVRPipeline:
    """Load an :class:`IPFVRPipeline` from a weights folder (see the module docstring for the layout).

    ``overrides`` replaces config fields at load (``config_invalid`` naming a bad field); anything
    wrong with the files raises ``weights_invalid`` naming the file.
    """
    root = Path(weights_dir)
    if not root.is_dir():
        raise _invalid(f"weights folder not found: {root}")
    config = read_config(root)
    if overrides:
        config = config.replace(**dict(overrides))
    torch_dtype = resolve_dtype(dtype, config)
    conv_state = _load_safetensors(root / CONV_IN_LQ_FILE)
    if "weight" not in conv_state:
        raise _invalid(f"{root / CONV_IN_LQ_FILE}: no 'weight' tensor")
    proj_state = _load_safetensors(root / IDENTITY_PROJ_FILE)
    kv_state = _load_safetensors(root / IDENTITY_KV_FILE)
    components = load_components(root, config, torch_dtype)
    pipe = assemble_pipeline(
        components,
        config,
        lq_weight=conv_state["weight"],
        identity_proj=proj_state,
        identity_kv=kv_state,
        device=device,
        dtype=torch_dtype,
        face_analyzer=face_analyzer,
        sources={
            "unet": str(component_path(root, config.motion_adapter_folder)),
            "lq": str(root / CONV_IN_LQ_FILE),
            "proj": str(root / IDENTITY_PROJ_FILE),
            "kv": str(root / IDENTITY_KV_FILE),
        },
    )
    for name in config.base_loras:  # always active, under any identity's LoRA
        load_identity_lora(pipe.unet, name, lora_path(root, config, name))
    pipe.set_lora(None)
    return pipe


def weights_fingerprint(weights_dir: str | Path, config: IPFVRConfig) -> str:
    """Short sha256 over our files and every component's config (identifies a weights folder cheaply)."""
    root = Path(weights_dir)
    digest = hashlib.sha256()
    files = [root / CONFIG_FILE, root / CONV_IN_LQ_FILE, root / IDENTITY_PROJ_FILE, root / IDENTITY_KV_FILE]
    for folder, marker in (
        (config.unet_folder, "config.json"),
        (config.motion_adapter_folder, "config.json"),
        (config.vae_folder, "config.json"),
        (config.text_encoder_folder, "config.json"),
    ):
        files.append(component_path(root, folder) / marker)
    for path in files:
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------- writing weights
def save_ipfvr_weights(weights_dir: str | Path, pipeline: IPFVRPipeline) -> None:
    """Write ``ipfvr/`` (config, LQ conv_in weights, identity projection, identity K/V) from a pipeline."""
    root = Path(weights_dir)
    (root / IPFVR_DIR).mkdir(parents=True, exist_ok=True)
    config = pipeline.ipfvr_config
    lq_weight = pipeline.unet.conv_in.weight[:, -pipeline.latent_channels :]  # (C0, C_lq, k, k)
    save_file({"weight": lq_weight.detach().float().cpu().contiguous()}, str(root / CONV_IN_LQ_FILE))
    proj = {k: v.detach().float().cpu().contiguous() for k, v in pipeline.identity_encoder.state_dict().items()}
    save_file(proj, str(root / IDENTITY_PROJ_FILE))
    save_file({k: v.float() for k, v in identity_kv_state_dict(pipeline.unet).items()}, str(root / IDENTITY_KV_FILE))
    write_config(root, config)


RANDOM_WEIGHTS_MARKER = "RANDOM_TEST_WEIGHTS.txt"  # in every checkpoint random_checkpoint.write_tiny_checkpoint makes


def is_random_test_checkpoint(root: str | Path) -> bool:
    """Whether ``root`` is a checkpoint of random test weights (``ipfvr weights init-tiny``)."""
    return (Path(root) / RANDOM_WEIGHTS_MARKER).is_file()


__all__ = [
    "CONFIG_FILE",
    "CONV_IN_LQ_FILE",
    "IDENTITY_KV_FILE",
    "IDENTITY_PROJ_FILE",
    "assemble_pipeline",
    "available_loras",
    "load_components",
    "load_pipeline",
    "lora_path",
    "read_config",
    "save_ipfvr_weights",
    "weights_fingerprint",
    "write_config",
]
