"""Random checkpoints in the weights layout: untrained ``ipfvr/`` files, and a whole tiny model for tests.

:func:`init_ipfvr_weights` writes untrained ``ipfvr/`` files next to stock components (what
``ipfvr weights convert`` starts from); :func:`write_tiny_checkpoint` writes every component of a
tiny random model (``ipfvr weights init-tiny``), marked as random test weights. Both write exactly
what :func:`ipfvr_core.diffusion.weights.load_pipeline` reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import UNetMotionModel

from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.diffusion.lora import add_identity_lora, save_identity_lora
from ipfvr_core.diffusion.random_backbone import BackboneComponents, random_backbone
from ipfvr_core.diffusion.weights import (
    RANDOM_WEIGHTS_MARKER,
    assemble_pipeline,
    component_path,
    load_components,
    lora_path,
    save_ipfvr_weights,
)


def init_ipfvr_weights(
    weights_dir: str | Path,
    config: IPFVRConfig,
    *,
    seed: int = 0,
    lq_init: Literal["zero", "random"] = "zero",
) -> None:
    """Write untrained ``ipfvr/`` files for the stock components already in ``weights_dir``.

    LQ conv_in weights are zero (``lq_init="random"`` gives small seeded values, to exercise the LQ
    path in tests), the identity K/V copy each layer's text K/V, and the identity projection is
    randomly initialised with ``seed``.
    """
    root = Path(weights_dir)
    config.validate()
    components = load_components(root, config, torch.float32)
    lq_weight = None
    if lq_init == "random":
        out_channels = components.unet2d.conv_in.out_channels
        kernel = components.unet2d.conv_in.kernel_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            lq_weight = 0.05 * torch.randn(out_channels, int(components.vae.config.latent_channels), *kernel)
    pipeline = assemble_pipeline(components, config, lq_weight=lq_weight, seed=seed)
    save_ipfvr_weights(root, pipeline)


def write_tiny_checkpoint(
    weights_dir: str | Path,
    *,
    seed: int = 0,
    id_embedding_dim: int = 128,
    resolution: int = 64,
    identity_encoder: Literal["mlp", "mlp+perceiver"] = "mlp",
    num_identity_tokens: int = 4,
    lq_init: Literal["zero", "random"] = "random",
    lora_names: Sequence[str] = (),
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Write a tiny random checkpoint in exactly the layout :func:`load_pipeline` reads.

    A 2-level U-Net (32/64 channels) with motion modules, a scale-8 VAE, a 2-layer CLIP text model
    with a character-level tokenizer, DDIM betas of SD-1.5 and (for the Perceiver path) a tiny
    CLIP-vision tower; ``ipfvr/`` as :func:`init_ipfvr_weights` writes it (LQ weights random by
    default here so the LQ path shows in tests); ``lora_names`` adds random LoRAs under ``loras/``.
    Seeded: the same arguments write the same weights. Not a model of anything.
    """
    root = Path(weights_dir)
    root.mkdir(parents=True, exist_ok=True)
    config = IPFVRConfig(
        resolution=resolution,
        id_embedding_dim=id_embedding_dim,
        id_encoder="arcface" if id_embedding_dim == 512 else "dlib",
        identity_encoder=identity_encoder,
        num_identity_tokens=num_identity_tokens,
        id_proj_hidden_dim=64,
        perceiver_depth=1,
        perceiver_heads=2,
        perceiver_head_dim=16,
        lora_rank=4,
        lora_alpha=4.0,
        num_inference_steps=4,
    )
    if config_overrides:
        config = config.replace(**dict(config_overrides))
    config.validate()
    parts = random_backbone(
        "tiny",
        resolution=resolution,
        tokenizer_dir=component_path(root, config.tokenizer_folder),
        seed=seed,
        with_image_encoder=identity_encoder == "mlp+perceiver",
    )
    save_components(root, config, parts)
    init_ipfvr_weights(root, config, seed=seed, lq_init=lq_init)
    if lora_names:
        _write_random_loras(root, config, parts, lora_names, seed=seed)
    (root / RANDOM_WEIGHTS_MARKER).write_text(
        "These weights are random (ipfvr weights init-tiny): a test checkpoint that restores nothing.\n"
    )
    return root


def save_components(root: Path, config: IPFVRConfig, parts: BackboneComponents) -> None:
    """Save stock components into the folders ``config`` names."""
    parts.unet2d.save_pretrained(component_path(root, config.unet_folder))
    parts.motion_adapter.save_pretrained(component_path(root, config.motion_adapter_folder))
    parts.vae.save_pretrained(component_path(root, config.vae_folder))
    parts.text_encoder.save_pretrained(component_path(root, config.text_encoder_folder))
    parts.tokenizer.save_pretrained(str(component_path(root, config.tokenizer_folder)))
    parts.scheduler.save_pretrained(component_path(root, config.scheduler_folder))
    if parts.image_encoder is not None:
        parts.image_encoder.save_pretrained(component_path(root, config.image_encoder_folder))


def _write_random_loras(
    root: Path, config: IPFVRConfig, parts: BackboneComponents, names: Sequence[str], *, seed: int
) -> None:
    unet = UNetMotionModel.from_unet2d(parts.unet2d, parts.motion_adapter)
    for index, name in enumerate(names):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1000 + index)
            add_identity_lora(unet, name, config, init_random=True)
        save_identity_lora(unet, name, lora_path(root, config, name))
