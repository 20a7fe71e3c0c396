"""RRDBNet, the ESRGAN generator that Real-ESRGAN x4plus uses, in plain torch.

Residual-in-Residual Dense Blocks (Wang et al., ESRGAN 2018): a first 3x3 convolution, ``num_block``
RRDBs (each three residual dense blocks of five 3x3 convolutions, residuals scaled by 0.2), a body
convolution with a long skip, then two nearest-neighbour x2 upsamplings each followed by a 3x3
convolution, a high-resolution convolution and the output convolution. LeakyReLU slope 0.2 throughout.

Parameter names follow the Real-ESRGAN/BasicSR layout (``conv_first``, ``body.{i}.rdb{j}.conv{k}``,
``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so a BasicSR checkpoint would
load as is. Input and output are RGB in [0, 1]; the output is not clamped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2  # LeakyReLU negative slope used by every activated convolution
RESIDUAL_SCALE = 0.2  # scale applied to each dense block's and each RRDB's residual branch


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=True)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions; the fifth's output is a scaled residual."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(num_feat, num_grow_ch)
        self.conv2 = _conv3x3(num_feat + num_grow_ch, num_grow_ch)
        self.conv3 = _conv3x3(num_feat + 2 * num_grow_ch, num_grow_ch)
        self.conv4 = _conv3x3(num_feat + 3 * num_grow_ch, num_grow_ch)
        self.conv5 = _conv3x3(num_feat + 4 * num_grow_ch, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, num_feat, H, W) -> same
        x1 = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)  # (B, G, H, W)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), LEAKY_SLOPE)  # cat: (B, C+G, H, W)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), LEAKY_SLOPE)  # cat: (B, C+2G, H, W)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), LEAKY_SLOPE)  # cat: (B, C+3G, H, W)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))  # cat: (B, C+4G, H, W) -> (B, C, H, W)
        return x5 * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Three residual dense blocks in sequence, wrapped in a scaled residual."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """The x4 ESRGAN generator: (B, num_in_ch, H, W) in [0, 1] -> (B, num_out_ch, 4H, 4W)."""

    scale = 4  # fixed: two nearest-neighbour x2 upsamplings

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        self.num_block = num_block
        self.conv_first = _conv3x3(num_in_ch, num_feat)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = _conv3x3(num_feat, num_feat)
        self.conv_up1 = _conv3x3(num_feat, num_feat)
        self.conv_up2 = _conv3x3(num_feat, num_feat)
        self.conv_hr = _conv3x3(num_feat, num_feat)
        self.conv_last = _conv3x3(num_feat, num_out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)  # (B, F, H, W)
        feat = feat + self.conv_body(self.body(feat))  # (B, F, H, W)
        feat = F.interpolate(feat, scale_factor=2.0, mode="nearest")  # (B, F, 2H, 2W)
        feat = F.leaky_relu(self.conv_up1(feat), LEAKY_SLOPE)
        feat = F.interpolate(feat, scale_factor=2.0, mode="nearest")  # (B, F, 4H, 4W)
        feat = F.leaky_relu(self.conv_up2(feat), LEAKY_SLOPE)
        feat = F.leaky_relu(self.conv_hr(feat), LEAKY_SLOPE)
        return self.conv_last(feat)  # (B, num_out_ch, 4H, 4W)
