"""Test doubles for training (tests only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyIdentityNetworkDouble(nn.Module):
    """A seeded two-layer conv net standing in for FaceNet: (N, 3, 32, 32) in [0, 1] -> (N, 16) unit vectors."""

    input_size = 32

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(images * 2 - 1))  # (N, 8, 16, 16)
        x = self.conv2(x).mean(dim=(2, 3))  # (N, 16)
        return F.normalize(x, dim=1)


def tiny_identity_network_double() -> TinyIdentityNetworkDouble:
    return TinyIdentityNetworkDouble()
