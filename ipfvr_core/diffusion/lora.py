"""Per-identity LoRA psi_id on the U-Net's attention projections (PEFT, diffusers file format).

An adapter of rank r adapts ``to_q``/``to_k``/``to_v``/``to_out.0`` of the spatial attention layers
(and, with ``lora_on_motion_modules``, of the motion modules). Files are the standard diffusers
Stable Diffusion LoRA safetensors: PEFT key names under the ``unet.`` prefix with the adapter's
LoraConfig in the ``lora_adapter_metadata`` header, as written by
``StableDiffusionLoraLoaderMixin.save_lora_weights`` (so ``StableDiffusionPipeline.load_lora_weights``
reads them, and we read theirs). Several adapters load into the same U-Net object and are switched
by name; none of this reloads the backbone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from torch import nn

from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.errors import ConfigError

LORA_SUFFIX = ".safetensors"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_lora_name(name: str) -> str:
    """Adapter names are file stems: letters, digits, '_', '.', '-' (at most 64)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(LORA_SUFFIX):
        raise ConfigError(f"invalid LoRA name {name!r} (letters, digits, '_', '.', '-'; at most 64)", field="lora")
    return name


def target_module_pattern(config: IPFVRConfig) -> str:
    """PEFT ``target_modules`` regex (full match on module names) for ``config``."""
    names = "|".join(re.escape(m) for m in config.lora_target_modules)
    prefix = "" if config.lora_on_motion_modules else r"(?!.*motion_modules)"
    return rf"^{prefix}.*\.({names})$"


def new_lora_config(config: IPFVRConfig, *, init_random: bool = False) -> LoraConfig:
    """LoraConfig of a fresh psi_id; ``init_random`` gives a non-zero delta (tests, smoke checks)."""
    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        target_modules=target_module_pattern(config),
        init_lora_weights=not init_random,
    )


def loaded_loras(unet: nn.Module) -> list[str]:
    """Names of the adapters loaded into ``unet``."""
    return list(getattr(unet, "peft_config", {}) or {})


def add_identity_lora(unet: nn.Module, name: str, config: IPFVRConfig, *, init_random: bool = False) -> None:
    """Add a new trainable adapter ``name`` (zero delta unless ``init_random``)."""
    check_lora_name(name)
    if name in loaded_loras(unet):
        raise ConfigError(f"LoRA {name!r} is already loaded", field="lora")
    unet.add_adapter(new_lora_config(config, init_random=init_random), adapter_name=name)


def save_identity_lora(unet: nn.Module, name: str, path: str | Path) -> Path:
    """Write adapter ``name`` to ``path`` (a ``.safetensors`` file) in the diffusers LoRA format."""
    if name not in loaded_loras(unet):
        raise ConfigError(f"LoRA {name!r} is not loaded", field="lora")
    target = Path(path)
    if target.suffix != LORA_SUFFIX:
        raise ConfigError(f"LoRA files end in {LORA_SUFFIX}: {target}", field="lora")
    target.parent.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(unet, adapter_name=name)
    metadata = unet.peft_config[name].to_dict()
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        save_directory=str(target.parent),
        unet_lora_layers=state,
        weight_name=target.name,
        unet_lora_adapter_metadata=metadata,
    )
    return target


def load_identity_lora(unet: nn.Module, name: str, path: str | Path) -> None:
    """Load the adapter file ``path`` into ``unet`` under ``name``.

    PEFT may activate the new adapter; callers re-apply their choice with :func:`activate_identity_lora`.
    """
    check_lora_name(name)
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"LoRA file not found: {source}", field="lora", code="weights_invalid")
    if name in loaded_loras(unet):
        raise ConfigError(f"LoRA {name!r} is already loaded", field="lora")
    try:
        state, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
            str(source.parent), weight_name=source.name, local_files_only=True, return_lora_metadata=True
        )
        if not any(key.startswith("unet.") for key in state):
            raise ValueError("no 'unet.' LoRA keys in the file")
        unet.load_lora_adapter(state, prefix="unet", network_alphas=alphas, adapter_name=name, metadata=metadata)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ConfigError(f"cannot load LoRA {source}: {exc}", field="lora", code="weights_invalid") from exc


def activate_identity_lora(unet: nn.Module, name: str | None, *, always: Sequence[str] = ()) -> None:
    """Make the ``always`` adapters (the weights' base LoRAs) and ``name`` the active ones; with neither,
    LoRA is off (the plain backbone)."""
    wanted = [*always, *([name] if name is not None and name not in always else [])]
    if not wanted:
        if loaded_loras(unet):
            unet.disable_lora()
        return
    missing = [n for n in wanted if n not in loaded_loras(unet)]
    if missing:
        loaded = ", ".join(loaded_loras(unet)) or "none"
        raise ConfigError(f"LoRA {missing[0]!r} is not loaded (loaded: {loaded})", field="lora")
    unet.enable_lora()
    unet.set_adapters(wanted)


def delete_identity_lora(unet: nn.Module, name: str) -> None:
    """Remove adapter ``name`` from ``unet``."""
    if name not in loaded_loras(unet):
        raise ConfigError(f"LoRA {name!r} is not loaded", field="lora")
    unet.delete_adapters([name])
