"""The U-Net assembled from `blocks`, widths and depth taken from a `UNetConfig`."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .blocks import DoubleConv, Down, Head, Head3d, Up
from .config import UNetConfig

__all__ = ["UNet"]


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with same-padding, so the output has the input's size.

    ``(B, in_channels, H, W) -> (B, n_classes, H, W)`` logits. H and W should be multiples
    of ``2 ** depth`` for exact pooling (other sizes work; the up path pads to the skip).
    With ``config.dims == 3`` (a 3D U-Net, Çiçek et al. 2016): ``(B, C, Z, H, W)``, Z a
    multiple of ``config.z_multiple``.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        widths = [config.base_width * 2**level for level in range(config.depth + 1)]
        dims, z, k = config.dims, config.pool_factors, config.kernel_depths
        self.stem = DoubleConv(config.in_channels, widths[0], config.norm, dims, k[0])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], config.norm, dims, z[i], k[i + 1])
                                   for i in range(config.depth))
        dropout = nn.Dropout2d if dims == 2 else nn.Dropout3d
        self.dropout = dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], config.norm, config.up, dims, z[i], k[i]) for i in reversed(range(config.depth))
        )
        self.head = (Head if dims == 2 else Head3d)(widths[0], config.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last decoder features ``(B, base_width, H, W)``, before the head."""
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.dropout(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def receptive_radius(self, axis: str = "xy") -> int:
        """Pixels of context on each side that can influence one output pixel (an upper bound).

        ``axis="z"``: the same along Z of a 3D network, whose Z may be pooled less.
        """
        depth = self.config.depth
        factors = self.config.pool_factors if axis == "z" else (2,) * depth
        reach = [k // 2 for k in self.config.kernel_depths] if axis == "z" and self.config.dims == 3 \
            else [1] * (depth + 1)  # how far one convolution sees at each level
        radius, scale = 2 * reach[0], 1  # stem
        for level, f in enumerate(factors, start=1):
            scale *= f
            radius += scale // 2 + 2 * reach[level] * scale  # pool offset + two convs at this scale
        for level, f in zip(reversed(range(depth)), reversed(factors)):
            radius += scale  # transposed/bilinear up-sampling context
            scale //= f
            radius += 2 * reach[level] * scale
        return radius

    def for_inference(self) -> "UNet":
        """An eval-mode copy with each batch-norm folded into the convolution before it.

        Same outputs as ``self.eval()`` (up to float rounding) and about a quarter faster on
        the CPU, because the normalisation no longer costs a pass over every feature map.
        The copy shares nothing with ``self``; take a new one after the weights change.
        """
        net = copy.deepcopy(self).eval()
        for block in net.modules():
            if not isinstance(block, nn.Sequential):
                continue
            names = list(block._modules)
            for first, second in zip(names, names[1:]):
                conv, norm = block._modules[first], block._modules[second]
                if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(norm, (nn.BatchNorm2d, nn.BatchNorm3d)):
                    block._modules[first] = fuse_conv_bn_eval(conv, norm)
                    block._modules[second] = nn.Identity()
        return net.requires_grad_(False)
