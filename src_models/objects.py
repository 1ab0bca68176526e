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

import logging
import warnings

import numpy as np
from scipy import ndimage

from .config import TrainConfig
from .errors import InputError
from .images import ImageView, Normalization
from .losses import border_weight_map

__all__ = [
    "BACKGROUND",
    "INTERIOR",
    "BOUNDARY",
    "OBJECT_CLASS_NAMES",
    "objects_to_classes",
    "object_border_weights",
    "instances_from_probabilities",
    "fit_foreground_threshold",
    "ObjectsPreparer",
    "objects_training_labels",
    "fill_between_strokes",
    "instance_defaults",
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
                                 min_seed_size: int = 4, extent: str = "foreground",
                                 foreground_threshold: float = 0.5) -> np.ndarray:
    """One id per object from background / interior / boundary probabilities (seeded watershed).

    An object's core is where interior is the most likely class (predicted boundaries cut
    touching objects apart) within the foreground; holes in it are filled. Seeds inside the
    cores are flooded over the whole foreground, where interior + boundary beat background and
    exceed ``foreground_threshold`` (``extent="foreground"``, the default), or over the cores
    only (``extent="core"``):

    * ``seeds="interior"`` (default): seeds are the connected components of confident interior
      (probability above ``seed_threshold``), flooding on the negated interior probability;
    * ``seeds="distance"``: seeds at the maxima of the core's distance transform at least
      ``min_distance`` apart, flooding on the negated distance — splits touching round objects
      even where the network found no boundary between them.

    Components of the flooded area without a seed become objects of their own.

    ``extent="core"`` suits a model trained from bare strokes (``fill_reach=0``): its
    boundary class is learnt only where painted ids meet, and spreads into the unpainted
    band around every object, so its foreground is too large (DSB 2018 nuclei, 300 steps:
    AP@0.5 0.28 flooding the foreground, 0.67 the cores). Models trained on full masks, or
    on strokes extended by `fill_between_strokes` (the default), learn the real boundary band
    just inside each object: flood their foreground (same data, 1000 steps: 0.73 against
    0.52 for the cores). `predict_objects` picks by the model's training record.

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
    extent : {"core", "foreground"}
        What the seeds flood (see above).
    foreground_threshold : float
        In ``[0.5, 1)``: the probability of interior + boundary a pixel needs to belong to an
        object (0.5: where they beat background). A model trained from strokes stores its own
        (`fit_foreground_threshold`, `instance_defaults`).

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
    if extent not in ("core", "foreground"):
        raise ValueError(f"extent must be 'core' or 'foreground', got {extent!r}.")
    if not 0.5 <= foreground_threshold < 1.0:
        raise ValueError(f"foreground_threshold must lie in [0.5, 1), got {foreground_threshold}.")
    p_bg = probs[ids.index(BACKGROUND)]
    p_in = probs[ids.index(INTERIOR)]
    p_bd = probs[ids.index(BOUNDARY)] if BOUNDARY in ids else np.zeros_like(p_in)
    foreground = (p_in + p_bd) > np.maximum(p_bg, foreground_threshold * (p_in + p_bd + p_bg))
    core = ndimage.binary_fill_holes((p_in > p_bg) & (p_in >= p_bd) & foreground)
    mask = foreground | core if extent == "foreground" else core
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
    # mask components holding no seed keep their own id
    parts, n_parts = ndimage.label(mask)
    if n_parts:
        seeded = np.zeros(n_parts + 1, dtype=bool)
        seeded[np.unique(parts[markers > 0])] = True
        orphan = ~seeded[parts] & mask
        markers = np.where(orphan, parts + int(markers.max()), markers)
    instances = watershed(elevation, markers=markers, mask=mask)
    if min_size > 1 and instances.any():
        sizes = np.bincount(instances.ravel())
        instances[(sizes < min_size)[instances]] = 0
    # consecutive ids 1..N
    uniq, inverse = np.unique(instances, return_inverse=True)
    if uniq[0] != 0:
        inverse = inverse + 1
    n_objects = int(inverse.max()) if inverse.size else 0
    return inverse.reshape(instances.shape).astype(_smallest_dtype(n_objects))


def fill_between_strokes(image, labels, *, reach: int = 8, beta: float = 1000.0,
                         confidence: float = 0.8) -> np.ndarray:
    """Objects-mode strokes extended into the unpainted band between background and objects.

    Strokes stop short of object edges, so a model trained on them alone has no say where
    an object ends, and draws objects too large (on DSB 2018 nuclei, foreground precision
    about 0.4). Here a random walker (Grady 2006) on the image, seeded with the background
    and object strokes, decides the unpainted pixels within ``reach`` of the strokes; kept
    are the confident ones (probability above ``confidence``) that lie within ``reach`` of a
    pixel decided the other way, i.e. the band where an edge must be. Object pixels take the
    id of the nearest object stroke. Pixels far from strokes, and objects nobody painted,
    stay unpainted.

    Parameters
    ----------
    image : ndarray ``(C, H, W)`` float
        The plane, normalised (about 0-1).
    labels : ndarray ``(H, W)`` int
        Objects-mode painting: 0 not painted, 1 background, 2+ one object each.
    reach : int
        Pixels from a stroke that may be filled.
    beta : float
        Edge sensitivity of the random walker.
    confidence : float
        Smallest random-walker probability that fills a pixel.

    Returns
    -------
    ndarray ``(H, W)`` int64, the strokes unchanged plus the filled pixels.
    """
    from skimage.segmentation import random_walker

    labels = np.asarray(labels).astype(np.int64)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[1:] != labels.shape:
        raise ValueError(f"image must be (C, H, W) for labels {labels.shape}; got {image.shape}.")
    kind = np.where(labels == BACKGROUND, 1, np.where(labels >= 2, 2, 0)).astype(np.int32)
    if reach < 1 or not ((kind == 1).any() and (kind == 2).any()) or kind.all():
        return labels
    near = ndimage.distance_transform_edt(kind == 0) <= reach
    ys, xs = np.nonzero(near)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1  # work only where strokes are
    window = (slice(y0, y1), slice(x0, x1))
    markers = kind[window].copy()
    markers[~near[window]] = -1  # outside the reach: left out of the walk
    plane = np.clip(image[(slice(None), *window)], -0.5, 1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the probability range is outside [0, 1]" on tiny systems
        probs = random_walker(plane, markers, beta=beta, mode="cg_j", channel_axis=0, return_full_prob=True)
    decided = np.where((markers >= 0) & (probs.max(0) > confidence), probs.argmax(0) + 1, 0)
    size = 2 * reach + 1
    other_near = (ndimage.maximum_filter(decided, size=size) > decided) | \
        (ndimage.minimum_filter(np.where(decided > 0, decided, 3), size=size) < decided)
    fill = np.zeros(labels.shape, np.int32)
    fill[window] = np.where((decided > 0) & other_near & (markers == 0), decided, 0)
    _, (iy, ix) = ndimage.distance_transform_edt(kind != 2, return_indices=True)
    nearest_object = labels[iy, ix]
    return np.where(fill == 1, BACKGROUND, np.where(fill == 2, nearest_object, labels))


class ObjectsPreparer:
    """Turns objects-mode painting into training classes and border weights: the ``prepare``
    function a `Trainer` calls for the labels it starts with and for every later stroke.

    Parameters
    ----------
    images : list of array-like
        The training images (for `fill_between_strokes`).
    channel_axis : int, optional
        As for `Trainer`.
    config : TrainConfig
        ``border_w0``/``border_sigma`` shape the weights, ``fill_reach`` the filling of strokes.
    dense : bool
        0 = background (full instance masks): nothing is filled.
    boundary_width : int
        See `objects_to_classes`.
    fill : bool
        Fill between strokes now; `training.make_trainer` starts with False when the filling
        should run in the training thread, then sets it.
    """

    def __init__(self, images, channel_axis, config, *, dense: bool, boundary_width: int = 2, fill: bool = True):
        self._views = [ImageView(image, channel_axis) for image in images]
        self._config = config
        self.dense = bool(dense)
        self.boundary_width = int(boundary_width)
        self.fill = fill
        self._stats: dict[int, tuple] = {}  # intensity scaling per image, computed once

    @property
    def fills(self) -> bool:
        """Whether strokes are extended at all (bare strokes, ``fill_reach`` > 0)."""
        return self._config.fill_reach > 0 and not self.dense

    def __call__(self, i: int, painted) -> tuple[np.ndarray, np.ndarray]:
        painted = np.asarray(painted)
        _check_integer(painted)
        if self.fill and self.fills:
            if i not in self._stats:
                self._stats[i] = Normalization().stats(self._views[i])
            painted = _fill_planes(painted, self._views[i], self._stats[i], self._config.fill_reach)
        return objects_training_labels(painted, self._config, dense=self.dense, boundary_width=self.boundary_width)


def objects_training_labels(labels, config=None, *, dense: bool = False, boundary_width: int = 2, image=None):
    """``(classes, weights)`` for `Trainer`: `objects_to_classes` and `object_border_weights`.

    With ``image`` (an `ImageView` or an array without channels of the labels' shape) and
    ``config.fill_reach`` > 0, strokes are first extended with `fill_between_strokes` on every
    painted plane (not with ``dense``: full masks leave nothing to fill).
    """
    config = config or TrainConfig()
    labels = np.asarray(labels)
    _check_integer(labels)
    if image is not None and config.fill_reach > 0 and not dense:
        view = image if isinstance(image, ImageView) else ImageView(image)
        labels = _fill_planes(labels, view, Normalization().stats(view), config.fill_reach)
    return (objects_to_classes(labels, dense=dense, boundary_width=boundary_width),
            object_border_weights(labels, dense=dense, w0=config.border_w0, sigma=config.border_sigma))


def _fill_planes(labels: np.ndarray, view, stats, reach: int) -> np.ndarray:
    """`fill_between_strokes` on every painted plane of ``labels`` (the image's ``view``,
    scaled by ``stats = (offset, scale)``)."""
    if tuple(view.shape) != labels.shape:
        raise ValueError(f"The image has shape {view.shape} but the labels {labels.shape}.")
    planes = labels.reshape(-1, *labels.shape[-2:])
    filled = np.stack([
        fill_between_strokes(view.read_normalized(s, stats), plane, reach=reach)
        if (plane > 0).any() else plane.astype(np.int64)
        for s, plane in enumerate(planes)])
    return filled.reshape(labels.shape)


#: The foreground thresholds `fit_foreground_threshold` chooses from.
FOREGROUND_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _contour_edges(foreground: np.ndarray, edges: np.ndarray) -> float | None:
    """Mean of ``edges`` on the pixels just inside and just outside the contours of ``foreground``."""
    ring = (foreground & ~ndimage.binary_erosion(foreground)) | (ndimage.binary_dilation(foreground) & ~foreground)
    return float(edges[ring].mean()) if ring.any() else None


def fit_foreground_threshold(planes, tolerance: float = 0.03, thresholds=FOREGROUND_THRESHOLDS) -> float:
    """The foreground threshold of `instances_from_probabilities` whose object contours lie on the image's edges.

    Strokes leave a band between the painted objects and the painted background, and the
    network draws the object's edge about midway across it. Strokes that cover objects to
    their edges (a wide brush) push that edge out into the background, and every object grows
    (DSB 2018 nuclei painted with a 7-9 px brush: foreground precision 0.72 against 0.95 with
    thin strokes, bench/JOURNAL.md). A higher threshold draws the contours further in. Here
    the contours of each threshold are scored by the image's edge strength along them on the
    painted images; the smallest threshold within ``tolerance`` (relative) of the best score is
    kept, so that a model whose contours already lie on edges keeps 0.5.

    Parameters
    ----------
    planes : sequence of ``(background, image)``
        The background probability ``(H, W)`` (after the class-frequency correction, as
        prediction sees it) and the image ``(H, W)`` or ``(C, H, W)``, normalised, of the
        same plane.
    tolerance : float
        Relative loss of edge strength accepted for a lower threshold.
    thresholds : sequence of float
        Candidates, increasing, each in ``[0.5, 1)``.

    Returns
    -------
    float, one of ``thresholds`` (0.5 when no plane has a contour).
    """
    from skimage.filters import sobel

    scores = np.zeros(len(thresholds))
    counts = np.zeros(len(thresholds))
    for background, image in planes:
        background = np.asarray(background, dtype=np.float32)
        image = np.asarray(image, dtype=np.float32)
        grey = image.mean(0) if image.ndim == 3 else image
        if grey.shape != background.shape:
            raise ValueError(f"The image {grey.shape} and the probabilities {background.shape} differ in shape.")
        edges = sobel(ndimage.gaussian_filter(np.nan_to_num(grey), 1.0))
        for k, t in enumerate(thresholds):
            score = _contour_edges(1.0 - background > t, edges)
            if score is not None:
                scores[k] += score
                counts[k] += 1
    if not counts.any():
        return 0.5
    mean = np.where(counts > 0, scores / np.maximum(counts, 1), -np.inf)
    return float(thresholds[int(np.flatnonzero(mean >= (1.0 - tolerance) * mean.max())[0])])


def instance_defaults(model, **instance_options) -> dict:
    """`instances_from_probabilities` options for ``model``, unless ``instance_options`` say otherwise:
    ``extent="core"`` for a model trained on bare strokes (``fill_reach`` 0, not dense), and the
    ``foreground_threshold`` its training set (``TrainConfig.object_threshold``) or fitted
    (`fit_foreground_threshold`)."""
    trained = model.info.get("train_config", {})
    if not model.info.get("dense") and trained.get("fill_reach", 8) == 0:
        instance_options.setdefault("extent", "core")
    threshold = trained.get("object_threshold") or model.info.get("foreground_threshold")
    if threshold is not None:
        instance_options.setdefault("foreground_threshold", float(threshold))
    return instance_options


def predict_objects(model, image, channel_axis=None, tile=None, progress=None, cancel=None, region=None,
                    notice=None, **instance_options):
    """Segment objects: class probabilities from ``model``, then one id per object.

    `UNetModel.segment` calls this for models trained in objects mode.

    Parameters
    ----------
    model : UNetModel
        Trained in objects mode (classes 1 background, 2 interior, optionally 3 boundary).
    image : array-like
        2D, multichannel or a stack, as for `UNetModel.predict`.
    channel_axis, tile, progress, cancel, region, notice
        As for `UNetModel.predict`.
    **instance_options
        Passed to `instances_from_probabilities` (``seed_threshold``, ``min_size``, ...).
        ``extent`` defaults to ``"core"`` for a model trained on bare strokes (``fill_reach``
        0 and not dense), else ``"foreground"``.

    Returns
    -------
    instances : ndarray, the image's shape less its channel axis
        0 = background, one id per object, uint16 (uint32 when needed); in a stack the ids
        are unique across slices.
    classes : ndarray
        The predicted class map (1 background, 2 interior, 3 boundary).
    probs : ndarray
        The class probabilities ``(*stack, K, H, W)``.
    """
    if not {BACKGROUND, INTERIOR} <= set(model.class_map.ids):
        raise InputError(f"This model was not trained in objects mode (its classes are {list(model.class_map.ids)}); "
                         "train it in objects mode.", setting="mode")
    instance_options = instance_defaults(model, **instance_options)
    classes, probs = model.predict(image, channel_axis=channel_axis, tile=tile, probabilities=True,
                                   progress=progress, cancel=cancel, region=region, notice=notice)
    ids = list(model.class_map.ids)
    flat = probs.reshape(-1, *probs.shape[-3:])
    planes, offset = [], 0
    for p in flat:
        inst = instances_from_probabilities(p, ids, **instance_options).astype(np.int64)
        planes.append(np.where(inst > 0, inst + offset, 0))
        offset += int(inst.max())
    instances = np.stack(planes).reshape(classes.shape).astype(_smallest_dtype(offset))
    return instances, classes, probs
