"""Identity tokens: face embedding(s) of the reference(s) -> N tokens for the decoupled cross-attention.

* An MLP maps one identity embedding (ArcFace 512-d from insightface, or dlib 128-d) to N tokens of
  the U-Net's cross-attention width.
* Optionally (``identity_encoder = "mlp+perceiver"``) a Perceiver resampler refines those tokens by
  attending over CLIP-vision patch features of the aligned reference crops, in the style of
  IP-Adapter-FaceID-PlusV2: ``tokens = mlp_tokens + shortcut_scale * perceiver(mlp_tokens, patches)``.
* Several references: the L2-normalised embeddings are averaged (``mean``) or each gives its own N
  tokens (``concat``); the patch tokens are concatenated (``concat``) or averaged (``mean``).
* The negative condition is the zero embedding and, for the Perceiver, the CLIP states of the
  all-zero pixel tensor (:func:`clip_vision_negative_patches`), as IP-Adapter-FaceID-Plus does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ipfvr_core.diffusion.config import IPFVRConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class IdentityProjection(nn.Module):
    """MLP: (R, D) embeddings -> (R, N, C) tokens."""

    def __init__(self, id_dim: int, hidden_dim: int, token_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.net = nn.Sequential(
            nn.Linear(id_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, token_dim * num_tokens),
        )
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        tokens = self.net(embeddings)  # (R, N*C)
        tokens = tokens.reshape(-1, self.num_tokens, self.token_dim)  # (R, N, C)
        return self.norm(tokens)


class _PerceiverLayer(nn.Module):
    """Latents attend over [features; latents], then a feed-forward block; both residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, ff_mult: int = 4) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.norm_features = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim * ff_mult, bias=False),
            nn.GELU(),
            nn.Linear(dim * ff_mult, dim, bias=False),
        )

    def forward(self, latents: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        batch, num_latents, _ = latents.shape
        x = self.norm_features(features)  # (B, P, C)
        lat = self.norm_latents(latents)  # (B, N, C)
        q = self.to_q(lat).view(batch, num_latents, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        kv_in = torch.cat([x, lat], dim=1)  # (B, P+N, C)
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)  # 2 x (B, P+N, h*d)
        k = k.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, h, P+N, d)
        v = v.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, h, P+N, d)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        attended = attended.transpose(1, 2).reshape(batch, num_latents, self.heads * self.head_dim)  # (B, N, h*d)
        latents = latents + self.to_out(attended)
        return latents + self.ff(latents)


