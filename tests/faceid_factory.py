"""Test helper: synthetic IP-Adapter-FaceID checkpoints with the real files' key names and shapes.

The public files cannot be downloaded here, so these are built from the facts of the public
sources (tencent-ailab/IP-Adapter ``ip_adapter_faceid.py``, ``attention_processor_faceid.py``,
``resampler.py``; diffusers ``loaders/unet.py``):

* ``image_proj``: ``MLPProjModel`` (``proj.0`` D->1024, ``proj.2`` 1024->N*C, ``norm``), or for
  Plus-v2 ``ProjPlusModel`` (``proj.0`` D->2D, ``proj.2``, ``norm`` and ``perceiver_resampler.*``:
  ``proj_in``, ``layers.i.0.{norm1,norm2,to_q,to_kv,to_out}``, ``layers.i.1.{0,1,3}``, ``proj_out``,
  ``norm_out``; heads of 64);
* ``ip_adapter``: ``"{i}.*"`` over ``UNet2DConditionModel.attn_processors`` in order; every
  processor has a LoRA ``to_{q,k,v,out}_lora.{down,up}.weight`` (no bias), the cross-attentions
  (odd i) also ``to_k_ip.weight``/``to_v_ip.weight`` of shape (hidden, cross_attention_dim).

Values are seeded random (or empty tensors on the ``meta`` device for full-size shape checks):
test doubles that carry no meaning.
"""

from __future__ import annotations

import torch
from diffusers import MotionAdapter, UNet2DConditionModel

SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def sd15_unet_config(*, tiny: bool) -> dict:
    """SD-1.5's U-Net config (the public unet/config.json's structure); ``tiny`` keeps the blocks, shrinks widths."""
    return dict(
        sample_size=8 if tiny else 64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 32, 64, 64) if tiny else (320, 640, 1280, 1280),
        down_block_types=SD_DOWN,
        up_block_types=SD_UP,
        cross_attention_dim=32 if tiny else 768,
        attention_head_dim=8,
        norm_num_groups=8 if tiny else 32,
    )


def motion_adapter_config(*, tiny: bool) -> dict:
    """guoyww/animatediff-motion-adapter-v1-5-2's structure (motion mid block included)."""
    return dict(
        block_out_channels=(32, 32, 64, 64) if tiny else (320, 640, 1280, 1280),
        motion_layers_per_block=2,
        motion_num_attention_heads=2 if tiny else 8,
        motion_norm_num_groups=8 if tiny else 32,
        motion_max_seq_length=32,
        use_motion_mid_block=True,
    )


def make_motion_adapter(*, tiny: bool, seed: int = 0, identity_motion: bool = False) -> MotionAdapter:
    """A seeded random motion adapter; ``identity_motion`` zeroes every motion block's output projection
    so the motion U-Net computes each frame exactly as the 2D U-Net does (for comparisons with diffusers)."""
    torch.manual_seed(seed)
    adapter = MotionAdapter(**motion_adapter_config(tiny=tiny))
    if identity_motion:
        with torch.no_grad():
            for name, module in adapter.named_modules():
                if name.endswith("proj_out") and isinstance(module, torch.nn.Linear):
                    module.weight.zero_()
                    module.bias.zero_()
    return adapter.eval()


def faceid_state(
    unet: UNet2DConditionModel,
    *,
    rank: int,
    id_dim: int = 512,
    num_tokens: int = 4,
    plus_clip_dim: int | None = None,
    perceiver_depth: int = 4,
    perceiver_heads: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    with_lora: bool = True,
) -> dict[str, dict[str, torch.Tensor]]:
    """``{"image_proj": ..., "ip_adapter": ...}`` shaped for ``unet`` (``plus_clip_dim``: the Plus-v2 variant)."""
    generator = torch.Generator().manual_seed(seed)

    def tensor(*shape: int, scale: float = 0.05) -> torch.Tensor:
        if device == "meta":
            return torch.empty(*shape, device="meta", dtype=torch.float16)
        return scale * torch.randn(*shape, generator=generator)

    c = int(unet.config.cross_attention_dim)
    hidden = 2 * id_dim if plus_clip_dim is not None else 1024
    image_proj = {
        "proj.0.weight": tensor(hidden, id_dim),
        "proj.0.bias": tensor(hidden),
        "proj.2.weight": tensor(num_tokens * c, hidden),
        "proj.2.bias": tensor(num_tokens * c),
        "norm.weight": 1.0 + tensor(c),
        "norm.bias": tensor(c),
    }
    if plus_clip_dim is not None:
        heads = perceiver_heads or c // 64
        inner = heads * 64
        p = "perceiver_resampler."
        image_proj |= {
            f"{p}proj_in.weight": tensor(c, plus_clip_dim),
            f"{p}proj_in.bias": tensor(c),
            f"{p}proj_out.weight": tensor(c, c),
            f"{p}proj_out.bias": tensor(c),
            f"{p}norm_out.weight": 1.0 + tensor(c),
            f"{p}norm_out.bias": tensor(c),
        }
        for i in range(perceiver_depth):
            image_proj |= {
                f"{p}layers.{i}.0.norm1.weight": 1.0 + tensor(c),
                f"{p}layers.{i}.0.norm1.bias": tensor(c),
                f"{p}layers.{i}.0.norm2.weight": 1.0 + tensor(c),
                f"{p}layers.{i}.0.norm2.bias": tensor(c),
                f"{p}layers.{i}.0.to_q.weight": tensor(inner, c),
                f"{p}layers.{i}.0.to_kv.weight": tensor(2 * inner, c),
                f"{p}layers.{i}.0.to_out.weight": tensor(c, inner),
                f"{p}layers.{i}.1.0.weight": 1.0 + tensor(c),
                f"{p}layers.{i}.1.0.bias": tensor(c),
                f"{p}layers.{i}.1.1.weight": tensor(4 * c, c),
                f"{p}layers.{i}.1.3.weight": tensor(c, 4 * c),
            }
    modules = dict(unet.named_modules())
    ip_adapter: dict[str, torch.Tensor] = {}
    for index, name in enumerate(unet.attn_processors):
        attn = modules[name.removesuffix(".processor")]
        inner_dim, kv_in = attn.to_q.out_features, attn.to_k.in_features
        if with_lora:
            for proj, (fan_in, fan_out) in {
                "to_q": (attn.to_q.in_features, inner_dim),
                "to_k": (kv_in, inner_dim),
                "to_v": (kv_in, inner_dim),
                "to_out": (inner_dim, inner_dim),
            }.items():
                ip_adapter[f"{index}.{proj}_lora.down.weight"] = tensor(rank, fan_in, scale=0.2)
                ip_adapter[f"{index}.{proj}_lora.up.weight"] = tensor(fan_out, rank, scale=0.2)
        if attn.is_cross_attention:
            ip_adapter[f"{index}.to_k_ip.weight"] = tensor(inner_dim, c, scale=0.2)
            ip_adapter[f"{index}.to_v_ip.weight"] = tensor(inner_dim, c, scale=0.2)
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}
