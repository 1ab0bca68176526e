"""Objects (instance) mode: one label per object, the U-Net paper's way.

Painting convention in objects mode: ``0`` = not painted, ``1`` = background, every other
id = one object (napari's "new label" gives each object a fresh id). Full instance masks
(such as DSB 2018 ground truth) use ``dense=True``: ``0`` = background, every id > 0 an object.

The network is trained on three classes derived from the objects (`objects_to_classes`):
``1`` background, ``2`` object interior, ``3`` object boundary (where an object meets another
object or the background), with the paper's border weights (`object_border_weights`) that
stress the gaps between touching objects. A seeded watershed turns the predicted class
probabilities back into one id per object (`instances_from_probabilities`, `predict_objects`).
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from .losses import border_weight_map

__all__ = [
    "BACKGROUND",
    "INTERIOR",
    "BOUNDARY",
    "OBJECT_CLASS_NAMES",
    "objects_to_classes",
    "object_border_weights",
    "instances_from_probabilities",
    "objects_trainer",
    "predict_objects",
]

log = logging.getLogger(__name__)

BACKGROUND, INTERIOR, BOUNDARY = 1, 2, 3
#: Names of the classes the network learns in objects mode.
OBJECT_CLASS_NAMES = {BACKGROUND: "background", INTERIOR: "object interior", BOUNDARY: "object boundary"}


def _planes(labels: np.ndarray) -> np.ndarray:
    if labels.ndim < 2:
        raise ValueError(f"Object labels need at least 2 dimensions (H, W); got shape {labels.shape}.")
    return labels.reshape(-1, *labels.shape[-2:])


def _check_integer(labels: np.ndarray) -> None:
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)):
        raise ValueError(f"Object labels must hold whole-number ids; got dtype {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise ValueError("Object labels must not be negative (0 = not painted, 1 = background, 2+ = objects).")


def _object_ids(labels: np.ndarray, dense: bool) -> np.ndarray:
    """Object ids only (0 elsewhere), int64, same shape."""
    labels = labels.astype(np.int64, copy=False)
    return np.where(labels > 0, labels, 0) if dense else np.where(labels >= 2, labels, 0)


def objects_to_classes(labels, dense: bool = False, boundary_width: int = 2) -> np.ndarray:
    """Training classes of painted objects: background, object interior, object boundary.

    Parameters
    ----------
    labels : array-like ``(..., H, W)`` int
        Objects-mode painting: 0 = not painted, 1 = background, other ids = one object each;
        with ``dense`` 0 = background and every id > 0 an object. Stacks are converted plane
        by plane.
    dense : bool
        Fully labelled instance masks (every pixel known).
    boundary_width : int
        Object pixels within this many pixels (chessboard distance) of another object id or of
        background become boundary. Strokes inside an object, away from other painted ids,
        stay interior: unpainted pixels are never taken as background.

    Returns
    -------
    ndarray uint8, ``labels``' shape
        0 = not painted, 1 = background, 2 = object interior, 3 = object boundary.
    """
    labels = np.asarray(labels)
    _check_integer(labels)
    if boundary_width < 0:
        raise ValueError(f"boundary_width must not be negative, got {boundary_width}.")
    out = np.zeros(labels.shape, dtype=np.uint8)
    flat_out = out.reshape(-1, *labels.shape[-2:]) if labels.ndim >= 2 else out
    size = 2 * boundary_width + 1
    for plane, target in zip(_planes(labels), flat_out):
        objects = _object_ids(plane, dense)
        background = plane == 0 if dense else plane == 1
        inside = objects > 0
        target[background] = BACKGROUND
        target[inside] = INTERIOR
        if boundary_width == 0 or not inside.any():
            continue
        # another id within reach: the max and the min of the neighbourhood's ids differ,
        # background counting as id 0 and unpainted pixels as this pixel's own id
        known = np.where(background, 0, objects)
        high = ndimage.maximum_filter(np.where(inside | background, known, -1), size=size, mode="nearest")
        low = ndimage.minimum_filter(np.where(inside | background, known, objects.max() + 1),
                                     size=size, mode="nearest")
        near_other = inside & ((high > objects) | (low < objects))
        target[near_other] = BOUNDARY
    return out


def object_border_weights(labels, dense: bool = False, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The U-Net paper's per-pixel loss weights from painted objects.

    ``1 + w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` outside the objects, where ``d1``, ``d2`` are
    the distances to the nearest and second-nearest object (`losses.border_weight_map`); 1 on
    objects. Stacks are weighted plane by plane.

    Parameters
    ----------
    labels : array-like ``(..., H, W)`` int
        Objects-mode painting (see `objects_to_classes`).
    dense : bool
        0 = background and every id > 0 an object.
    w0, sigma : float
        Height and width (pixels) of the border weight; the paper uses 10 and 5.

    Returns
    -------
    ndarray float32, ``labels``' shape
    """
    labels = np.asarray(labels)
    _check_integer(labels)
    if w0 < 0 or sigma <= 0:
        raise ValueError(f"w0 must not be negative and sigma must be positive; got w0={w0}, sigma={sigma}.")
    weights = np.ones(labels.shape, dtype=np.float32)
    flat = weights.reshape(-1, *labels.shape[-2:])
    for plane, target in zip(_planes(labels), flat):
        objects = _object_ids(plane, dense)
        ids, compact = np.unique(objects, return_inverse=True)  # ids 1..N for border_weight_map
        compact = compact.reshape(objects.shape) + (0 if ids[0] == 0 else 1)
        target[:] = border_weight_map(np.where(objects > 0, compact, 0), w0, sigma)
    return weights


