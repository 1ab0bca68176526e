"""The U-Net's building blocks: double convolution, down step, up step with skip, head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DoubleConv", "Down", "Up", "Head", "Head3d", "conv_class", "make_norm"]


def conv_class(dims: int) -> type:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def make_norm(kind: str, channels: int, dims: int = 2) -> nn.Module:
    """Normalisation layer by name: ``batch``, ``group`` (8 groups or fewer) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"Unknown normalisation {kind!r}; use 'batch', 'group' or 'none'.")


class DoubleConv(nn.Sequential):
    """Two 3x3 (3D: 3x3x3) convolutions (same padding), each followed by normalisation and ReLU.

    ``(B, in_ch, [Z,] H, W) -> (B, out_ch, [Z,] H, W)``.
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch", dims: int = 2, z_kernel: int = 3):
        bias = norm == "none"
        conv = conv_class(dims)
        size, pad = (3, 1) if dims == 2 else ((z_kernel, 3, 3), (z_kernel // 2, 1, 1))
        super().__init__(
            conv(in_ch, out_ch, size, padding=pad, bias=bias),
            make_norm(norm, out_ch, dims),
            nn.ReLU(inplace=True),
            conv(out_ch, out_ch, size, padding=pad, bias=bias),
            make_norm(norm, out_ch, dims),
            nn.ReLU(inplace=True),
        )


def _kernel(dims: int, z_factor: int):
    return 2 if dims == 2 else (z_factor, 2, 2)


class Down(nn.Sequential):
    """2x2 max-pool then `DoubleConv`: ``(B, in_ch, H, W) -> (B, out_ch, H/2, W/2)``.

    3D: ``(z_factor, 2, 2)`` pooling, so a coarse Z can be left unpooled.
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch", dims: int = 2, z_factor: int = 2,
                 z_kernel: int = 3):
        pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(_kernel(dims, z_factor))
        super().__init__(pool, DoubleConv(in_ch, out_ch, norm, dims, z_kernel))


class Up(nn.Module):
    """Up-sample, concatenate the skip connection, then `DoubleConv`.

    ``x: (B, in_ch, h, w)``, ``skip: (B, in_ch // 2, H, W)`` with ``H >= 2h`` ->
    ``(B, out_ch, H, W)``. Odd skip sizes are met by zero-padding the up-sampled map.
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch", mode: str = "transpose", dims: int = 2,
                 z_factor: int = 2, z_kernel: int = 3):
        super().__init__()
        kernel = _kernel(dims, z_factor)
        if mode == "transpose":
            transpose = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
            self.up = transpose(in_ch, in_ch // 2, kernel_size=kernel, stride=kernel)
        elif mode == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=kernel, mode="bilinear" if dims == 2 else "trilinear", align_corners=False),
                conv_class(dims)(in_ch, in_ch // 2, kernel_size=1),
            )
        else:
            raise ValueError(f"Unknown up-sampling {mode!r}; use 'transpose' or 'bilinear'.")
        self.conv = DoubleConv(in_ch, out_ch, norm, dims, z_kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        gaps = [s - t for s, t in zip(skip.shape[2:], x.shape[2:])]
        if any(gaps):
            pad = []
            for gap in reversed(gaps):  # F.pad lists the last axis first
                pad += [gap // 2, gap - gap // 2]
            x = F.pad(x, pad)
        return self.conv(torch.cat([skip, x], dim=1))


class Head(nn.Conv2d):
    """1x1 convolution from features to class logits: ``(B, C, H, W) -> (B, K, H, W)``."""

    def __init__(self, in_ch: int, n_classes: int):
        super().__init__(in_ch, n_classes, kernel_size=1)


class Head3d(nn.Conv3d):
    """1x1x1 convolution from features to class logits: ``(B, C, Z, H, W) -> (B, K, Z, H, W)``."""

    def __init__(self, in_ch: int, n_classes: int):
        super().__init__(in_ch, n_classes, kernel_size=1)
