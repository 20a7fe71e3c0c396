"""Decoupled identity cross-attention, as a diffusers attention processor.

Installed with ``unet.set_attn_processor`` on the spatial cross-attention layers (``attn2`` of the
U-Net's transformer blocks; the motion modules keep their stock processors), so the U-Net code
stays stock. The processor owns only the identity key/value projections ``to_k_id``/``to_v_id``
and the scale lambda; the query, the text key/value and the output projection are the layer's own
(and therefore carry the per-identity LoRA psi_id when one is active):

    out = to_out( Attn(Q, K_text, V_text) + lambda * Attn(Q, K_id, V_id) )

Identity tokens travel appended to ``encoder_hidden_states`` as with diffusers'
``IPAdapterAttnProcessor2_0`` given a plain tensor: the last ``num_tokens`` tokens are split off.
With ``scale == 0`` the identity branch is skipped and the text branch runs exactly the operations
of ``AttnProcessor2_0``, so the output equals the plain backbone's bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

IDENTITY_KV_SUFFIXES = ("to_k_id.weight", "to_v_id.weight")


class IdentityAttnProcessor(nn.Module):
    """Cross-attention processor adding lambda * Attn(Q, K_id, V_id) to the text attention (SDPA)."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, num_tokens: int, scale: float) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.cross_attention_dim = cross_attention_dim
        self.num_tokens = num_tokens  # identity tokens at the end of encoder_hidden_states
        self.scale = scale  # lambda
        self.to_k_id = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_id = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        identity_tokens: torch.Tensor | None = None
        if encoder_hidden_states is not None and self.num_tokens > 0:
            text_len = encoder_hidden_states.shape[1] - self.num_tokens
            if text_len < 1:
                raise ValueError(
                    f"encoder_hidden_states has {encoder_hidden_states.shape[1]} tokens; "
                    f"expected text tokens followed by {self.num_tokens} identity tokens"
                )
            identity_tokens = encoder_hidden_states[:, text_len:, :]  # (B, N, D)
            encoder_hidden_states = encoder_hidden_states[:, :text_len, :]  # (B, L, D)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)  # (B, HW, C)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])  # (B, h, Q, K)

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, Q, d)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, L, d)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, L, d)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )  # (B, h, Q, d)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)  # (B, Q, h*d)
        hidden_states = hidden_states.to(query.dtype)

        if identity_tokens is not None and self.scale != 0.0:
            id_key = self.to_k_id(identity_tokens)
            id_value = self.to_v_id(identity_tokens)
            id_key = id_key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, N, d)
            id_value = id_value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, N, d)
            id_states = F.scaled_dot_product_attention(query, id_key, id_value, dropout_p=0.0, is_causal=False)
            id_states = id_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)  # (B, Q, h*d)
            hidden_states = hidden_states + self.scale * id_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)  # (B, C, H, W)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def identity_layer_names(unet: nn.Module) -> list[str]:
    """Module names of the spatial cross-attention layers that take identity tokens."""
    return [
        name
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and module.is_cross_attention and "motion_modules" not in name
    ]


def install_identity_processors(unet: nn.Module, *, num_tokens: int, scale: float) -> dict[str, IdentityAttnProcessor]:
    """Put an :class:`IdentityAttnProcessor` on every spatial cross-attention layer; keep all others.

    Returns the new processors by processor name (``<layer>.processor``). Their identity K/V weights
    are freshly initialised; load trained ones with :func:`load_identity_kv`.
    """
    layers = set(identity_layer_names(unet))
    modules = dict(unet.named_modules())
    installed: dict[str, IdentityAttnProcessor] = {}
    processors: dict[str, object] = {}
    for proc_name, processor in unet.attn_processors.items():
        layer = proc_name.removesuffix(".processor")
        if layer in layers:
            attn = modules[layer]
            new = IdentityAttnProcessor(
                hidden_size=attn.to_k.out_features,
                cross_attention_dim=attn.to_k.in_features,
                num_tokens=num_tokens,
                scale=scale,
            )
            first = next(attn.parameters())
            new.to(device=first.device, dtype=first.dtype)
            installed[proc_name] = new
            processors[proc_name] = new
        else:
            processors[proc_name] = processor
    if not installed:
        raise ValueError("the U-Net has no spatial cross-attention layer to carry identity tokens")
    unet.set_attn_processor(processors)
    return installed


def identity_processors(unet: nn.Module) -> dict[str, IdentityAttnProcessor]:
    """The installed identity processors by processor name."""
    return {name: p for name, p in unet.attn_processors.items() if isinstance(p, IdentityAttnProcessor)}


def configure_identity(unet: nn.Module, *, num_tokens: int | None = None, scale: float | None = None) -> None:
    """Set the identity token count and/or lambda on every installed identity processor."""
    processors = identity_processors(unet)
    if not processors:
        raise ValueError("no identity processors installed on this U-Net")
    for processor in processors.values():
        if num_tokens is not None:
            processor.num_tokens = num_tokens
        if scale is not None:
            processor.scale = scale


@contextmanager
def identity_settings(unet: nn.Module, *, num_tokens: int, scale: float) -> Iterator[None]:
    """Set the identity token count and lambda for the duration of one pipeline call, then restore them.

    The U-Net is shared by pipelines of different configs (``IPFVRPipeline.with_config``); restoring
    keeps a call of one from changing what another (or a direct U-Net call) sees afterwards.
    """
    processors = identity_processors(unet)
    before = {name: (p.num_tokens, p.scale) for name, p in processors.items()}
    configure_identity(unet, num_tokens=num_tokens, scale=scale)
    try:
        yield
    finally:
        for name, processor in processors.items():
            processor.num_tokens, processor.scale = before[name]


def identity_kv_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<processor name>.to_k_id.weight": (C, D), ...}`` for saving (contiguous CPU tensors)."""
    state: dict[str, torch.Tensor] = {}
    for name, processor in identity_processors(unet).items():
        state[f"{name}.to_k_id.weight"] = processor.to_k_id.weight.detach().cpu().contiguous()
        state[f"{name}.to_v_id.weight"] = processor.to_v_id.weight.detach().cpu().contiguous()
    return state


def load_identity_kv(unet: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy identity K/V weights into the installed processors; raise ValueError naming any key or shape mismatch."""
    processors = identity_processors(unet)
    expected = {f"{name}.{suffix}" for name in processors for suffix in IDENTITY_KV_SUFFIXES}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"identity K/V keys do not match the U-Net: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    with torch.no_grad():
        for name, processor in processors.items():
            for suffix, linear in (("to_k_id.weight", processor.to_k_id), ("to_v_id.weight", processor.to_v_id)):
                tensor = state[f"{name}.{suffix}"]
                if tuple(tensor.shape) != tuple(linear.weight.shape):
                    raise ValueError(
                        f"{name}.{suffix}: shape {tuple(tensor.shape)}, expected {tuple(linear.weight.shape)}"
                    )
                linear.weight.copy_(tensor.to(device=linear.weight.device, dtype=linear.weight.dtype))
