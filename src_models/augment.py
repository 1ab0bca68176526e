"""Augmentation of training batches as tensors, on the training device.

Flips and 90-degree rotations, the paper's elastic deformation (a coarse random
displacement grid, smoothly up-sampled; labels warped with nearest neighbour) and
intensity scale, shift and gamma. Randomness comes from an explicit `torch.Generator`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Augmenter"]


@dataclass(frozen=True)
class Augmenter:
    """Random transforms applied to a batch ``image (B, C, H, W)``, ``target (B, H, W)``,
    ``weight (B, H, W)`` (optional) together; or to 3D blocks ``(B, C, Z, H, W)``,
    ``(B, Z, H, W)``: a flip of Z and the same in-plane transforms for all planes of a block.

    Parameters
    ----------
    elastic : bool
        Apply elastic deformation.
    grid : int
        Points per side of the coarse displacement grid (the paper used 3).
    displacement : float
        Standard deviation of the displacements, in pixels (the paper used 10).
    intensity : bool
        Random contrast scale, brightness shift and gamma.
    """

    elastic: bool = True
    grid: int = 3
    displacement: float = 10.0
    intensity: bool = True

    def __call__(self, image, target, weight=None, *, generator: torch.Generator):
        if image.ndim == 5:
            return self._volume(image, target, weight, generator)
        image, target, weight = _dihedral(image, target, weight, generator)
        if self.elastic:
            image, target, weight = _elastic(image, target, weight, self.grid, self.displacement, generator)
        if self.intensity:
            image = _intensity(image, generator)
        return image, target, weight

    def _volume(self, image, target, weight, generator):
        """3D blocks ``image (B, C, Z, H, W)``, ``target (B, Z, H, W)``: a random flip of Z, then
        the same in-plane transforms for every plane of a block (Z folded into channels), so
        planes stay aligned as they are in the volume."""
        b, c, z, h, w = image.shape
        flip = (torch.rand(b, generator=generator, device=generator.device) < 0.5).tolist()
        image = torch.stack([v.flip(1) if f else v for v, f in zip(image, flip)])
        target = torch.stack([t.flip(0) if f else t for t, f in zip(target, flip)])
        if weight is not None:
            weight = torch.stack([t.flip(0) if f else t for t, f in zip(weight, flip)])
        image, target, weight = _dihedral(image.reshape(b, c * z, h, w), target, weight, generator)
        if self.elastic:
            image, target, weight = _elastic(image, target, weight, self.grid, self.displacement, generator)
        if self.intensity:
            image = _intensity(image, generator)
        return image.reshape(b, c, z, h, w), target, weight


def _rand(generator, *shape, device):
    return torch.rand(*shape, generator=generator, device=generator.device).to(device)


def _dihedral(image, target, weight, generator):
    """One of the 8 flips/rotations per sample (square patches keep their shape)."""
    codes = torch.randint(0, 8, (image.shape[0],), generator=generator, device=generator.device).tolist()
    out_i, out_t, out_w = [], [], []
    for b, code in enumerate(codes):
        i, t = image[b], target[b]
        w = weight[b] if weight is not None else None
        if code & 4:
            i, t = i.flip(-1), t.flip(-1)
            w = w.flip(-1) if w is not None else None
        k = code & 3
        if k:
            i, t = i.rot90(k, (-2, -1)), t.rot90(k, (-2, -1))
            w = w.rot90(k, (-2, -1)) if w is not None else None
        out_i.append(i)
        out_t.append(t)
        out_w.append(w)
    weight = torch.stack(out_w) if weight is not None else None
    return torch.stack(out_i), torch.stack(out_t), weight


def _elastic(image, target, weight, grid, displacement, generator):
    """Warp with a smooth random field: a ``grid x grid`` Gaussian displacement, bicubic up-sampled."""
    b, _, h, w = image.shape
    device = image.device
    coarse = torch.randn(b, 2, grid, grid, generator=generator, device=generator.device).to(device) * displacement
    flow = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    # pixel displacements -> normalised grid_sample coordinates
    flow = flow * torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=device).view(1, 2, 1, 1)
    ys = torch.linspace(-1, 1, h, device=device)
    xs = torch.linspace(-1, 1, w, device=device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    coords = base.unsqueeze(0) + flow.permute(0, 2, 3, 1)
    warped = F.grid_sample(image, coords, mode="bilinear", padding_mode="reflection", align_corners=True)
    # labels: shift by one so that "unpainted" (-1) survives nearest sampling as 0;
    # targets and weights of 3D blocks (B, Z, H, W) warp their Z planes as channels
    planes = target.ndim == 4
    lab = (target + 1).float()
    lab = F.grid_sample(lab if planes else lab.unsqueeze(1), coords, mode="nearest", padding_mode="reflection",
                        align_corners=True)
    target = (lab if planes else lab.squeeze(1)).round().long() - 1
    if weight is not None:
        warped_w = F.grid_sample(weight if planes else weight.unsqueeze(1), coords, mode="bilinear",
                                 padding_mode="reflection", align_corners=True)
        weight = warped_w if planes else warped_w.squeeze(1)
    return warped, target, weight


def _intensity(image, generator):
    """Contrast x U(0.75, 1.33), brightness + U(-0.15, 0.15), gamma U(0.7, 1.5) on [0, 1]-scaled values."""
    b = image.shape[0]
    device = image.device
    u = _rand(generator, b, 3, device=device)
    scale = (0.75 * (1.33 / 0.75) ** u[:, 0]).view(b, 1, 1, 1)
    shift = ((u[:, 1] - 0.5) * 0.3).view(b, 1, 1, 1)
    gamma = (0.7 * (1.5 / 0.7) ** u[:, 2]).view(b, 1, 1, 1)
    lo = image.amin(dim=(1, 2, 3), keepdim=True)
    hi = image.amax(dim=(1, 2, 3), keepdim=True)
    span = (hi - lo).clamp(min=1e-6)
    image = ((image - lo) / span).clamp(0, 1) ** gamma * span + lo
    return image * scale + shift