def _smallest_dtype(n: int) -> np.dtype:
    return np.dtype(np.uint16) if n <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def instances_from_probabilities(probs, class_ids=(BACKGROUND, INTERIOR, BOUNDARY), *, seeds: str = "interior",
                                 seed_threshold: float = 0.5, min_distance: int = 5, min_size: int = 16,
                                 min_seed_size: int = 4) -> np.ndarray:
    """One id per object from background / interior / boundary probabilities (seeded watershed).

    The foreground is where interior + boundary are more likely than background. Its core
    (interior at least as likely as boundary: predicted boundaries cut touching objects apart)
    gives the seeds, and the whole foreground is flooded from them:

    * ``seeds="interior"`` (default): seeds are the connected components of confident interior
      (probability above ``seed_threshold``), flooding on the negated interior probability;
    * ``seeds="distance"``: seeds at the maxima of the core's distance transform at least
      ``min_distance`` apart, flooding on the negated distance — splits touching round objects
      even where the network found no boundary between them.

    Foreground components without a seed become objects of their own.

    Parameters
    ----------
    probs : ndarray ``(K, H, W)`` float
        Class probabilities, channels in ``class_ids`` order.
    class_ids : sequence of int
        The label id of each channel; must contain 1 (background) and 2 (interior); 3
        (boundary) may be missing (a model whose strokes never touched a boundary).
    seeds : {"distance", "interior"}
        How seeds are found (see above).
    seed_threshold : float
        Interior probability a seed pixel needs with ``seeds="interior"``, in ``(0, 1)``.
    min_distance : int
        Smallest distance between two seeds (pixels) with ``seeds="distance"``.
    min_size : int
        Objects smaller than this (pixels) are dropped.
    min_seed_size : int
        Seeds smaller than this (pixels) are ignored (noise), their pixels flooded by neighbours.

    Returns
    -------
    ndarray ``(H, W)``, uint16 (uint32 beyond 65,535 objects)
        0 = background, 1..N = objects.
    """
    from skimage.segmentation import watershed

    probs = np.asarray(probs, dtype=np.float32)
    ids = [int(c) for c in class_ids]
    if probs.ndim != 3 or probs.shape[0] != len(ids):
        raise ValueError(f"probs must be (K, H, W) with K = {len(ids)} class ids; got shape {probs.shape}.")
    if BACKGROUND not in ids or INTERIOR not in ids:
        raise ValueError(f"class_ids must contain {BACKGROUND} (background) and {INTERIOR} (object interior); "
                         f"got {ids}. Was this model trained in objects mode?")
    if not 0.0 < seed_threshold < 1.0:
        raise ValueError(f"seed_threshold must lie in (0, 1), got {seed_threshold}.")
    if seeds not in ("distance", "interior"):
        raise ValueError(f"seeds must be 'distance' or 'interior', got {seeds!r}.")
    if min_size < 0 or min_seed_size < 0 or min_distance < 1:
        raise ValueError("min_size and min_seed_size must not be negative, min_distance at least 1.")
    p_bg = probs[ids.index(BACKGROUND)]
    p_in = probs[ids.index(INTERIOR)]
    p_bd = probs[ids.index(BOUNDARY)] if BOUNDARY in ids else np.zeros_like(p_in)
    foreground = (p_in + p_bd) > p_bg
    core = foreground & (p_in >= p_bd)
    if seeds == "distance":
        from skimage.feature import peak_local_max

        elevation = -ndimage.distance_transform_edt(core)
        core_parts, _ = ndimage.label(core)
        peaks = peak_local_max(-elevation, min_distance=min_distance, labels=core_parts, exclude_border=False)
        markers = np.zeros(core.shape, np.int64)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    else:
        elevation = -p_in
        markers, n = ndimage.label(core & (p_in > seed_threshold))
        if n and min_seed_size > 1:
            sizes = np.bincount(markers.ravel())
            small = sizes < min_seed_size
            small[0] = False
            markers[small[markers]] = 0
    # foreground components holding no seed keep their own id
    parts, n_parts = ndimage.label(foreground)
    if n_parts:
        seeded = np.zeros(n_parts + 1, dtype=bool)
        seeded[np.unique(parts[markers > 0])] = True
        orphan = ~seeded[parts] & foreground
        markers = np.where(orphan, parts + int(markers.max()), markers)
    instances = watershed(elevation, markers=markers, mask=foreground)
    if min_size > 1 and instances.any():
        sizes = np.bincount(instances.ravel())
        instances[(sizes < min_size)[instances]] = 0
    # consecutive ids 1..N
    uniq, inverse = np.unique(instances, return_inverse=True)
    if uniq[0] != 0:
        inverse = inverse + 1
    n_objects = int(inverse.max()) if inverse.size else 0
    return inverse.reshape(instances.shape).astype(_smallest_dtype(n_objects))


