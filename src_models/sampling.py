"""Training patches drawn where the paint is.

Every patch is centred (with a random offset) on a painted pixel of a class chosen
uniformly among the painted classes, so a few strokes on a huge image are seen at
every step and rare classes are not drowned by common ones.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from .errors import InputError

__all__ = ["PatchSampler", "NothingPainted"]


class NothingPainted(InputError):
    """Every painted pixel was erased while training ran."""


class PatchSampler:
    """Holds the painted slices (or volumes) on the training device and draws patch batches.

    Parameters
    ----------
    n_classes : int
        Number of network classes (targets hold ``0..n_classes-1`` or ``-1``).
    patch_size : int or tuple of int
        Side of the square patches, or the patch shape: ``(P, P)``, or ``(Pz, P, P)`` for
        3D blocks of volumes.
    device : torch.device
        Where slices and patches live.
    rng : numpy.random.Generator
        Source of the patch positions.
    """

    def __init__(self, n_classes: int, patch_size, device: torch.device, rng: np.random.Generator):
        self.n_classes = n_classes
        self.patch_shape = (int(patch_size),) * 2 if np.isscalar(patch_size) else tuple(int(p) for p in patch_size)
        self.patch_size = self.patch_shape[-1]
        self.device = device
        self.rng = rng
        self._slices: dict = {}
        self._lock = threading.Lock()

    def set_slice(self, key, image: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                  centres: np.ndarray | None = None, priority: np.ndarray | None = None) -> None:
        """Add or replace one painted slice (or volume).

        ``image (C, H, W)`` float32 normalised, ``target (H, W)`` int64 with -1 = not painted,
        ``weight (H, W)`` optional per-pixel loss factor, ``centres (H, W)`` bool: where patches
        may be centred (default: every labelled pixel), ``priority (H, W)`` bool: centres that
        `draw` favours when asked to (the painted pixels a previous model got wrong). For 3D
        patches: ``(C, Z, H, W)`` and ``(Z, H, W)``. A slice without paint is dropped.
        """
        if target.ndim != len(self.patch_shape):
            raise ValueError(f"Patches of shape {self.patch_shape} need {len(self.patch_shape)}D targets, "
                             f"got shape {target.shape}.")
        pads = [(p, p) for p in self.patch_shape]
        centres = target >= 0 if centres is None else centres
        if not centres.any():
            self.remove_slice(key)
            return
        img = np.pad(image, [(0, 0), *pads], mode="symmetric")
        tgt = np.pad(target, pads, mode="constant", constant_values=-1)
        entry = {
            "image": torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).to(self.device),
            "target": torch.from_numpy(np.ascontiguousarray(tgt, dtype=np.int64)).to(self.device),
            "weight": None if weight is None else torch.from_numpy(
                np.pad(weight.astype(np.float32), pads, mode="edge")).to(self.device),
            # per class: flat indices of the pixels patches may be centred on (computed once)
            "centres": [np.flatnonzero(centres & (target == k)).astype(np.int64) for k in range(self.n_classes)],
            "priority": [np.flatnonzero(priority & centres & (target == k)).astype(np.int64)
                         for k in range(self.n_classes)] if priority is not None else None,
            "shape": target.shape,
        }
        with self._lock:
            self._slices[key] = entry

    def remove_slice(self, key) -> None:
        with self._lock:
            self._slices.pop(key, None)

    def count(self, k: int) -> int:
        """Painted pixels of class ``k`` that patches may be centred on, over all slices."""
        with self._lock:
            return sum(len(e["centres"][k]) for e in self._slices.values())

    @property
    def painted_classes(self) -> list[int]:
        """Class indices with at least one painted pixel."""
        return [k for k in range(self.n_classes) if any(len(e["centres"][k]) for e in self._slices.values())]

    def draw(self, batch_size: int, rng: np.random.Generator | None = None, priority_share: float = 0.0):
        """Return ``image (B, C, *patch)``, ``target (B, *patch)``, ``weight (B, *patch)`` or None;
        positions from ``rng`` (default: the sampler's own). About ``priority_share`` of the patches
        are centred on priority pixels (`set_slice`) while there are any."""
        shape, rng = self.patch_shape, rng if rng is not None else self.rng
        with self._lock:
            classes = self.painted_classes
            if not classes:
                raise NothingPainted("No painted pixel left to train on: paint strokes again.")
            images, targets, weights = [], [], []
            entries = list(self._slices.values())
            for _ in range(batch_size):
                pool, choices = "centres", classes
                if priority_share and rng.random() < priority_share:
                    urgent = [k for k in classes if any(e["priority"] is not None and len(e["priority"][k])
                                                        for e in entries)]
                    if urgent:
                        pool, choices = "priority", urgent
                k = choices[rng.integers(len(choices))]
                counts = np.array([len(e[pool][k]) if e[pool] is not None else 0 for e in entries], dtype=np.float64)
                entry = entries[rng.choice(len(entries), p=counts / counts.sum())]
                flat = entry[pool][k][rng.integers(len(entry[pool][k]))]
                position = np.unravel_index(int(flat), entry["shape"])
                # the painted pixel lands anywhere inside the patch; +p undoes the padding
                starts = [int(c) + p - int(rng.integers(p)) for c, p in zip(position, shape)]
                window = tuple(slice(start, start + p) for start, p in zip(starts, shape))
                images.append(entry["image"][(slice(None), *window)])
                targets.append(entry["target"][window])
                if entry["weight"] is not None:
                    weights.append(entry["weight"][window])
            weight = torch.stack(weights) if len(weights) == batch_size else None
            return torch.stack(images), torch.stack(targets), weight
