"""Public weights, full size: the SD-1.5 + AnimateDiff + IP-Adapter-FaceID converter's key mapping
(ipfvr_core.diffusion.convert) on the real files' names and shapes.

Synthetic FaceID state dicts with the real files' names and shapes on the ``meta`` device, mapped onto
SD-1.5's U-Net and the motion U-Net built from AnimateDiff v1-5-2's config.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel, UNetMotionModel

from faceid_factory import faceid_state, motion_adapter_config, sd15_unet_config
from ipfvr_core.diffusion.attention_processor import identity_processors, install_identity_processors
from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.diffusion.convert import (
    convert_faceid_lora,
    convert_identity_kv,
    convert_image_proj,
    faceid_processor_names,
)
from ipfvr_core.diffusion.identity_tokens import IdentityEncoder


@pytest.fixture(scope="module")
def sd15_meta() -> tuple[UNet2DConditionModel, UNetMotionModel]:
    from diffusers import MotionAdapter

    with torch.device("meta"):
        unet2d = UNet2DConditionModel(**sd15_unet_config(tiny=False))
        adapter = MotionAdapter(**motion_adapter_config(tiny=False))
        motion = UNetMotionModel.from_unet2d(unet2d, adapter, load_weights=False)
    return unet2d, motion


def test_sd15_processor_numbering_is_ip_adapters(sd15_meta: tuple[UNet2DConditionModel, UNetMotionModel]) -> None:
    names = faceid_processor_names(sd15_meta[0])
    assert len(names) == 32
    assert all(n.startswith("down_blocks.") for n in names[:12])
    assert all(n.startswith("up_blocks.") for n in names[12:30])
    assert all(n.startswith("mid_block.") for n in names[30:])
    assert all(n.endswith("attn1.processor") for n in names[0::2])
    assert all(n.endswith("attn2.processor") for n in names[1::2])


def test_full_size_faceid_maps_by_name_onto_the_motion_unet(
    sd15_meta: tuple[UNet2DConditionModel, UNetMotionModel],
) -> None:
    unet2d, motion = sd15_meta
    state = faceid_state(unet2d, rank=128, device="meta")
    assert len(state["ip_adapter"]) == 32 * 8 + 16 * 2  # LoRA q/k/v/out down+up everywhere, K/V on 16 cross

    kv = convert_identity_kv(state["ip_adapter"], unet2d)
    install_identity_processors(motion, num_tokens=4, scale=1.0)
    ours = identity_processors(motion)
    assert {k.rsplit(".", 2)[0] for k in kv} == set(ours)  # every spatial cross-attention, nothing else
    for name, processor in ours.items():
        assert tuple(kv[f"{name}.to_k_id.weight"].shape) == tuple(processor.to_k_id.weight.shape)
        assert tuple(kv[f"{name}.to_v_id.weight"].shape) == tuple(processor.to_v_id.weight.shape)

    lora, rank = convert_faceid_lora(state["ip_adapter"], unet2d)
    assert rank == 128 and len(lora) == 32 * 4 * 2
    modules = dict(motion.named_modules())
    for key, tensor in lora.items():
        module, _, kind = key.rpartition(".lora_")
        linear = modules[module]  # named on the motion U-Net too
        assert "motion_modules" not in module
        expected = (128, linear.in_features) if kind == "A.weight" else (linear.out_features, 128)
        assert tuple(tensor.shape) == expected, key
    # The trap: by position, the motion U-Net's processor list differs from IP-Adapter's numbering.
    by_position = list(motion.attn_processors)[: len(faceid_processor_names(unet2d))]
    assert by_position != faceid_processor_names(unet2d)


@pytest.mark.parametrize("plus", [False, True])
def test_full_size_image_proj_loads_strictly_into_our_encoder(
    sd15_meta: tuple[UNet2DConditionModel, UNetMotionModel],
    plus: bool,
) -> None:
    state = faceid_state(sd15_meta[0], rank=128, device="meta", plus_clip_dim=1280 if plus else None)
    converted, fields = convert_image_proj(state["image_proj"])
    assert fields["id_embedding_dim"] == 512 and fields["num_identity_tokens"] == 4
    feature_dim = fields.pop("perceiver_feature_dim", None)
    config = IPFVRConfig().replace(**fields)
    assert config.identity_encoder == ("mlp+perceiver" if plus else "mlp")
    if plus:
        assert (feature_dim, config.perceiver_depth, config.perceiver_heads, config.id_proj_hidden_dim) == (
            1280,
            4,
            12,
            1024,
        )
    with torch.device("meta"):
        encoder = IdentityEncoder.from_config(config, token_dim=768, feature_dim=feature_dim)
    encoder.load_state_dict(converted, strict=True, assign=True)  # every key, every shape
