"""Random stock components in two shapes: ``tiny`` (tests, smoke runs) and ``sd15`` (GPU benchmarks).

``sd15`` has the real SD-1.5 + AnimateDiff shapes (U-Net blocks 320/640/1280/1280, cross-attention
768, motion modules with 8 heads over at most 32 frames, the SD VAE, a CLIP ViT-L/14-sized text
tower); ``tiny`` keeps the same structure (motion U-Net, scale-8 VAE, CLIP text model) at a size that
runs on a busy CPU. Weights are random and seeded: these are not models of anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

BackboneSize = Literal["tiny", "sd15"]


@dataclass
class BackboneComponents:
    """The stock parts of an IP-FVR weights folder, in memory."""

    unet2d: UNet2DConditionModel
    motion_adapter: MotionAdapter
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler
    image_encoder: CLIPVisionModelWithProjection | None


def character_vocab() -> dict[str, int]:
    """A character-level CLIP BPE vocabulary: specials, then the 256 byte-level symbols with and without '</w>'."""
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for suffix in ("", "</w>"):
        for symbol in alphabet:
            vocab.setdefault(symbol + suffix, len(vocab))
    return vocab


def character_tokenizer(folder: Path) -> CLIPTokenizer:
    """Write vocab.json/merges.txt (no merges) to ``folder`` and build a CLIPTokenizer over them.

    transformers 5 has no ``bytes_to_unicode`` helper any more; the byte-level alphabet comes from
    the tokenizers library instead.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(character_vocab()), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)


def sd15_scheduler() -> DDIMScheduler:
    """DDIM with the SD-1.5 training betas."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def random_backbone(
    size: BackboneSize,
    *,
    resolution: int,
    tokenizer_dir: Path,
    seed: int = 0,
    with_image_encoder: bool = False,
    device: str | torch.device = "cpu",
) -> BackboneComponents:
    """Seeded random stock components of ``size`` on ``device``; the tokenizer files go to ``tokenizer_dir``."""
    tokenizer = character_tokenizer(tokenizer_dir)
    tiny = size == "tiny"
    cuda_devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        with torch.device(device):
            unet2d = UNet2DConditionModel(
                sample_size=resolution // 8,
                in_channels=4,
                out_channels=4,
                block_out_channels=(32, 64) if tiny else (320, 640, 1280, 1280),
                layers_per_block=1 if tiny else 2,
                down_block_types=(
                    ("CrossAttnDownBlock2D", "DownBlock2D")
                    if tiny
                    else ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
                ),
                up_block_types=(
                    ("UpBlock2D", "CrossAttnUpBlock2D")
                    if tiny
                    else ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
                ),
                cross_attention_dim=32 if tiny else 768,
                attention_head_dim=8,
                norm_num_groups=8 if tiny else 32,
            )
            motion_adapter = MotionAdapter(
                block_out_channels=(32, 64) if tiny else (320, 640, 1280, 1280),
                motion_layers_per_block=1 if tiny else 2,
                motion_num_attention_heads=2 if tiny else 8,
                motion_norm_num_groups=8 if tiny else 32,
                motion_max_seq_length=32,
                use_motion_mid_block=not tiny,
            )
            vae = AutoencoderKL(
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(8, 8, 16, 16) if tiny else (128, 256, 512, 512),
                layers_per_block=1 if tiny else 2,
                latent_channels=4,
                norm_num_groups=4 if tiny else 32,
                sample_size=resolution,
            )
            text_encoder = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=len(tokenizer) if tiny else 49408,
                    hidden_size=32 if tiny else 768,
                    intermediate_size=64 if tiny else 3072,
                    num_hidden_layers=2 if tiny else 12,
                    num_attention_heads=4 if tiny else 12,
                    max_position_embeddings=77,
                    bos_token_id=0,
                    eos_token_id=1,
                    pad_token_id=1,
                )
            )
            image_encoder = None
            if with_image_encoder:
                image_encoder = CLIPVisionModelWithProjection(
                    CLIPVisionConfig(
                        hidden_size=32 if tiny else 1280,
                        intermediate_size=64 if tiny else 5120,
                        num_hidden_layers=2 if tiny else 32,
                        num_attention_heads=4 if tiny else 16,
                        image_size=32 if tiny else 224,
                        patch_size=8 if tiny else 14,
                        projection_dim=32 if tiny else 1024,
                    )
                )
    for module in (unet2d, motion_adapter, vae, text_encoder, image_encoder):
        if module is not None:
            module.eval()
    return BackboneComponents(
        unet2d=unet2d,
        motion_adapter=motion_adapter,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=sd15_scheduler(),
        image_encoder=image_encoder,
    )
