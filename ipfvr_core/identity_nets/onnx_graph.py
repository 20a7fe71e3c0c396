"""An ONNX graph run by PyTorch ops, so that it is differentiable (a user's ArcFace, for stage feedback).

insightface's recognisers (``w600k_r50.onnx``: IResNet-50) use a small set of operators; each is
mapped to its ``torch`` function and the graph is evaluated node by node in the file's
(topological) order. Initializers become frozen buffers. An operator outside the set, or an
attribute the mapping does not implement, raises :class:`ConfigError` naming it: nothing is
approximated. onnx2torch would do the same, but it needs torchvision, which does not import
beside the pinned CPU torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ipfvr_core.errors import ConfigError

Op = Callable[[list[torch.Tensor | None], dict[str, Any]], torch.Tensor]


def _required(x: list[torch.Tensor | None], index: int) -> torch.Tensor:
    """Input ``index`` of a node, which the operator needs (a graph may leave out only optional inputs)."""
    value = x[index]
    if value is None:
        raise ConfigError(f"a node leaves out its required input {index}", field="identity_network")
    return value


def _pads(attrs: dict[str, Any], dims: int) -> tuple[int, ...]:
    pads = list(attrs.get("pads", [0] * 2 * dims))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ConfigError(f"auto_pad={attrs['auto_pad']!r} is not supported", field="identity_network")
    if pads[:dims] != pads[dims:]:
        raise ConfigError(f"asymmetric pads {pads} are not supported", field="identity_network")
    return tuple(pads[:dims])


def _conv(x: list, a: dict) -> torch.Tensor:
    weight = x[1]
    assert weight is not None
    dims = weight.dim() - 2
    return F.conv2d(
        x[0],
        weight,
        x[2] if len(x) > 2 else None,
        stride=tuple(a.get("strides", [1] * dims)),
        padding=_pads(a, dims),
        dilation=tuple(a.get("dilations", [1] * dims)),
        groups=a.get("group", 1),
    )


def _batch_norm(x: list, a: dict) -> torch.Tensor:
    return F.batch_norm(x[0], x[3], x[4], x[1], x[2], training=False, eps=a.get("epsilon", 1e-5))


def _prelu(x: list, a: dict) -> torch.Tensor:
    data, slope = x[0], x[1]
    return torch.where(data >= 0, data, data * slope)  # slope broadcasts, e.g. (C, 1, 1)


def _flatten(x: list, a: dict) -> torch.Tensor:
    axis = a.get("axis", 1)
    return x[0].reshape(int(np.prod(x[0].shape[:axis])), -1)


def _gemm(x: list, a: dict) -> torch.Tensor:
    left, right = x[0], x[1]
    left = left.t() if a.get("transA", 0) else left
    right = right.t() if a.get("transB", 0) else right
    out = a.get("alpha", 1.0) * (left @ right)
    return out + a.get("beta", 1.0) * x[2] if len(x) > 2 and x[2] is not None else out


def _pool(kind: str) -> Op:
    def run(x: list, a: dict) -> torch.Tensor:
        kernel = tuple(a["kernel_shape"])
        stride = tuple(a.get("strides", [1] * len(kernel)))
        pool = F.max_pool2d if kind == "max" else F.avg_pool2d
        return pool(x[0], kernel, stride, _pads(a, len(kernel)))

    return run


OPS: dict[str, Op] = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "Relu": lambda x, a: F.relu(x[0]),
    "Add": lambda x, a: _required(x, 0) + _required(x, 1),
    "Sub": lambda x, a: _required(x, 0) - _required(x, 1),
    "Mul": lambda x, a: _required(x, 0) * _required(x, 1),
    "Div": lambda x, a: _required(x, 0) / _required(x, 1),
    "Flatten": _flatten,
    "Gemm": _gemm,
    "MatMul": lambda x, a: _required(x, 0) @ _required(x, 1),
    "Reshape": lambda x, a: _required(x, 0).reshape([int(d) for d in _required(x, 1).tolist()]),
    "GlobalAveragePool": lambda x, a: _required(x, 0).mean(dim=(2, 3), keepdim=True),
    "AveragePool": _pool("avg"),
    "MaxPool": _pool("max"),
    "Dropout": lambda x, a: x[0],
    "Identity": lambda x, a: x[0],
}


class OnnxGraph(nn.Module):
    """A one-input, one-output ONNX graph as a torch module (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        try:
            model = onnx.load(str(path))
        except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError) as exc:
            raise ConfigError(f"cannot read ONNX model {path}: {exc}", field="identity_network") from exc
        graph = model.graph
        unsupported = sorted({n.op_type for n in graph.node} - set(OPS))
        if unsupported:
            raise ConfigError(
                f"{Path(path).name} uses operators this runner lacks: {', '.join(unsupported)}",
                field="identity_network",
            )
        self.names: dict[str, str] = {}  # ONNX initializer name -> buffer name
        for index, tensor in enumerate(graph.initializer):
            self.names[tensor.name] = f"init_{index}"
            self.register_buffer(f"init_{index}", torch.from_numpy(numpy_helper.to_array(tensor).copy()))
        initializers = set(self.names)
        inputs = [i.name for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ConfigError("expected one input and one output", field="identity_network")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        self.nodes = [
            (
                n.op_type,
                list(n.input),
                list(n.output),
                {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute},
            )
            for n in graph.node
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for name, buffer in self.names.items():
            values[name] = getattr(self, buffer)
        for op, inputs, outputs, attrs in self.nodes:
            values[outputs[0]] = OPS[op]([values[i] if i else None for i in inputs], attrs)
        return values[self.output_name]


class ArcFaceNetwork(nn.Module):
    """An insightface recogniser (e.g. ``w600k_r50.onnx``) as a differentiable identity network:
    RGB in [0, 1], (N, 3, 112, 112) -> (N, 512) unit vectors. Normalisation as insightface's
    ``ArcFaceONNX``: (x * 255 - 127.5) / 127.5, unless the graph starts with its own Sub/Mul
    (older MXNet exports), which then get x * 255."""

    input_size = 112

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.graph = OnnxGraph(path)
        own = any(op in ("Sub", "Mul") for op, *_ in self.graph.nodes[:8])
        self.mean, self.std = (0.0, 1.0) if own else (127.5, 127.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.graph((images * 255.0 - self.mean) / self.std), dim=-1)
