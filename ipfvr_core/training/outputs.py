"""What a training run writes: the weights folder, accelerate checkpoints, and its logs (CSV, TensorBoard)."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from typing import Any

from ipfvr_core.diffusion.config import COMPONENT_FOLDER_FIELDS
from ipfvr_core.diffusion.lora import LORA_SUFFIX, save_identity_lora
from ipfvr_core.diffusion.pipeline_ipfvr import IPFVRPipeline
from ipfvr_core.diffusion.weights import RANDOM_WEIGHTS_MARKER, component_path, save_ipfvr_weights
from ipfvr_core.errors import ConfigError
from ipfvr_core.training.config import TrainConfig
from ipfvr_core.training.model import BACKBONE_LORA

LOG_FILE = "train_log.csv"
LOG_FIELDS = ("step", "epoch", "loss", "reward", "lr", "eval_loss", "eval_reward", "replicas_equal")
CHECKPOINTS = "checkpoints"


def save_weights(pipe: IPFVRPipeline, config: TrainConfig, weights: Path) -> None:
    """``ipfvr/`` from the trained modules; stock components stay where they are (absolute folders)."""
    source = Path(config.weights).resolve()
    folders = {
        name: str(component_path(source, getattr(pipe.ipfvr_config, name)).resolve())
        for name in COMPONENT_FOLDER_FIELDS
    }
    if config.train_unet:
        _save_unet2d(pipe, Path(folders["unet_folder"]), weights / "unet")
        folders["unet_folder"] = "unet"
    if config.train_motion_modules or config.train_unet:
        pipe.unet.save_motion_modules(str(weights / "motion_adapter"))
        folders["motion_adapter_folder"] = "motion_adapter"
    source_loras = component_path(source, pipe.ipfvr_config.lora_folder).resolve()
    base_loras = pipe.ipfvr_config.base_loras
    folders["lora_folder"] = str(source_loras)
    if config.backbone_lora:  # the trained backbone LoRA, and the other base LoRAs beside it, in weights/loras/
        save_identity_lora(pipe.unet, BACKBONE_LORA, weights / "loras" / f"{BACKBONE_LORA}{LORA_SUFFIX}")
        for name in pipe.ipfvr_config.base_loras:
            if name != BACKBONE_LORA:
                shutil.copyfile(source_loras / f"{name}{LORA_SUFFIX}", weights / "loras" / f"{name}{LORA_SUFFIX}")
        folders["lora_folder"] = "loras"
        base_loras = tuple(dict.fromkeys((*base_loras, BACKBONE_LORA)))
    if config.stage == "feedback":  # evaluation must judge with another network; the weights say which
        folders["trained_identity_network"] = config.identity_network
    pipe.ipfvr_config = pipe.ipfvr_config.replace(
        **folders, base_loras=base_loras, identity_scale=config.identity_scale
    )
    save_ipfvr_weights(weights, pipe)
    if (source / RANDOM_WEIGHTS_MARKER).is_file():
        shutil.copyfile(source / RANDOM_WEIGHTS_MARKER, weights / RANDOM_WEIGHTS_MARKER)


def _save_unet2d(pipe: IPFVRPipeline, source: Path, target: Path) -> None:
    """The trained U-Net's 2-D part in the stock layout (``unet/``): no motion modules, no identity
    K/V, and only the stock input channels of ``conv_in`` (the LQ ones go to ``ipfvr/``)."""
    from diffusers import UNet2DConditionModel

    unet2d = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(source)))
    state = {k: v for k, v in pipe.unet.state_dict().items() if "motion_modules" not in k and ".processor." not in k}
    state["conv_in.weight"] = state["conv_in.weight"][:, : pipe.latent_channels]  # (C0, C, k, k)
    missing, unexpected = unet2d.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"the trained U-Net does not map onto {source}: missing {missing[:3]}, unexpected {unexpected[:3]}",
            field="weights",
        )
    unet2d.save_pretrained(str(target))


def save_checkpoint(accelerator: Any, output: Path, step: int, keep: int) -> None:
    accelerator.save_state(str(output / CHECKPOINTS / f"step-{step:08d}"))
    if accelerator.is_main_process:
        for old in sorted((output / CHECKPOINTS).glob("step-*"))[:-keep]:
            shutil.rmtree(old)


def resume_folder(output: Path, resume: str) -> Path:
    if resume != "latest":
        folder = Path(resume)
    else:
        found = sorted((output / CHECKPOINTS).glob("step-*"))
        if not found:
            raise ConfigError(f"no checkpoint under {output / CHECKPOINTS}", field="resume")
        folder = found[-1]
    if not folder.is_dir():
        raise ConfigError(f"checkpoint {folder} does not exist", field="resume")
    return folder


def has_tensorboard() -> bool:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


class CsvLog:
    """The run's rows in ``train_log.csv``, flushed as they come."""

    def __init__(self, path: Path, *, append: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (append and path.exists())
        self.file = path.open("w" if fresh else "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_FIELDS)
        if fresh:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(
            {k: (f"{v:.8g}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}
        )
        self.file.flush()
