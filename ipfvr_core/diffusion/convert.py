"""Public checkpoints -> an IP-FVR weights folder: SD-1.5 + AnimateDiff + IP-Adapter-FaceID.

Anyone can download an SD-1.5 checkpoint in diffusers format, the AnimateDiff SD-1.5 motion
adapter and IP-Adapter-FaceID (SD-1.5). Together they hold what the identity path of the engine
needs; :func:`convert_faceid` writes them in the layout of :mod:`ipfvr_core.diffusion.weights`:

* ``image_proj`` (``MLPProjModel``: ``proj.0`` Linear D->H, GELU, ``proj.2`` Linear H->N*C, reshape
  to N tokens, ``norm`` LayerNorm(C)) is our :class:`IdentityProjection` (``projection.net.0/2``,
  ``projection.norm``). FaceID-Plus-v2's ``perceiver_resampler.*`` (a Perceiver over CLIP ViT-H
  penultimate states, used with ``shortcut=True``) is our :class:`PerceiverResampler`.
* ``ip_adapter`` keys are ``"{i}.<param>"`` where i counts ``UNet2DConditionModel.attn_processors``
  in registration order (SD-1.5: down blocks 0-11, up blocks 12-29, mid block 30-31; even i is a
  self-attention, odd i a cross-attention). The odd ``to_k_ip``/``to_v_ip`` are our identity K/V.
  The index is turned into the processor's *name* on the 2D U-Net built from the checkpoint's own
  config (on the ``meta`` device), and everything is stored by name: in the motion U-Net the motion
  modules' processors sit between the spatial ones, so positions would put weights on wrong layers.
* The rank-128 LoRA every FaceID processor carries (``{i}.to_q_lora.down/up`` ... ``to_out_lora``,
  no bias, scale 1) becomes ``loras/faceid.safetensors`` in the diffusers/PEFT format, listed in the
  config's ``base_loras`` so it is active under every identity's LoRA.
* ``conv_in_lq`` is zero: the model is zero-shot and sees the LQ video only through the SDEdit start
  (``init_strength < 1``).

The stock component folders stay where they are (absolute paths in ``ipfvr/config.json``).
Everything is checked against the U-Net's shapes before a file is written; a mismatch is a
``ConfigError`` naming the argument and the first bad key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import save_file

from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.diffusion.lora import LORA_SUFFIX
from ipfvr_core.diffusion.weights import CONV_IN_LQ_FILE, IDENTITY_KV_FILE, IDENTITY_PROJ_FILE, write_config
from ipfvr_core.errors import ConfigError

FACEID_LORA = "faceid"  # name of the FaceID LoRA under <weights>/loras/ and in base_loras
PERCEIVER_HEAD_DIM = 64  # IP-Adapter's FacePerceiverResampler head width (heads = to_q rows / 64)
LORA_PROJECTIONS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}  # FaceID -> module
SD15_FOLDERS = {  # diffusers-format SD-1.5 sub-folder -> (IPFVRConfig field, marker file)
    "unet": ("unet_folder", "config.json"),
    "vae": ("vae_folder", "config.json"),
    "text_encoder": ("text_encoder_folder", "config.json"),
    "tokenizer": ("tokenizer_folder", "tokenizer_config.json"),
    "scheduler": ("scheduler_folder", "scheduler_config.json"),
}
_INDEXED = re.compile(r"^(\d+)\.(.+)$")


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert_faceid` wrote (printed as JSON by ``ipfvr weights convert``)."""

    output: str  # the weights folder
    variant: str  # "faceid" (MLP tokens) or "faceid-plusv2" (MLP + Perceiver over CLIP ViT-H patches)
    identity_layers: int  # spatial cross-attention layers given identity K/V
    lora_layers: int  # attention projections adapted by the FaceID LoRA (0: none)
    lora_rank: int  # rank of the FaceID LoRA (0: none)
    id_embedding_dim: int  # embedding size the projection takes (512: ArcFace normed_embedding)
    num_identity_tokens: int  # tokens per embedding
    sources: dict[str, str]  # argument -> path (and the FaceID file's sha256)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bad(argument: str, message: str) -> ConfigError:
    return ConfigError(message, field=argument, code="weights_invalid")


