"""The painted data a training learns from: the images, the labels painted on them, and the
strokes that arrive while it runs.

`PaintedImages` checks and prepares what the user gave (before a model exists);
`TrainingData` keeps a `PatchSampler` in step with it, re-reading only the slices whose
paint changed.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import numpy as np
from scipy import ndimage

from .classmap import ClassMap, check_label_values
from .errors import InputError
from .images import ImageView, Normalization
from .losses import border_weight_map
from .sampling import PatchSampler

__all__ = ["PaintedImages", "TrainingData"]

log = logging.getLogger(__name__)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


class PaintedImages:
    """Images and the labels painted on them, checked and prepared for training.

    Parameters
    ----------
    images : array-like or list of array-like
        2D, multichannel (with ``channel_axis``) or stacks; see `ImageView`.
    labels : array-like or list of array-like
        One per image, the image's shape less the channel axis; 0 = not painted.
    channel_axis : int, optional
        Channel axis of the images.
    pixel_weights : list of array-like, optional
        Per-pixel loss weights, one per image.
    prepare : callable, optional
        ``prepare(i, labels) -> (targets, weights or None)``: what the user painted on image
        ``i`` as training classes and pixel weights (objects mode).

    Raises
    ------
    InputError
        Counts or shapes that do not pair up, channel counts that differ, labels that are not
        class ids.
    """

    def __init__(self, images, labels, *, channel_axis: int | None = None, pixel_weights: list | None = None,
                 prepare: Callable | None = None):
        images, labels = _as_list(images), _as_list(labels)
        if len(images) != len(labels):
            raise InputError(f"{len(images)} image(s) but {len(labels)} label image(s): give one labels file per image.")
        if not images:
            raise InputError("No image given to train on.")
        self.views = [ImageView(img, channel_axis) for img in images]
        for n, (view, lab) in enumerate(zip(self.views, labels), start=1):
            if tuple(np.shape(lab)) != tuple(view.shape):
                raise InputError(
                    f"Labels {n} have shape {tuple(np.shape(lab))} but image {n} has {view.shape} (without channels); "
                    "paint the labels on this image, or check that images and labels are paired in order.")
        channels = {v.n_channels for v in self.views}
        if len(channels) > 1:
            raise InputError(f"The images have different channel counts {sorted(channels)}; train on images of one kind.")
        self.n_channels = channels.pop()
        self.prepare = prepare
        self.labels = [np.asarray(lab) for lab in labels]
        if prepare is not None:
            prepared = [prepare(i, lab) for i, lab in enumerate(self.labels)]
            self.labels = [np.asarray(targets) for targets, _ in prepared]
            pixel_weights = [weights for _, weights in prepared]
        for lab in self.labels:
            check_label_values(lab)
        if pixel_weights is not None and len(pixel_weights) != len(self.views):
            raise InputError(f"{len(pixel_weights)} pixel weight map(s) for {len(self.views)} image(s): "
                             "give one per image.")
        self.pixel_weights = [self.weight_map(i, w) for i, w in enumerate(pixel_weights or [None] * len(self.views))]

    def weight_map(self, i: int, weights) -> np.ndarray | None:
        """``weights`` as float32 of image ``i``'s labels shape (None stays None)."""
        if weights is None:
            return None
        weights = np.array(weights, dtype=np.float32)
        if weights.shape != tuple(self.views[i].shape):
            raise InputError(f"Pixel weights have shape {weights.shape}, expected {self.views[i].shape}.")
        return weights

    def class_map(self, *, dense: bool, names: dict | None = None) -> ClassMap:
        """The classes painted, at least two of them."""
        class_map = ClassMap.from_labels(self.labels, dense=dense, names=names)
        if class_map.n_classes == 0:
            raise InputError("No painted pixels: paint at least one stroke for each of two classes "
                             "(label 0 means 'not painted').")
        if class_map.n_classes == 1:
            raise InputError(f"Only one class is painted (id {class_map.ids[0]}): paint at least two classes, "
                             "for example background and foreground.")
        return class_map

    def painted_share(self, class_map: ClassMap) -> float:
        """Share of the pixels of the painted slices that are painted: strokes cover a few
        per cent, full masks (also with 0 left unpainted, or objects mode's derived targets) most."""
        painted = total = 0
        for view, labels in zip(self.views, self.labels):
            flat = class_map.to_index(labels).reshape(-1, view.height * view.width) >= 0
            counts = flat.sum(axis=1)
            painted += int(counts.sum())
            total += int((counts > 0).sum()) * view.height * view.width
        return painted / total if total else 0.0