class PerceiverResampler(nn.Module):
    """Refines (B, N, C) tokens over (B, P, Dv) CLIP-vision patch features."""

    def __init__(self, token_dim: int, feature_dim: int, depth: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(feature_dim, token_dim)
        self.layers = nn.ModuleList([_PerceiverLayer(token_dim, heads, head_dim) for _ in range(depth)])
        self.proj_out = nn.Linear(token_dim, token_dim)
        self.norm_out = nn.LayerNorm(token_dim)

    def forward(self, tokens: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(features)  # (B, P, C)
        latents = tokens
        for layer in self.layers:
            latents = layer(latents, x)
        return self.norm_out(self.proj_out(latents))  # (B, N, C)


def combine_embeddings(embeddings: torch.Tensor, mode: Literal["mean", "concat"], *, normalize: bool) -> torch.Tensor:
    """(R, D) reference embeddings -> (1, D) for ``mean`` or (R, D) for ``concat``."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 1:
        raise ValueError(f"embeddings must have shape (R, D) with R >= 1, got {tuple(embeddings.shape)}")
    x = F.normalize(embeddings, dim=-1) if normalize else embeddings
    if mode == "concat":
        return x
    mean = x.mean(dim=0, keepdim=True)  # (1, D)
    return F.normalize(mean, dim=-1) if normalize else mean


def combine_patches(patches: torch.Tensor, mode: Literal["concat", "mean"]) -> torch.Tensor:
    """(R, P, Dv) patch features of R references -> (1, R*P, Dv) for ``concat`` or (1, P, Dv) for ``mean``."""
    if mode == "mean":
        return patches.mean(dim=0, keepdim=True)  # (1, P, Dv)
    return patches.reshape(1, -1, patches.shape[-1])  # (1, R*P, Dv)


class IdentityEncoder(nn.Module):
    """Embeddings (+ optional patch features) of R references -> (1, N', C) identity tokens.

    N' = N for ``reference_embedding_combine = "mean"`` and R*N for ``"concat"``.
    """

    def __init__(
        self,
        *,
        id_dim: int,
        hidden_dim: int,
        token_dim: int,
        num_tokens: int,
        embedding_combine: Literal["mean", "concat"] = "mean",
        patch_combine: Literal["concat", "mean"] = "concat",
        normalize: bool = True,
        perceiver_feature_dim: int | None = None,
        perceiver_depth: int = 4,
        perceiver_heads: int = 12,
        perceiver_head_dim: int = 64,
        perceiver_shortcut_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.id_dim = id_dim
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.embedding_combine = embedding_combine
        self.patch_combine = patch_combine
        self.normalize = normalize
        self.shortcut_scale = perceiver_shortcut_scale
        self.projection = IdentityProjection(id_dim, hidden_dim, token_dim, num_tokens)
        self.resampler: PerceiverResampler | None = None
        if perceiver_feature_dim is not None:
            self.resampler = PerceiverResampler(
                token_dim, perceiver_feature_dim, perceiver_depth, perceiver_heads, perceiver_head_dim
            )

    @classmethod
    def from_config(cls, config: IPFVRConfig, *, token_dim: int, feature_dim: int | None) -> IdentityEncoder:
        """Build for ``config``; ``feature_dim`` (CLIP-vision hidden size) is required for the Perceiver path."""
        use_perceiver = config.identity_encoder == "mlp+perceiver"
        if use_perceiver and feature_dim is None:
            raise ValueError("identity_encoder 'mlp+perceiver' needs the CLIP-vision feature size")
        return cls(
            id_dim=config.id_embedding_dim,
            hidden_dim=config.id_proj_hidden_dim,
            token_dim=token_dim,
            num_tokens=config.num_identity_tokens,
            embedding_combine=config.reference_embedding_combine,
            patch_combine=config.reference_patch_combine,
            normalize=config.normalize_id_embedding,
            perceiver_feature_dim=feature_dim if use_perceiver else None,
            perceiver_depth=config.perceiver_depth,
            perceiver_heads=config.perceiver_heads,
            perceiver_head_dim=config.perceiver_head_dim,
            perceiver_shortcut_scale=config.perceiver_shortcut_scale,
        )

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (diffusers' pipeline ``to()`` reads it)."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Parameter device."""
        return next(self.parameters()).device

    @property
    def uses_patches(self) -> bool:
        """True when the encoder needs CLIP-vision patch features."""
        return self.resampler is not None

    def token_count(self, num_references: int) -> int:
        """N' tokens produced for ``num_references`` references."""
        return self.num_tokens * (num_references if self.embedding_combine == "concat" else 1)

    def forward(self, embeddings: torch.Tensor, patch_features: torch.Tensor | None = None) -> torch.Tensor:
        """(R, D) embeddings, optional (R, P, Dv) patch features -> (1, N', C) tokens."""
        if embeddings.ndim != 2 or embeddings.shape[-1] != self.id_dim:
            raise ValueError(f"embeddings must have shape (R, {self.id_dim}), got {tuple(embeddings.shape)}")
        combined = combine_embeddings(embeddings, self.embedding_combine, normalize=self.normalize)  # (R', D)
        tokens = self.projection(combined)  # (R', N, C)
        if self.resampler is not None:
            if patch_features is None:
                raise ValueError("the Perceiver identity encoder needs CLIP-vision patch features")
            patches = combine_patches(patch_features, self.patch_combine)  # (1, P', Dv)
            patches = patches.expand(tokens.shape[0], -1, -1)  # (R', P', Dv)
            tokens = tokens + self.shortcut_scale * self.resampler(tokens, patches)  # (R', N, C)
        return tokens.reshape(1, -1, self.token_dim)  # (1, R'*N, C)


def clip_vision_patches(
    image_encoder: nn.Module, images: Sequence[np.ndarray], *, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(R, P, Dv) penultimate-layer patch features of R aligned RGB uint8 crops (H, W, 3)."""
    size = int(image_encoder.config.image_size)
    batch = []
    for image in images:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0  # (3, H, W)
        x = F.interpolate(x[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True)[0]
        batch.append(x.clamp(0.0, 1.0))
    pixels = torch.stack(batch)  # (R, 3, size, size)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)  # (1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)  # (1, 3, 1, 1)
    pixels = ((pixels - mean) / std).to(device=device, dtype=dtype)
    return _penultimate_states(image_encoder, pixels)  # (R, P, Dv)


def clip_vision_negative_patches(
    image_encoder: nn.Module, num_images: int, *, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(R, P, Dv) patch features of the unconditional image: the all-zero pixel tensor, once per reference.

    IP-Adapter-FaceID-Plus and diffusers (``encode_image``) build the negative image condition as
    ``image_encoder(zeros_like(pixel_values)).hidden_states[-2]``; the pixel values are the
    normalised ones, so zero is the CLIP-mean image.
    """
    size = int(image_encoder.config.image_size)
    pixels = torch.zeros(1, 3, size, size, device=device, dtype=dtype)  # (1, 3, size, size)
    states = _penultimate_states(image_encoder, pixels)  # (1, P, Dv)
    return states.expand(num_images, -1, -1)  # (R, P, Dv)


def _penultimate_states(image_encoder: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """(R, P, Dv) hidden states of the vision tower's penultimate layer for normalised (R, 3, S, S) pixels."""
    outputs = image_encoder(pixel_values=pixel_values, output_hidden_states=True)
    return outputs.hidden_states[-2]  # (R, P, Dv)