def objects_trainer(images, labels, *, dense: bool = False, config=None, model=None, channel_axis=None,
                    boundary_width: int = 2):
    """A `Trainer` for objects-mode painting (class targets and border weights derived here).

    Parameters
    ----------
    images, labels : array-like or lists of them
        As for `Trainer`; labels follow the objects-mode convention (see `objects_to_classes`).
    dense : bool
        0 = background (full instance masks).
    config : TrainConfig, optional
        Its ``border_w0``/``border_sigma`` shape the weights (always on in objects mode); its
        ``dense`` is ignored (the derived targets mark unpainted pixels with 0).
    model, channel_axis
        As for `Trainer`.

    Returns
    -------
    Trainer
        With ``model.info["mode"] == "objects"``. Send later strokes through
        ``trainer.update_labels(i, *objects_training_labels(new, trainer.config))``.
    """
    from .config import TrainConfig
    from .training import Trainer

    config = dataclasses.replace(config or TrainConfig(), dense=False)
    labels = labels if isinstance(labels, (list, tuple)) else [labels]
    targets, weights = zip(*(objects_training_labels(lab, config, dense=dense, boundary_width=boundary_width)
                             for lab in labels))
    trainer = Trainer(images, list(targets), config=config, model=model, channel_axis=channel_axis,
                      class_names=OBJECT_CLASS_NAMES, pixel_weights=list(weights))
    trainer.model.info["mode"] = "objects"
    return trainer


def objects_training_labels(labels, config=None, *, dense: bool = False, boundary_width: int = 2):
    """``(classes, weights)`` for `Trainer`: `objects_to_classes` and `object_border_weights`."""
    from .config import TrainConfig

    config = config or TrainConfig()
    labels = np.asarray(labels)
    return (objects_to_classes(labels, dense=dense, boundary_width=boundary_width),
            object_border_weights(labels, dense=dense, w0=config.border_w0, sigma=config.border_sigma))


def predict_objects(model, image, channel_axis=None, tile=None, progress=None, cancel=None, semantic: bool = False,
                    region=None, **instance_options):
    """Segment objects: class probabilities from ``model``, then one id per object.

    Parameters
    ----------
    model : UNetModel
        Trained in objects mode (classes 1 background, 2 interior, optionally 3 boundary).
    image : array-like
        2D, multichannel or a stack, as for `UNetModel.predict`.
    channel_axis, tile, progress, cancel
        As for `UNetModel.predict`.
    semantic : bool
        Also return the predicted class map (1 background, 2 interior, 3 boundary).
    region : (y0, y1, x0, x1), optional
        Only this window of every slice (see `UNetModel.predict`).
    **instance_options
        Passed to `instances_from_probabilities` (``seed_threshold``, ``min_size``, ...).

    Returns
    -------
    instances : ndarray, the image's shape less its channel axis
        0 = background, one id per object, uint16 (uint32 when needed); in a stack the ids
        are unique across slices.
    classes : ndarray, only with ``semantic=True``
    """
    classes, probs = model.predict(image, channel_axis=channel_axis, tile=tile, probabilities=True,
                                   progress=progress, cancel=cancel, region=region)
    ids = list(model.class_map.ids)
    flat = probs.reshape(-1, *probs.shape[-3:])
    planes, offset = [], 0
    for p in flat:
        inst = instances_from_probabilities(p, ids, **instance_options).astype(np.int64)
        planes.append(np.where(inst > 0, inst + offset, 0))
        offset += int(inst.max())
    instances = np.stack(planes).reshape(classes.shape).astype(_smallest_dtype(offset))
    return (instances, classes) if semantic else instances
