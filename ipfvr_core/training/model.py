"""What stage ``restore``/``feedback``/``identity`` trains: the modules behind one forward, and which parameters learn.

Also the frozen pieces around them: VAE encoding and (differentiable) decoding of clips, and the
identity network the feedback stage is rewarded by.
"""

from __future__ import annotations

import torch
from torch import nn

from ipfvr_core.diffusion.guidance import frame_condition_embeds
from ipfvr_core.diffusion.identity_tokens import IdentityEncoder
from ipfvr_core.diffusion.pipeline_ipfvr import IPFVRPipeline
from ipfvr_core.errors import ConfigError
from ipfvr_core.training.config import TrainConfig

BACKBONE_LORA = "backbone"  # name of the backbone LoRA of stages restore and feedback (a base LoRA of the output)


class RestoreModel(nn.Module):
    """The trained modules behind one forward, so that accelerate wraps (and DDP syncs) one module."""

    def __init__(self, unet: nn.Module, identity_encoder: IdentityEncoder) -> None:
        super().__init__()
        self.unet = unet
        self.identity_encoder = identity_encoder

    def forward(
        self,
        model_input: torch.Tensor,
        timesteps: torch.Tensor,
        text: torch.Tensor,
        id_embedding: torch.Tensor,
        keep_identity: torch.Tensor,
    ) -> torch.Tensor:
        """``model_input`` (B, 2C, F, h, w), ``timesteps`` (B,), ``text`` (B, L, D), ``id_embedding``
        (B, E), ``keep_identity`` (B,) 1/0 -> the U-Net's prediction (B, C, F, h, w)."""
        num_frames = model_input.shape[2]
        embeddings = id_embedding * keep_identity[:, None]  # (B, E); a dropped identity is the zero embedding
        tokens = torch.cat([self.identity_encoder(e[None]) for e in embeddings])  # (B, N, D)
        states = torch.cat([text, tokens.to(text.dtype)], dim=1)  # (B, L+N, D)
        states = frame_condition_embeds(states, num_frames)  # (B*F, L+N, D)
        return self.unet(model_input, timesteps, encoder_hidden_states=states).sample  # (B, C, F, h, w)


def trainable_parameters(
    unet: nn.Module,
    identity_encoder: nn.Module,
    *,
    motion: bool,
    whole_unet: bool = False,
    lora: str | None = None,
    backbone_lora: bool = False,
) -> list[nn.Parameter]:
    """Freeze all but what the stage trains; returns those parameters (requires_grad set).

    ``lora``: the LoRA adapter of that name alone (stage identity); ``backbone_lora``: also the
    backbone LoRA (``BACKBONE_LORA``)."""
    unet.requires_grad_(False)
    if lora is not None:
        identity_encoder.requires_grad_(False)
        chosen = [p for n, p in unet.named_parameters() if "lora_" in n and f".{lora}." in n]
        if not chosen:
            raise ConfigError(f"LoRA {lora!r} has no parameters in this U-Net", field="identity_name")
        return [p.requires_grad_(True) for p in chosen]
    identity_encoder.requires_grad_(True)
    chosen = []
    for name, parameter in unet.named_parameters():
        adapter = name == "conv_in.weight" or "to_k_id" in name or "to_v_id" in name
        backbone = backbone_lora and "lora_" in name and f".{BACKBONE_LORA}." in name
        if adapter or backbone or whole_unet or (motion and "motion_modules" in name):
            parameter.requires_grad_(True)
            chosen.append(parameter)
    return chosen + list(identity_encoder.parameters())


def vae_latents(pipe: IPFVRPipeline, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """VAE latents (B, C, F, h, w) of frames (B, F, 3, H, W) in [0, 1]; sampled when a generator is given."""
    batch, num_frames = frames.shape[:2]
    x = frames.flatten(0, 1).to(device=pipe.vae.device, dtype=pipe.vae.dtype) * 2.0 - 1.0  # (B*F, 3, H, W)
    dist = pipe.vae.encode(x).latent_dist
    if generator is None:
        z = dist.mode()
    else:
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator).to(dist.mean)  # (B*F, C, h, w)
    shift = pipe.vae.config.shift_factor or 0.0
    z = (z - shift) * pipe.vae.config.scaling_factor
    return z.unflatten(0, (batch, num_frames)).permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)


def decode_latents(pipe: IPFVRPipeline, latents: torch.Tensor) -> torch.Tensor:
    """Frames (B*F, 3, H, W) in [0, 1] from latents (B, C, F, h, w), with gradients (the VAE stays frozen)."""
    shift = pipe.vae.config.shift_factor or 0.0
    z = latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / pipe.vae.config.scaling_factor + shift  # (B*F, C, h, w)
    return (pipe.vae.decode(z.to(pipe.vae.dtype)).sample.float() / 2.0 + 0.5).clamp(0.0, 1.0)


def identity_network(config: TrainConfig, device: torch.device) -> nn.Module:
    """The frozen, differentiable identity network the feedback stage is rewarded by: the FaceNet port,
    ``arcface:PATH`` (an insightface recogniser's ONNX file, run by torch ops), or a factory
    ``package.module:function`` returning a module that maps (N, 3, S, S) RGB in [0, 1] to (N, E)
    unit vectors and has ``input_size`` (S)."""
    import importlib

    from ipfvr_core.identity_nets.facenet import load_facenet

    if config.identity_network == "facenet":
        network = load_facenet()
    elif config.identity_network.startswith("arcface:"):
        from ipfvr_core.identity_nets.onnx_graph import ArcFaceNetwork

        network = ArcFaceNetwork(config.identity_network.removeprefix("arcface:"))
    else:
        module_name, _, function = config.identity_network.partition(":")
        try:
            network = getattr(importlib.import_module(module_name), function)()
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"cannot load {config.identity_network!r}: {exc}", field="identity_network") from exc
        if not isinstance(network, nn.Module) or not isinstance(getattr(network, "input_size", None), int):
            raise ConfigError(
                f"{config.identity_network!r} did not return a torch module with an input_size",
                field="identity_network",
            )
    return network.to(device).requires_grad_(False)
