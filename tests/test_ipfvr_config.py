"""IPFVRConfig validation and weights-folder errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.diffusion.random_checkpoint import write_tiny_checkpoint
from ipfvr_core.diffusion.weights import (
    CONFIG_FILE,
    IDENTITY_KV_FILE,
    load_pipeline,
    read_config,
    write_config,
)
from ipfvr_core.errors import ConfigError


def test_defaults_are_valid_and_follow_the_paper() -> None:
    cfg = IPFVRConfig().validate()
    assert (cfg.clip_length, cfg.overlap) == (24, 8)
    assert cfg.id_metric == "cosine"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("clip_length", 0),
        ("overlap", 24),
        ("overlap", -1),
        ("blend_beta", -0.1),
        ("blend_beta", float("nan")),
        ("blend_index_offset", 2),
        ("sampler", "heun"),
        ("num_inference_steps", 0),
        ("quality_guidance_weight", -1.0),
        ("identity_scale", float("inf")),
        ("num_identity_tokens", 0),
        ("id_encoder", "facenet"),
        ("identity_encoder", "resampler"),
        ("reference_embedding_combine", "max"),
        ("lora_rank", 0),
        ("lora_target_modules", ()),
        ("prompt_template", "no placeholder"),
        ("user_prompt_mode", "append"),
        ("resolution", 100),
        ("init_strength", 0.0),
        ("init_strength", 1.5),
        ("vae_slice_frames", -1),
        ("dtype", "float64"),
        ("compile", "yes"),
        ("unet_folder", ""),
    ],
)
def test_invalid_field_is_named(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        IPFVRConfig(**{field: value}).validate()
    assert err.value.field == field
    assert err.value.code == "config_invalid"


def test_from_dict_replace_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        IPFVRConfig.from_dict({"clip_lenght": 16})
    assert err.value.field == "clip_lenght"
    with pytest.raises(ConfigError) as err:
        IPFVRConfig().replace(overlap=30)
    assert err.value.field == "overlap"
    cfg = IPFVRConfig().replace(blend_beta=math.inf, lora_target_modules=("to_q", "to_v"))
    write_config(tmp_path, cfg)
    assert read_config(tmp_path) == cfg


def test_bad_config_file_is_weights_invalid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_config(tmp_path)
    assert (err.value.code, err.value.field) == ("weights_invalid", "weights")
    assert CONFIG_FILE in err.value.message
    (tmp_path / "ipfvr").mkdir()
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError) as err:
        read_config(tmp_path)
    assert err.value.code == "weights_invalid"
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"overlap": 99}))
    with pytest.raises(ConfigError) as err:
        read_config(tmp_path)
    assert err.value.code == "weights_invalid" and "overlap" in err.value.message


def test_missing_weight_files_are_named(tmp_path: Path) -> None:
    write_tiny_checkpoint(tmp_path, seed=0)
    (tmp_path / IDENTITY_KV_FILE).unlink()
    with pytest.raises(ConfigError) as err:
        load_pipeline(tmp_path)
    assert (err.value.code, err.value.field) == ("weights_invalid", "weights")
    assert "identity_kv.safetensors" in err.value.message
    for marker in ("motion_adapter/config.json", "tokenizer/tokenizer_config.json"):
        target = tmp_path / marker
        target.rename(target.with_suffix(".bak"))
        with pytest.raises(ConfigError) as err:
            load_pipeline(tmp_path)
        assert err.value.code == "weights_invalid"
    with pytest.raises(ConfigError) as err:
        load_pipeline(tmp_path / "nowhere")
    assert err.value.code == "weights_invalid"


def test_override_errors_name_the_field(tmp_path: Path) -> None:
    write_tiny_checkpoint(tmp_path, seed=0)
    with pytest.raises(ConfigError) as err:
        load_pipeline(tmp_path, overrides={"overlap": 40})
    assert (err.value.code, err.value.field) == ("config_invalid", "overlap")
    with pytest.raises(ConfigError) as err:
        load_pipeline(tmp_path, overrides={"clip_length": 40, "overlap": 8})
    assert err.value.field == "clip_length"  # the motion adapter holds at most 32 frames
