"""The U-Net's building blocks: double convolution, down step, up step with skip, head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DoubleConv", "Down", "Up", "Head", "make_norm"]


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``batch``, ``group`` (8 groups or fewer) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"Unknown normalisation {kind!r}; use 'batch', 'group' or 'none'.")


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions (same padding), each followed by normalisation and ReLU.

    ``(B, in_ch, H, W) -> (B, out_ch, H, W)``.
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch"):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias),
            make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias),
            make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max-pool then `DoubleConv`: ``(B, in_ch, H, W) -> (B, out_ch, H/2, W/2)``."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch"):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch, norm))


class Up(nn.Module):
    """Up-sample, concatenate the skip connection, then `DoubleConv`.

    ``x: (B, in_ch, h, w)``, ``skip: (B, in_ch // 2, H, W)`` with ``H >= 2h`` ->
    ``(B, out_ch, H, W)``. Odd skip sizes are met by zero-padding the up-sampled map.
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch", mode: str = "transpose"):
        super().__init__()
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=2, stride=2)
        elif mode == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, in_ch // 2, kernel_size=1),
            )
        else:
            raise ValueError(f"Unknown up-sampling {mode!r}; use 'transpose' or 'bilinear'.")
        self.conv = DoubleConv(in_ch, out_ch, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        if dy or dx:
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class Head(nn.Conv2d):
    """1x1 convolution from features to class logits: ``(B, C, H, W) -> (B, K, H, W)``."""

    def __init__(self, in_ch: int, n_classes: int):
        super().__init__(in_ch, n_classes, kernel_size=1)
