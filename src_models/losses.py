"""Losses over painted pixels: class-balanced cross-entropy, soft Dice, skeleton recall, and the U-Net
border weights.

Pure functions first, then a thin `SegmentationLoss` module. Targets hold class indices
with ``-1`` for unpainted pixels, which contribute nothing to the loss nor to its
normalisation.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

__all__ = ["balanced_cross_entropy", "soft_dice_loss", "border_weight_map", "SegmentationLoss",
           "pairwise_smoothness_loss", "skeleton", "skeleton_recall_loss"]


def _class_weights(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse painted-pixel frequency per class, ``(K,)``; absent classes get 0."""
    painted = target[target >= 0]
    counts = torch.bincount(painted, minlength=n_classes).float()
    present = counts > 0
    weights = torch.zeros(n_classes, device=target.device)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights


def balanced_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, pixel_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy over painted pixels, each class weighted by its inverse painted count.

    Parameters
    ----------
    logits : Tensor ``(B, K, H, W)``
    target : Tensor ``(B, H, W)`` int64, ``-1`` = not painted
    pixel_weight : Tensor ``(B, H, W)``, optional
        Extra per-pixel factor (the U-Net border weights).

    Returns
    -------
    Tensor
        Scalar; ``sum(w * ce) / sum(w)`` over painted pixels, 0 (with a graph) when none is painted.
    """
    if logits.ndim not in (4, 5) or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"logits (B, K, [Z,] H, W) and target (B, [Z,] H, W) do not match: "
                         f"{logits.shape}, {target.shape}.")
    painted = target >= 0
    if not bool(painted.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), target.clamp(min=0), reduction="none")
    weight = _class_weights(target, logits.shape[1])[target.clamp(min=0)] * painted
    if pixel_weight is not None:
        weight = weight * pixel_weight
    return (ce * weight).sum() / weight.sum().clamp(min=1e-8)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the classes present, on painted pixels only.

    ``logits (B, K, [Z,] H, W)``, ``target (B, [Z,] H, W)`` with ``-1`` = not painted.
    """
    painted = (target >= 0).unsqueeze(1)
    probs = logits.float().softmax(1) * painted
    onehot = F.one_hot(target.clamp(min=0), logits.shape[1]).movedim(-1, 1).float() * painted
    axes = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(axes)
    denom = probs.sum(axes) + onehot.sum(axes)
    present = onehot.sum(axes) > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    dice = (2 * inter + eps) / (denom + eps)
    return 1.0 - dice[present].mean()