# ---------------------------------------------------------------------- reading
def read_faceid(path: str | Path, argument: str = "ip_adapter_faceid") -> dict[str, dict[str, torch.Tensor]]:
    """``{"image_proj": {...}, "ip_adapter": {...}}`` from a FaceID ``.bin`` (torch pickle, read with
    ``weights_only``) or ``.safetensors`` (flat keys prefixed ``image_proj.``/``ip_adapter.``)."""
    source = Path(path)
    if not source.is_file():
        raise _bad(argument, f"file not found: {source}")
    try:
        if source.suffix == ".safetensors":
            parts: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
            with safe_open(str(source), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    head, _, rest = key.partition(".")
                    if head in parts and rest:
                        parts[head][rest] = f.get_tensor(key)
            state: Any = parts
        else:
            state = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise _bad(argument, f"cannot read {source}: {exc}") from exc
    if not isinstance(state, Mapping) or not isinstance(state.get("ip_adapter"), Mapping):
        raise _bad(argument, f"{source}: not an IP-Adapter checkpoint (no 'ip_adapter' weights)")
    return {"image_proj": dict(state.get("image_proj") or {}), "ip_adapter": dict(state["ip_adapter"])}


def unet2d_on_meta(unet_dir: Path) -> UNet2DConditionModel:
    """The SD-1.5 2D U-Net of ``unet_dir/config.json`` on the ``meta`` device (shapes and names, no memory)."""
    try:
        config = UNet2DConditionModel.load_config(str(unet_dir), local_files_only=True)
        with torch.device("meta"):
            return UNet2DConditionModel.from_config(config)
    except (OSError, ValueError, TypeError) as exc:
        raise _bad("sd15", f"cannot read the U-Net config in {unet_dir}: {exc}") from exc


def faceid_processor_names(unet: UNet2DConditionModel) -> list[str]:
    """Processor names in IP-Adapter's index order (``attn_processors`` of the 2D U-Net, registration order)."""
    return list(unet.attn_processors)


def _by_index(
    ip_adapter: Mapping[str, torch.Tensor], names: list[str], argument: str
) -> dict[int, dict[str, torch.Tensor]]:
    grouped: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in ip_adapter.items():
        match = _INDEXED.match(key)
        if match is None:
            raise _bad(argument, f"unexpected key {key!r} (expected '<processor index>.<parameter>')")
        index = int(match.group(1))
        if index >= len(names):
            raise _bad(
                argument,
                f"key {key!r}: the U-Net has {len(names)} attention processors (0-{len(names) - 1}); "
                "is this an SD-1.5 checkpoint?",
            )
        grouped.setdefault(index, {})[match.group(2)] = tensor
    return grouped


# ---------------------------------------------------------------------- converting
def convert_identity_kv(
    ip_adapter: Mapping[str, torch.Tensor], unet: UNet2DConditionModel, argument: str = "ip_adapter_faceid"
) -> dict[str, torch.Tensor]:
    """Odd-index ``to_k_ip``/``to_v_ip`` -> ``"<processor name>.to_k_id.weight"``/``to_v_id`` (checked shapes)."""
    names = faceid_processor_names(unet)
    modules = dict(unet.named_modules())
    out: dict[str, torch.Tensor] = {}
    for index, params in sorted(_by_index(ip_adapter, names, argument).items()):
        ip = {k: v for k, v in params.items() if k in ("to_k_ip.weight", "to_v_ip.weight")}
        if not ip:
            continue
        name = names[index]
        attn = modules[name.removesuffix(".processor")]
        if not attn.is_cross_attention:
            raise _bad(argument, f"processor {index} ({name}) is a self-attention but carries {sorted(ip)}")
        expected = (attn.to_k.out_features, attn.to_k.in_features)
        for ours, theirs in (("to_k_id.weight", "to_k_ip.weight"), ("to_v_id.weight", "to_v_ip.weight")):
            if theirs not in ip:
                raise _bad(argument, f"processor {index} ({name}) has no {theirs}")
            if tuple(ip[theirs].shape) != expected:
                raise _bad(
                    argument,
                    f"{index}.{theirs}: shape {tuple(ip[theirs].shape)}, the U-Net's layer {name} needs {expected}",
                )
            out[f"{name}.{ours}"] = ip[theirs]
    cross = [n for n in names if modules[n.removesuffix(".processor")].is_cross_attention]
    missing = sorted(set(cross) - {k.rsplit(".", 2)[0] for k in out})
    if missing:
        raise _bad(argument, f"no identity K/V for {len(missing)} cross-attention layers, e.g. {missing[0]}")
    return out


def convert_faceid_lora(
    ip_adapter: Mapping[str, torch.Tensor], unet: UNet2DConditionModel, argument: str = "ip_adapter_faceid"
) -> tuple[dict[str, torch.Tensor], int]:
    """``{i}.to_q_lora.down.weight`` ... -> PEFT keys ``"<layer>.to_q.lora_A.weight"`` by layer name; (state, rank).

    IP-Adapter's ``LoRALinearLayer`` has no alpha (scale 1): stored with ``lora_alpha = rank``.
    An empty state (rank 0) means the checkpoint has no LoRA.
    """
    names = faceid_processor_names(unet)
    modules = dict(unet.named_modules())
    state: dict[str, torch.Tensor] = {}
    ranks: set[int] = set()
    for index, params in sorted(_by_index(ip_adapter, names, argument).items()):
        layer = names[index].removesuffix(".processor")
        for theirs, ours in LORA_PROJECTIONS.items():
            down, up = params.get(f"{theirs}_lora.down.weight"), params.get(f"{theirs}_lora.up.weight")
            if down is None and up is None:
                continue
            if down is None or up is None:
                raise _bad(argument, f"processor {index}: {theirs}_lora has only one of down/up")
            linear = modules[f"{layer}.{ours}"]
            if (
                down.ndim != 2
                or up.ndim != 2
                or down.shape[0] != up.shape[1]
                or down.shape[1] != linear.in_features
                or up.shape[0] != linear.out_features
            ):
                raise _bad(
                    argument,
                    f"{index}.{theirs}_lora: down {tuple(down.shape)} / up {tuple(up.shape)} do not "
                    f"fit {layer}.{ours} ({linear.in_features} -> {linear.out_features})",
                )
            ranks.add(int(down.shape[0]))
            state[f"{layer}.{ours}.lora_A.weight"] = down
            state[f"{layer}.{ours}.lora_B.weight"] = up
    if len(ranks) > 1:
        raise _bad(argument, f"the LoRA mixes ranks {sorted(ranks)}")
    return state, (ranks.pop() if ranks else 0)


def read_lora_file(
    path: str | Path, unet: UNet2DConditionModel, argument: str = "faceid_lora"
) -> tuple[dict[str, torch.Tensor], int]:
    """A separate FaceID LoRA file: IP-Adapter's indexed keys, or any format diffusers reads (kohya's
    ``lora_unet_...`` of ``ip-adapter-faceid_sd15_lora.safetensors``, diffusers, PEFT).

    Network alphas are folded into ``lora_B`` so the result has scale 1 like the indexed format.
    """
    source = Path(path)
    if not source.is_file():
        raise _bad(argument, f"file not found: {source}")
    raw = read_faceid(source, argument) if _has_indexed_keys(source) else None
    if raw is not None:
        return convert_faceid_lora(raw["ip_adapter"], unet, argument)
    try:
        state, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(
            str(source.parent), weight_name=source.name, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _bad(argument, f"cannot read {source}: {exc}") from exc
    from diffusers.utils import convert_unet_state_dict_to_peft

    state = dict(state)
    for alpha_key, alpha in (alphas or {}).items():  # fold scale alpha / rank into the up weights
        base = alpha_key.removesuffix(".alpha")
        down = (
            base
            if base in state
            else next((k for k in state if k.startswith(f"{base}.") and ("down" in k or "lora_A" in k)), None)
        )
        up = None if down is None else "lora_B".join("up".join(down.rsplit("down", 1)).rsplit("lora_A", 1))
        if down is None or up not in state:
            raise _bad(argument, f"{source}: alpha {alpha_key!r} belongs to no LoRA pair")
        state[up] = state[up] * (float(alpha) / int(state[down].shape[0]))
    unet_state = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    if not unet_state:
        raise _bad(argument, f"{source}: no U-Net LoRA weights")
    peft_state = convert_unet_state_dict_to_peft(unet_state)
    modules = dict(unet.named_modules())
    out: dict[str, torch.Tensor] = {}
    ranks: set[int] = set()
    for key, tensor in peft_state.items():
        module, _, kind = key.rpartition(".lora_")
        if module not in modules or kind not in ("A.weight", "B.weight"):
            raise _bad(argument, f"{source}: key {key!r} names no attention projection of the U-Net")
        if kind == "B.weight":
            ranks.add(int(tensor.shape[1]))
        out[f"{module}.lora_{kind}"] = tensor
    if len(ranks) != 1:
        raise _bad(argument, f"{source}: expected one LoRA rank, found {sorted(ranks)}")
    return out, ranks.pop()


def _has_indexed_keys(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return True  # a torch pickle: IP-Adapter's own {"ip_adapter": {"0.to_q_lora...": ...}} layout
    with safe_open(str(path), framework="pt") as f:
        return any(k.startswith("ip_adapter.") for k in f.keys())  # noqa: SIM118


def convert_image_proj(
    image_proj: Mapping[str, torch.Tensor], argument: str = "ip_adapter_faceid"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``MLPProjModel`` / ``ProjPlusModel`` state -> our IdentityEncoder state and the config fields it implies."""
    if "proj.0.weight" not in image_proj or "proj.2.weight" not in image_proj or "norm.weight" not in image_proj:
        raise _bad(
            argument,
            "image_proj is not IP-Adapter-FaceID's (expected proj.0, proj.2 and norm); "
            "only the FaceID SD-1.5 variants are supported",
        )
    id_dim = int(image_proj["proj.0.weight"].shape[1])
    hidden = int(image_proj["proj.0.weight"].shape[0])
    token_dim = int(image_proj["norm.weight"].shape[0])
    num_tokens = int(image_proj["proj.2.weight"].shape[0]) // token_dim
    fields: dict[str, Any] = {
        "id_embedding_dim": id_dim,
        "id_proj_hidden_dim": hidden,
        "num_identity_tokens": num_tokens,
        "identity_encoder": "mlp",
    }
    state: dict[str, torch.Tensor] = {}
    layers: set[int] = set()
    for key, tensor in image_proj.items():
        if key.startswith(("proj.", "norm.")):
            ours = "projection." + key.replace("proj.", "net.", 1) if key.startswith("proj.") else f"projection.{key}"
        elif key.startswith("perceiver_resampler."):
            ours = _perceiver_key(key.removeprefix("perceiver_resampler."), argument)
            if ours.startswith("layers."):
                layers.add(int(ours.split(".")[1]))
            ours = f"resampler.{ours}"
        else:
            raise _bad(argument, f"image_proj: unexpected key {key!r}")
        state[ours] = tensor
    if layers:
        q_rows = int(image_proj["perceiver_resampler.layers.0.0.to_q.weight"].shape[0])
        fields |= {
            "identity_encoder": "mlp+perceiver",
            "perceiver_depth": len(layers),
            "perceiver_heads": q_rows // PERCEIVER_HEAD_DIM,
            "perceiver_head_dim": PERCEIVER_HEAD_DIM,
            "perceiver_feature_dim": int(image_proj["perceiver_resampler.proj_in.weight"].shape[1]),
        }
    return state, fields


def _perceiver_key(key: str, argument: str) -> str:
    """``FacePerceiverResampler`` key -> ours: ``layers.i.0.norm1/norm2`` -> ``norm_features/norm_latents``,
    ``layers.i.1.{0,1,3}`` (the feed-forward Sequential) -> ``ff.{0,1,3}``."""
    match = re.match(r"^layers\.(\d+)\.([01])\.(.+)$", key)
    if match is None:
        if key.split(".")[0] in ("proj_in", "proj_out", "norm_out"):
            return key
        raise _bad(argument, f"image_proj: unexpected Perceiver key {key!r}")
    layer, part, rest = match.groups()
    if part == "1":
        return f"layers.{layer}.ff.{rest}"
    module, _, param = rest.partition(".")
    module = {"norm1": "norm_features", "norm2": "norm_latents"}.get(module, module)
    return f"layers.{layer}.{module}.{param}"


# ---------------------------------------------------------------------- the whole folder
def _folder(path: Path, marker: str, argument: str) -> Path:
    if not (path / marker).is_file():
        raise _bad(argument, f"missing {path / marker}")
    return path.resolve()


def convert_faceid(
    *,
    sd15: str | Path,
    motion_adapter: str | Path,
    ip_adapter_faceid: str | Path,
    output: str | Path,
    faceid_lora: str | Path | None = None,
    image_encoder: str | Path | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> ConversionReport:
    """Write an IP-FVR weights folder at ``output`` from public checkpoints (see the module docstring).

    ``sd15`` is a diffusers-format SD-1.5 folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/),
    ``motion_adapter`` an AnimateDiff ``MotionAdapter`` folder, ``ip_adapter_faceid`` the FaceID
    checkpoint (``.bin`` or ``.safetensors``); ``faceid_lora`` replaces the LoRA the checkpoint carries;
    ``image_encoder`` (CLIP ViT-H vision tower) is required by FaceID-Plus-v2. ``config_overrides``
    sets other :class:`IPFVRConfig` fields (``init_strength``, ``identity_scale``, ...).
    """
    sd15_dir, out = Path(sd15), Path(output)
    folders = {field: str(_folder(sd15_dir / sub, marker, "sd15")) for sub, (field, marker) in SD15_FOLDERS.items()}
    adapter_dir = _folder(Path(motion_adapter), "config.json", "motion_adapter")
    unet = unet2d_on_meta(Path(folders["unet_folder"]))
    adapter_channels = json.loads((adapter_dir / "config.json").read_text(encoding="utf-8")).get("block_out_channels")
    if adapter_channels is not None and tuple(adapter_channels) != tuple(unet.config.block_out_channels):
        raise _bad(
            "motion_adapter",
            f"block_out_channels {tuple(adapter_channels)} do not match the SD-1.5 U-Net's "
            f"{tuple(unet.config.block_out_channels)}",
        )

    faceid = read_faceid(ip_adapter_faceid)
    proj_state, fields = convert_image_proj(faceid["image_proj"])
    token_dim = int(faceid["image_proj"]["norm.weight"].shape[0])
    if token_dim != unet.config.cross_attention_dim:
        raise _bad(
            "ip_adapter_faceid",
            f"token width {token_dim} != the U-Net's cross-attention "
            f"{unet.config.cross_attention_dim}: not a checkpoint for this SD model",
        )
    kv_state = convert_identity_kv(faceid["ip_adapter"], unet)
    if faceid_lora is not None:
        lora_state, rank = read_lora_file(faceid_lora, unet)
    else:
        lora_state, rank = convert_faceid_lora(faceid["ip_adapter"], unet)

    feature_dim = fields.pop("perceiver_feature_dim", None)
    if feature_dim is not None:
        if image_encoder is None:
            raise _bad("image_encoder", "FaceID-Plus-v2 needs the CLIP ViT-H vision tower (--image-encoder DIR)")
        encoder_dir = _folder(Path(image_encoder), "config.json", "image_encoder")
        hidden = json.loads((encoder_dir / "config.json").read_text(encoding="utf-8")).get("hidden_size")
        if hidden != feature_dim:
            raise _bad("image_encoder", f"hidden size {hidden} != the Perceiver's input {feature_dim}")
        folders["image_encoder_folder"] = str(encoder_dir)
    elif image_encoder is not None:
        raise _bad("image_encoder", "this FaceID checkpoint has no Perceiver: it takes no image encoder")

    values: dict[str, Any] = {
        **folders,
        "motion_adapter_folder": str(adapter_dir),
        **fields,
        "id_encoder": "arcface",
        "base_loras": [FACEID_LORA] if lora_state else [],
        "init_strength": 0.6,  # zero-shot: the LQ video enters only through the SDEdit start
    }
    values |= dict(config_overrides or {})
    try:
        config = IPFVRConfig().replace(**values)
    except ConfigError as exc:
        raise ConfigError(exc.message, field=exc.field, code="config_invalid") from exc

    (out / "ipfvr").mkdir(parents=True, exist_ok=True)
    conv = unet.conv_in
    lq = torch.zeros(conv.out_channels, int(unet.config.in_channels), *conv.kernel_size)  # (C0, C_lq, k, k)
    save_file({"weight": lq}, str(out / CONV_IN_LQ_FILE))
    save_file({k: v.contiguous() for k, v in proj_state.items()}, str(out / IDENTITY_PROJ_FILE))
    save_file({k: v.contiguous() for k, v in kv_state.items()}, str(out / IDENTITY_KV_FILE))
    lora_layers = 0
    if lora_state:
        modules = sorted({k.rsplit(".lora_", 1)[0] for k in lora_state})
        lora_layers = len(modules)
        lora_dir = out / config.lora_folder
        lora_dir.mkdir(parents=True, exist_ok=True)
        metadata = LoraConfig(r=rank, lora_alpha=rank, target_modules=modules).to_dict()
        StableDiffusionLoraLoaderMixin.save_lora_weights(
            save_directory=str(lora_dir),
            unet_lora_layers={k: v.contiguous() for k, v in lora_state.items()},
            weight_name=f"{FACEID_LORA}{LORA_SUFFIX}",
            unet_lora_adapter_metadata=metadata,
        )
    write_config(out, config)
    with Path(ip_adapter_faceid).open("rb") as f:
        faceid_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    sources = {
        "sd15": str(sd15_dir.resolve()),
        "motion_adapter": str(adapter_dir),
        "ip_adapter_faceid": str(Path(ip_adapter_faceid).resolve()),
        "ip_adapter_faceid_sha256": faceid_sha256,
    }
    if faceid_lora is not None:
        sources["faceid_lora"] = str(Path(faceid_lora).resolve())
    if feature_dim is not None:
        sources["image_encoder"] = folders["image_encoder_folder"]
    report = ConversionReport(
        output=str(out.resolve()),
        variant="faceid-plusv2" if feature_dim is not None else "faceid",
        identity_layers=len(kv_state) // 2,
        lora_layers=lora_layers,
        lora_rank=rank,
        id_embedding_dim=config.id_embedding_dim,
        num_identity_tokens=config.num_identity_tokens,
        sources=sources,
    )
    (out / "ipfvr" / "converted_from.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report
