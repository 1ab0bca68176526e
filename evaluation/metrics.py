"""Segmentation scores for benchmarks and tests.

Pure numpy / scipy / scikit-image: nothing here needs torch, so the benchmark scripts can score
any method (the random-forest anchor included) with the same code.

Label images hold class ids (semantic scores) or instance ids (instance scores); the ids follow
the project convention where it matters: ``0`` = not painted / not labelled.

Examples
--------
>>> import numpy as np
>>> truth = np.array([[1, 1, 2, 2]])
>>> pred = np.array([[1, 2, 2, 2]])
>>> round(class_f1(truth, pred, 1), 3), pixel_error(truth, pred)
(0.667, 0.25)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.metrics import adapted_rand_error

__all__ = [
    "adapted_rand_error_interior",
    "average_precision",
    "class_f1",
    "class_iou",
    "instance_iou_matrix",
    "interior_components",
    "intersection_union",
    "mean_iou",
    "pixel_error",
]


def _check_pair(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(
            f"Truth and prediction must have the same shape; got {truth.shape} and {pred.shape}."
        )
    return truth, pred


def _valid_mask(truth: np.ndarray, ignore_id: int | None) -> np.ndarray:
    if ignore_id is None:
        return np.ones(truth.shape, dtype=bool)
    return truth != ignore_id


def _confusion(truth, pred, class_id, ignore_id):
    valid = _valid_mask(truth, ignore_id)
    t = (truth == class_id) & valid
    p = (pred == class_id) & valid
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return tp, fp, fn


def class_f1(truth, pred, class_id: int, *, ignore_id: int | None = None) -> float:
    """F1 (= Dice) score of one class, e.g. the membrane or the foreground.

    Parameters
    ----------
    truth, pred : np.ndarray
        Label images of the same shape (any dimensionality), holding class ids.
    class_id : int
        The class scored as "positive".
    ignore_id : int or None
        Pixels where ``truth == ignore_id`` are left out (e.g. ``0`` = unlabelled).

    Returns
    -------
    float
        ``2 TP / (2 TP + FP + FN)``; ``1.0`` when the class is absent from both images.
    """
    truth, pred = _check_pair(truth, pred)
    tp, fp, fn = _confusion(truth, pred, class_id, ignore_id)
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else float(2 * tp / denom)


def class_iou(truth, pred, class_id: int, *, ignore_id: int | None = None) -> float:
    """Intersection over union (Jaccard index) of one class.

    Parameters are those of :func:`class_f1`.

    Returns
    -------
    float
        ``TP / (TP + FP + FN)``; ``1.0`` when the class is absent from both images.
    """
    truth, pred = _check_pair(truth, pred)
    tp, fp, fn = _confusion(truth, pred, class_id, ignore_id)
    denom = tp + fp + fn
    return 1.0 if denom == 0 else float(tp / denom)


def pixel_error(truth, pred, *, ignore_id: int | None = None) -> float:
    """Fraction of (non-ignored) pixels whose predicted class differs from the truth.

    Parameters
    ----------
    truth, pred : np.ndarray
        Label images of the same shape holding class ids.
    ignore_id : int or None
        Pixels where ``truth == ignore_id`` are left out.

    Returns
    -------
    float
        In ``[0, 1]``; ``0.0`` if no pixel is scored.
    """
    truth, pred = _check_pair(truth, pred)
    valid = _valid_mask(truth, ignore_id)
    n = int(np.count_nonzero(valid))
    if n == 0:
        return 0.0
    return int(np.count_nonzero((truth != pred) & valid)) / int(n)


def interior_components(labels, interior_id: int, *, connectivity: int = 1) -> np.ndarray:
    """Label the connected components of one class (cells separated by membrane).

    Parameters
    ----------
    labels : np.ndarray
        Class-id image (2D or ND).
    interior_id : int
        The class whose connected regions become the segments.
    connectivity : int
        Neighbourhood as in :func:`scipy.ndimage.generate_binary_structure`
        (``1`` = 4-connected in 2D, the safe choice for thin membranes).

    Returns
    -------
    np.ndarray
        int32 image: ``0`` outside the class, ``1..N`` one id per component.
    """
    labels = np.asarray(labels)
    structure = ndimage.generate_binary_structure(labels.ndim, connectivity)
    comps, _ = ndimage.label(labels == interior_id, structure=structure)
    return comps.astype(np.int32, copy=False)


def adapted_rand_error_interior(
    truth, pred, interior_id: int, *, connectivity: int = 1
) -> float:
    """Adapted Rand error between the interior components of truth and prediction.

    Both class maps are turned into segmentations with :func:`interior_components`, then
    :func:`skimage.metrics.adapted_rand_error` compares them (SNEMI3D / ISBI 2012 definition).
    As in scikit-image, truth pixels outside the interior class (label 0 after labelling, i.e.
    the membrane) are not scored, while predicted membrane counts as one extra segment of the
    prediction, so membrane predicted inside a cell is penalised.

    Parameters
    ----------
    truth, pred : np.ndarray
        Class-id images of the same shape.
    interior_id : int
        Class id of the cell interior (``2`` for painted ISBI labels).
    connectivity : int
        Connectivity of the components (see :func:`interior_components`).

    Returns
    -------
    float
        The adapted Rand error in ``[0, 1]`` (0 = identical segmentations); ``nan`` when the truth
        has no interior pixel pairs to compare.
    """
    truth, pred = _check_pair(truth, pred)
    t = interior_components(truth, interior_id, connectivity=connectivity)
    p = interior_components(pred, interior_id, connectivity=connectivity)
    if np.count_nonzero(t) < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        error, _, _ = adapted_rand_error(t, p)
    return float(error)


def intersection_union(truth, pred, class_ids, *, ignore_id: int | None = 0):
    """Per-class intersection and union pixel counts, to pool IoU over many images.

    Parameters
    ----------
    truth, pred : np.ndarray
        Class-id images of the same shape.
    class_ids : iterable of int
        Classes to count.
    ignore_id : int or None
        Pixels where ``truth == ignore_id`` are left out.

    Returns
    -------
    (np.ndarray, np.ndarray)
        int64 intersections and unions, one entry per class in ``class_ids`` order. Sum them over
        images and divide for a data-set IoU per class.
    """
    truth, pred = _check_pair(truth, pred)
    valid = _valid_mask(truth, ignore_id)
    t = truth[valid]
    p = pred[valid]
    ids = [int(c) for c in class_ids]
    inter = np.array([np.count_nonzero((t == c) & (p == c)) for c in ids], dtype=np.int64)
    union = np.array([np.count_nonzero((t == c) | (p == c)) for c in ids], dtype=np.int64)
    return inter, union


def mean_iou(
    truth, pred, *, ignore_id: int | None = 0, class_ids=None
) -> float:
    """Mean intersection over union over classes.

    Parameters
    ----------
    truth, pred : np.ndarray
        Class-id images of the same shape.
    ignore_id : int or None
        Pixels where ``truth == ignore_id`` (unlabelled / void) are left out and ``ignore_id`` is
        never a class. ``None`` scores every pixel.
    class_ids : iterable of int, optional
        Classes to average over. Default: every id seen in the scored pixels of truth or
        prediction. Classes absent from both (on the scored pixels) are skipped.

    Returns
    -------
    float
        Mean IoU; ``nan`` if no class could be scored.
    """
    truth, pred = _check_pair(truth, pred)
    valid = _valid_mask(truth, ignore_id)
    t = truth[valid]
    p = pred[valid]
    if class_ids is None:
        ids = np.union1d(np.unique(t), np.unique(p))
        if ignore_id is not None:
            ids = ids[ids != ignore_id]
    else:
        ids = [int(c) for c in class_ids]
    ious = []
    for c in ids:
        tc = t == c
        pc = p == c
        union = np.count_nonzero(tc | pc)
        if union:
            ious.append(int(np.count_nonzero(tc & pc)) / int(union))
    return float(np.mean(ious)) if ious else float("nan")


def instance_iou_matrix(truth, pred) -> np.ndarray:
    """IoU between every truth instance and every predicted instance.

    Parameters
    ----------
    truth, pred : np.ndarray
        Instance label images (``0`` = background, any positive ids, not necessarily
        consecutive).

    Returns
    -------
    np.ndarray
        float64 array ``(n_truth, n_pred)``, rows/columns in increasing id order.
    """
    truth, pred = _check_pair(truth, pred)
    t_ids, t_inv = np.unique(truth.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(pred.ravel(), return_inverse=True)
    overlap = np.zeros((t_ids.size, p_ids.size), dtype=np.int64)
    np.add.at(overlap, (t_inv.ravel(), p_inv.ravel()), 1)
    t_area = overlap.sum(axis=1, keepdims=True)
    p_area = overlap.sum(axis=0, keepdims=True)
    union = t_area + p_area - overlap
    iou = np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0)
    return iou[np.ix_(t_ids != 0, p_ids != 0)]


def average_precision(truth, pred, *, threshold: float = 0.5) -> float:
    """Instance average precision at one IoU threshold (DSB 2018 style).

    Instances are matched one to one: a pair may match when its IoU is above ``threshold``.
    For ``threshold >= 0.5`` such matches are unique; below it, the matching maximising the
    number of matches (then the total IoU) is found with the Hungarian algorithm.

    Parameters
    ----------
    truth, pred : np.ndarray
        Instance label images (``0`` = background).
    threshold : float
        IoU a match must exceed, in ``[0, 1)``.

    Returns
    -------
    float
        ``TP / (TP + FP + FN)``; ``1.0`` when neither image holds an instance.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"The IoU threshold must lie in [0, 1); got {threshold}.")
    iou = instance_iou_matrix(truth, pred)
    n_true, n_pred = iou.shape
    if n_true == 0 and n_pred == 0:
        return 1.0
    hit = iou > threshold
    if threshold >= 0.5 or not hit.any():
        tp = int(np.count_nonzero(hit))
    else:
        # Maximise matches first, total IoU second: the IoU bonus of all matches together stays
        # below the worth of one match.
        bonus = iou * hit / (min(n_true, n_pred) + 1)
        rows, cols = linear_sum_assignment(-(hit + bonus))
        tp = int(np.count_nonzero(hit[rows, cols]))
    return float(tp / (n_true + n_pred - tp))