def border_weight_map(objects: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The U-Net paper's weight map that forces a gap between touching objects.

    ``w(x) = 1 + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))`` on pixels outside every
    object, where ``d1``/``d2`` are the distances to the nearest and second nearest object;
    1 inside objects (class balancing is done by the loss itself).

    Parameters
    ----------
    objects : ndarray ``(H, W)`` int
        Instance ids, 0 = no object.
    """
    objects = np.asarray(objects)
    weights = np.ones(objects.shape, dtype=np.float32)
    ids = np.unique(objects)
    ids = ids[ids > 0]
    if len(ids) < 2:
        return weights
    # distances to each object, keeping the two smallest per pixel (bounded memory)
    d1 = np.full(objects.shape, np.inf, dtype=np.float32)
    d2 = np.full(objects.shape, np.inf, dtype=np.float32)
    reach = 3 * sigma + 1
    boxes = ndimage.find_objects(objects.astype(np.int64))
    for obj_id in ids:
        box = boxes[obj_id - 1]
        if box is None:
            continue
        pad = int(np.ceil(2 * reach))
        sl = tuple(slice(max(0, b.start - pad), b.stop + pad) for b in box)
        dist = ndimage.distance_transform_edt(objects[sl] != obj_id).astype(np.float32)
        sub1, sub2 = d1[sl], d2[sl]
        closer = dist < sub1
        sub2[:] = np.where(closer, sub1, np.minimum(sub2, dist))
        sub1[:] = np.where(closer, dist, sub1)
    background = objects == 0
    gap = np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    weights[background] += w0 * np.nan_to_num(gap[background], nan=0.0, posinf=0.0)
    return weights


class SegmentationLoss(nn.Module):
    """Balanced cross-entropy over painted pixels plus ``dice_weight`` x soft Dice."""

    def __init__(self, dice_weight: float = 0.0):
        super().__init__()
        if dice_weight < 0:
            raise ValueError(f"dice_weight must not be negative, got {dice_weight}.")
        self.dice_weight = dice_weight

    def forward(self, logits, target, pixel_weight=None):
        loss = balanced_cross_entropy(logits, target, pixel_weight)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target)
        return loss


def pairwise_smoothness_loss(logits: torch.Tensor, image: torch.Tensor, sigma: float = 0.15,
                             dilations: tuple[int, ...] = (1, 2, 4)) -> torch.Tensor:
    """Neighbouring pixels of similar intensity should get the same class (a CRF-like prior).

    ``mean(w_ij * (1 - p_i . p_j))`` over horizontal and vertical neighbours at each
    dilation, with ``w_ij = exp(-|I_i - I_j|^2 / (2 sigma^2))`` from the (normalised) image.
    It needs no labels, so it spreads the strokes' information to unpainted pixels and
    stops at edges.

    Parameters
    ----------
    logits : Tensor ``(B, K, H, W)``
    image : Tensor ``(B, C, H, W)``
    """
    probs = logits.float().softmax(1)
    image = image.float()
    total = logits.new_zeros((), dtype=torch.float32)
    terms = 0
    for d in dilations:
        for dy, dx in ((0, d), (d, 0)):
            h, w = probs.shape[-2] - dy, probs.shape[-1] - dx
            if h <= 0 or w <= 0:
                continue
            diff = (image[..., :h, :w] - image[..., dy:, dx:]).pow(2).sum(1)
            affinity = torch.exp(-diff / (2 * sigma**2))
            agree = (probs[..., :h, :w] * probs[..., dy:, dx:]).sum(1)
            total = total + (affinity * (1 - agree)).mean()
            terms += 1
    return total / max(terms, 1)


def _max_pool(x: torch.Tensor, kernel) -> torch.Tensor:
    """Max filter of odd ``kernel`` (one size per spatial axis) with the same output shape;
    ``x (B, 1, [Z,] H, W)``."""
    pool = F.max_pool3d if x.ndim == 5 else F.max_pool2d
    return pool(x, kernel, stride=1, padding=tuple(k // 2 for k in kernel))


def _erode(x: torch.Tensor) -> torch.Tensor:
    """Erosion by the cross (min over each axis' 3-neighbourhood, then over the axes)."""
    dims = x.ndim - 2
    eroded = [-_max_pool(-x, tuple(3 if a == axis else 1 for a in range(dims))) for axis in range(dims)]
    return torch.stack(eroded).amin(0)


def _dilate(x: torch.Tensor) -> torch.Tensor:
    return _max_pool(x, (3,) * (x.ndim - 2))


def skeleton(mask: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """Morphological skeleton of binary masks ``(B, 1, [Z,] H, W)`` (float 0/1): the pixels that
    an opening removes after each of ``iterations`` erosions (the soft skeleton of clDice, on a
    binary mask). Structures up to about ``2 * iterations`` pixels wide keep a centre line."""
    img = mask.float()
    skel = F.relu(img - _dilate(_erode(img)))
    for _ in range(iterations):
        img = _erode(img)
        delta = F.relu(img - _dilate(_erode(img)))
        skel = skel + F.relu(delta - skel * delta)
    return skel.clamp(max=1.0)


def skeleton_recall_loss(logits: torch.Tensor, target: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """1 - mean over the painted classes of the share of their skeleton the network recalls.

    For every class ``k`` painted in the batch, the centre lines of its painted pixels, widened
    by one pixel and kept inside the paint (the tubed skeleton of skeleton recall), are scored by
    ``sum(p_k * S_k) / sum(S_k)``. It stresses the middle of every stroke, thin or wide, as much
    as a whole stroke's worth of pixels, so thin structures keep unbroken centre lines.

    ``logits (B, K, [Z,] H, W)``, ``target (B, [Z,] H, W)`` with ``-1`` = not painted.
    """
    probs = logits.float().softmax(1)
    recalls = []
    for k in range(logits.shape[1]):
        mask = (target == k).unsqueeze(1).float()
        if not bool(mask.any()):
            continue
        tube = _dilate(skeleton(mask, iterations)) * mask
        recalls.append((probs[:, k:k + 1] * tube).sum() / tube.sum().clamp(min=1.0))
    if not recalls:
        return logits.sum() * 0.0
    return 1.0 - torch.stack(recalls).mean()