class TrainingData:
    """The painted slices (or volumes) of `PaintedImages` in a `PatchSampler`, kept in step
    with strokes sent while training runs (`update_labels`, thread-safe).

    Parameters
    ----------
    painted : PaintedImages
    class_map : ClassMap
        The model's classes (label ids to network indices).
    sampler : PatchSampler
    stats : list of (offset, scale)
        Each image's intensity scaling (`Normalization.stats`).
    normalization : Normalization, optional
        The model's way from image to network input (`Normalization.read`).
    dims : {2, 3}
        2: every painted plane is a slice; 3: each image is one volume.
    border : (w0, sigma) or None
        The U-Net paper's border weights around the regions of the last class; None: off.
    pseudo_weight : float
        Loss weight of pseudo-labelled pixels (`set_pseudo`).
    """

    def __init__(self, painted: PaintedImages, class_map: ClassMap, sampler: PatchSampler, stats: list, *,
                 dims: int, border: tuple[float, float] | None, pseudo_weight: float = 0.5,
                 normalization: Normalization | None = None):
        self.painted = painted
        self.views = painted.views
        self.labels = painted.labels
        self.class_map = class_map
        self.sampler = sampler
        self.stats = stats
        self.dims = dims
        self.border = border
        self.pseudo_weight = pseudo_weight
        self.normalization = normalization or Normalization()
        self.pseudo: dict[tuple[int, int], np.ndarray] = {}
        self.reference: dict[tuple[int, int], np.ndarray] = {}
        self._pending: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        for i in range(len(self.views)):
            self.load(i, self.labels[i], previous=None)

    # -- strokes arriving while training runs --------------------------------------------------
    def update_labels(self, i: int, labels) -> None:
        """Replace the labels of image ``i`` from the next step on (thread-safe)."""
        labels = np.array(labels, copy=True)
        if labels.shape != tuple(self.views[i].shape):
            raise InputError(f"New labels have shape {labels.shape}, expected {self.views[i].shape}.")
        if self.painted.prepare is None:
            check_label_values(labels, what="New labels")
        with self._lock:
            self._pending[i] = labels

    def apply_pending(self) -> None:
        """Take up the labels sent with `update_labels` (in the training thread)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for i, labels in pending.items():
            weights = None
            if self.painted.prepare is not None:
                try:
                    labels, weights = self.painted.prepare(i, labels)
                except ValueError as error:  # keep training on the labels it has
                    log.warning("New strokes on image %d not used: %s", i, error)
                    continue
                labels, weights = np.asarray(labels), self.painted.weight_map(i, weights)
            if weights is not None:
                self.painted.pixel_weights[i] = weights
            self.load(i, labels, previous=self.labels[i])
            self.labels[i] = labels

    def set_reference(self, reference: dict) -> None:
        """A previous model's class indices ``{(image, slice): (H, W)}``: the painted pixels where they
        differ from the paint (the user's corrections) become the sampler's priority centres."""
        self.reference = reference
        for i in range(len(self.views)):
            self.load(i, self.labels[i], previous=None)

    def set_pseudo(self, pseudo: dict) -> None:
        """Pseudo-labels ``{(image, slice): class indices, -1 where unsure}`` for unpainted pixels."""
        self.pseudo = pseudo
        for i in range(len(self.views)):
            self.load(i, self.labels[i], previous=None)

    # -- into the sampler ------------------------------------------------------------------------
    def load(self, i: int, labels: np.ndarray, previous: np.ndarray | None) -> None:
        """Put image ``i``'s painted slices into the sampler; with ``previous``, only those that changed."""
        if self.dims == 3:
            self._load_volume(i, labels)
            return
        view = self.views[i]
        flat = labels.reshape(-1, view.height, view.width)
        old = None if previous is None else previous.reshape(-1, view.height, view.width)
        for s in range(view.n_slices):
            if old is not None and np.array_equal(flat[s], old[s]):
                continue
            target = self.class_map.to_index(flat[s])
            painted = target >= 0
            if not painted.any():
                self.sampler.remove_slice((i, s))
                continue
            image = self.normalization.read(view, s, self.stats[i])
            weights = self.painted.pixel_weights[i]
            if weights is not None:
                weight = weights.reshape(-1, view.height, view.width)[s]
            else:
                weight = self._border_weights(flat[s]) if self.border else None
            pseudo = self.pseudo.get((i, s))
            if pseudo is not None:
                factor = np.where(painted, 1.0, self.pseudo_weight).astype(np.float32)
                weight = factor if weight is None else weight * factor
                target = np.where(painted, target, pseudo)
            reference = self.reference.get((i, s))
            priority = None if reference is None else painted & (target != reference)
            self.sampler.set_slice((i, s), image, target, weight, centres=painted, priority=priority)

    def _load_volume(self, i: int, labels: np.ndarray) -> None:
        """3D model: image ``i`` as one normalised volume ``(C, Z, H, W)`` in the sampler."""
        view = self.views[i]
        target = self.class_map.to_index(labels)
        if not (target >= 0).any():
            self.sampler.remove_slice((i,))
            return
        image = np.stack([self.normalization.read(view, z, self.stats[i]) for z in range(view.n_slices)], axis=1)
        weight = self.painted.pixel_weights[i]
        if weight is None and self.border:
            weight = np.ones(target.shape, np.float32)
            for z in np.flatnonzero((target >= 0).any(axis=(1, 2))):
                weight[z] = self._border_weights(labels[z])
        self.sampler.set_slice((i,), image, target, weight)

    def _border_weights(self, labels_2d: np.ndarray) -> np.ndarray:
        """Border weights around the regions of the last class (the foreground)."""
        objects, _ = ndimage.label(labels_2d == self.class_map.ids[-1])
        return border_weight_map(objects, *self.border)

    # -- reading back ------------------------------------------------------------------------------
    def painted_slices(self) -> Iterator[tuple[tuple[int, int], Callable, int, int]]:
        """Yield ``(key, read, height, width)`` for every painted slice; ``read(ys, xs)``
        gives the normalised image as `UNetModel.probabilities` wants it."""
        for i, view in enumerate(self.views):
            flat = self.labels[i].reshape(-1, view.height, view.width)
            for s in range(view.n_slices):
                if not (self.class_map.to_index(flat[s]) >= 0).any():
                    continue

                def read(ys, xs, s=s, view=view, stats=self.stats[i]):
                    return self.normalization.read(view, s, stats, ys, xs)

                yield (i, s), read, view.height, view.width

    def painted_planes(self, i: int) -> np.ndarray:
        """Indices of the planes of volume ``i`` that carry paint."""
        return np.flatnonzero((self.class_map.to_index(self.labels[i]) >= 0).any(axis=(1, 2)))
