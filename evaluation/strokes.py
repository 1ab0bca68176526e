"""Simulated user strokes: sparse painted labels drawn from a dense ground truth.

Benchmarks and tests need the labels a person would paint in napari, not the dense truth.
:func:`simulate_strokes` imitates that person:

* **thin** classes (membranes, poles, ...) are painted with short strokes *traced along* the
  structure: a walk along the skeleton of the class region, for a random length, with a small brush;
* **blob** classes (cell interiors, nuclei, sky, road, ...) are painted with short straight
  strokes *inside* the regions, kept away from their borders (narrow regions are dabbed in their
  middle), spread over many regions, as a person dabs inside cell after cell.

Brush pixels are clipped to the true class region (the simulated person paints carefully), every
painted class gets about the same number of pixels, and the total is about ``fraction`` of the
image. Whether a class is thin is decided from its distance transform unless told.

The output follows the project convention: ``0`` = not painted, other values = the class ids of
``truth`` that were asked for.

People do not all paint alike, and a default tuned to one simulated person may not hold for the
next. :func:`simulate_style` paints in one of :data:`STYLES`, so that a benchmark can average
over several (``bench/protocol.py``):

* ``"traced"``: :func:`simulate_strokes` as it is;
* ``"centreline"``: thin classes traced along their centre line with a 3 px brush, blob classes
  crossed by long straight 3 px lines that run to within about 2 px of the region border;
* ``"dabs"``: many short dabs (blobs of 5-7 px) spread over the regions;
* ``"thick"``: the traced strokes with a 7-9 px brush (clipped to the class, as always);
* ``"uneven"``: the traced strokes, but the classes get unequal amounts of paint: their
  shares are spaced evenly from 1 to 4 in a random order (2 classes: one gets 4x the other).

Every style copies the truth where it paints (never a wrong class) and paints about ``fraction``
of each image. :func:`simulate_object_style` does the same for instance labels (objects mode).

Examples
--------
>>> import numpy as np
>>> truth = np.ones((64, 64), dtype=np.uint8)
>>> truth[:, 30:33] = 2                       # a thin vertical "membrane"
>>> painted = simulate_strokes(truth, (1, 2), fraction=0.05, rng=0)
>>> sorted(np.unique(painted).tolist())
[0, 1, 2]
>>> bool(np.all(painted[painted > 0] == truth[painted > 0]))
True
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage
from skimage.morphology import disk, skeletonize

__all__ = ["STYLES", "class_modes", "even_shares", "simulate_object_style", "simulate_strokes", "simulate_style"]

logger = logging.getLogger(__name__)

_NEIGHBOURS = np.array(
    [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)], dtype=np.int64
)
_MODES = ("trace", "blob")


def class_modes(
    truth: np.ndarray, class_ids: Iterable[int], *, thin_width: float = 5.0
) -> dict[int, str]:
    """Decide for each class whether it is painted by tracing ("trace") or dabbing ("blob").

    Parameters
    ----------
    truth : np.ndarray
        Dense 2D class-id image.
    class_ids : iterable of int
        Classes to decide for.
    thin_width : float
        A class is thin when the 90th percentile of its pixels' distance to the class border is
        at most this many pixels (ISBI membranes: about 4; cell interiors: about 25).

    Returns
    -------
    dict
        ``{class_id: "trace" | "blob"}``; classes absent from ``truth`` are left out.
    """
    modes = {}
    for c in class_ids:
        mask = truth == c
        if not mask.any():
            continue
        dist = ndimage.distance_transform_edt(mask)
        modes[int(c)] = "trace" if np.percentile(dist[mask], 90) <= thin_width else "blob"
    return modes


def _stamp(path: np.ndarray, radius: int, shape: tuple[int, int]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Brush footprint of a path of (row, col) points: a bounding-box slice and a boolean crop."""
    lo = np.maximum(path.min(axis=0) - radius, 0)
    hi = np.minimum(path.max(axis=0) + radius + 1, shape)
    crop = np.zeros(tuple(hi - lo), dtype=bool)
    crop[path[:, 0] - lo[0], path[:, 1] - lo[1]] = True
    if radius > 0:
        crop = ndimage.binary_dilation(crop, structure=disk(radius))
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1])), crop


def _trace_path(skel: np.ndarray, start: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Walk along skeleton pixels from ``start``, preferring to keep going straight."""
    h, w = skel.shape
    path = [tuple(start)]
    visited = {tuple(start)}
    pos = start.copy()
    heading = None
    for _ in range(length):
        cand = pos + _NEIGHBOURS
        ok = (cand[:, 0] >= 0) & (cand[:, 0] < h) & (cand[:, 1] >= 0) & (cand[:, 1] < w)
        cand, steps = cand[ok], _NEIGHBOURS[ok]
        keep = [skel[r, c] and (r, c) not in visited for r, c in cand]
        if not any(keep):
            break
        cand, steps = cand[keep], steps[keep]
        if heading is None:
            k = rng.integers(len(cand))
        else:
            unit = steps / np.linalg.norm(steps, axis=1, keepdims=True)
            k = int(np.argmax(unit @ heading + 0.3 * rng.random(len(cand))))
        step = steps[k]
        pos = cand[k]
        heading = step / np.linalg.norm(step) if heading is None else 0.7 * heading + 0.3 * step / np.linalg.norm(step)
        heading /= np.linalg.norm(heading)
        visited.add(tuple(pos))
        path.append(tuple(pos))
    return np.array(path, dtype=np.int64)


def _line_path(eligible: np.ndarray, start: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A straight segment through ``start`` in a random direction, cut where it leaves ``eligible``."""
    h, w = eligible.shape
    angle = rng.uniform(0.0, np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)])
    points = [tuple(start)]
    for sign in (1.0, -1.0):
        for t in range(1, length // 2 + 1):
            r, c = np.rint(start + sign * t * direction).astype(np.int64)
            if not (0 <= r < h and 0 <= c < w and eligible[r, c]):
                break
            points.append((r, c))
    return np.array(points, dtype=np.int64)


def even_shares(total: int, capacity: dict) -> dict:
    """Split ``total`` evenly over the keys of ``capacity``; a key that cannot hold its share hands
    the rest on to the others."""
    shares = {k: 0 for k in capacity}
    open_keys = [k for k in capacity if capacity[k] > 0]
    left = total
    while left > 0 and open_keys:
        each = max(left // len(open_keys), 1)
        for k in list(open_keys):
            give = min(each, capacity[k] - shares[k], left)
            shares[k] += give
            left -= give
            if shares[k] >= capacity[k]:
                open_keys.remove(k)
            if left == 0:
                break
    return shares


def _class_budgets(truth: np.ndarray, ids: list[int], total: int, max_share: float) -> dict[int, int]:
    """Split ``total`` pixels evenly over classes; a class gives what it cannot hold to the others."""
    return even_shares(total, {c: int(max_share * np.count_nonzero(truth == c)) for c in ids})


def _stroke_starts(mask: np.ndarray, mode: str, brush_max: float, margin):
    """``(guide, starts, weights)`` of a class: where its strokes may run and start, and the
    start points' sampling weights; along the skeleton of thin classes (``mode`` "trace"),
    inside blobs otherwise (`_blob_guide`)."""
    if mode == "trace":
        guide = skeletonize(mask)
        starts = np.argwhere(guide)
        return guide, starts, np.ones(len(starts))
    return _blob_guide(mask, ndimage.distance_transform_edt(mask), brush_max, margin)


def _blob_guide(mask, dist, brush_max, margin):
    """Where straight strokes may run inside ``mask``, and a start-point sampling weight.

    A stroke keeps ``margin`` pixels from the region border (less in thin classes), and in a
    region too narrow for that, half the region's inner radius: small cells get dabbed in their
    middle rather than skipped. Regions are chosen with probability ~ sqrt(area), so many
    different regions get paint, as when a person works across an image.
    """
    comps, n = ndimage.label(mask)
    margin = min(margin, max(0.5 * np.percentile(dist[mask], 90), brush_max + 1.0))
    inner = np.zeros(n + 1)
    inner[1:] = ndimage.maximum(dist, comps, np.arange(1, n + 1))
    threshold = np.clip(0.5 * inner[comps], 1.0, margin)
    guide = mask & (dist >= threshold)
    starts = np.argwhere(guide)
    region = comps[guide]
    counts = np.bincount(region, minlength=n + 1).astype(float)
    weight = np.sqrt(counts[region]) / counts[region]
    return guide, starts, weight


def _paint_2d(truth, ids, modes, fraction, rng, brush, trace_length, blob_length, max_share,
              margin, out, budgets=None):
    if budgets is None:
        budgets = _class_budgets(truth, ids, round(fraction * truth.size), max_share)

    def traced(c, mode, guide, start, rng):
        radius = int(rng.integers(brush[0], brush[1] + 1))
        if mode == "trace":
            return _trace_path(guide, start, int(rng.integers(*trace_length)), rng), radius
        return _line_path(guide, start, int(rng.integers(*blob_length)), rng), radius

    _paint_styled(truth, ids, modes, budgets, traced, margin, brush[1], rng, out)


def simulate_strokes(
    truth: np.ndarray,
    class_ids: Iterable[int],
    fraction: float = 0.015,
    rng: np.random.Generator | int | None = None,
    *,
    modes: Mapping[int, str] | None = None,
    brush: tuple[int, int] = (1, 2),
    trace_length: tuple[int, int] = (15, 60),
    blob_length: tuple[int, int] = (8, 40),
    thin_width: float = 5.0,
    max_share: float = 0.5,
    margin: float = 6.0,
) -> np.ndarray:
    """Paint sparse strokes of the given classes, as a person would in a labels layer.

    Parameters
    ----------
    truth : np.ndarray
        Dense class-id image ``(H, W)``, or a stack ``(..., H, W)`` painted slice by slice.
    class_ids : iterable of int
        Classes to paint (non-zero ids of ``truth``); other ids (e.g. void) are never painted.
    fraction : float
        Target share of painted pixels per 2D image, all classes together (in ``(0, 1]``).
        Reached approximately: the last stroke may overshoot, a class that has few pixels
        gives its share to the others.
    rng : numpy.random.Generator, int or None
        Random source (a seed makes the strokes reproducible).
    modes : mapping, optional
        ``{class_id: "trace" | "blob"}`` overriding the automatic choice of :func:`class_modes`.
    brush : (int, int)
        Smallest and largest brush radius in pixels, drawn per stroke.
    trace_length, blob_length : (int, int)
        Range ``[low, high)`` of stroke lengths in pixels for traced and straight strokes.
    thin_width : float
        Threshold of :func:`class_modes`.
    max_share : float
        At most this share of a class's pixels is painted.
    margin : float
        Distance in pixels that straight strokes keep from region borders (reduced for thin
        classes, and to half the inner radius of regions too narrow for it).

    Returns
    -------
    np.ndarray
        Painted labels with ``truth``'s shape: ``0`` = not painted, else the class id;
        uint8 when all ids fit, else uint16 or uint32.
    """
    truth = np.asarray(truth)
    ids = sorted({int(c) for c in class_ids})
    if truth.ndim < 2:
        raise ValueError(f"Strokes need an image of at least 2 dimensions; got shape {truth.shape}.")
    if not ids or min(ids) <= 0:
        raise ValueError(f"Class ids must be positive (0 means 'not painted'); got {ids}.")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"The painted fraction must lie in (0, 1]; got {fraction}.")
    if margin < 0:
        raise ValueError(f"The border margin must not be negative; got {margin}.")
    if not 0 <= brush[0] <= brush[1]:
        raise ValueError(f"The brush radii must satisfy 0 <= low <= high; got {brush}.")
    if modes is not None and any(m not in _MODES for m in modes.values()):
        raise ValueError(f"Stroke modes must be one of {_MODES}; got {dict(modes)}.")
    rng = np.random.default_rng(rng)
    dtype = np.uint8 if max(ids) <= 0xFF else np.uint16 if max(ids) <= 0xFFFF else np.uint32
    out = np.zeros(truth.shape, dtype=dtype)
    for index in np.ndindex(truth.shape[:-2]):
        plane = truth[index]
        chosen = class_modes(plane, ids, thin_width=thin_width)
        if modes is not None:
            chosen.update({int(k): v for k, v in modes.items() if int(k) in chosen})
        present = [c for c in ids if c in chosen]
        _paint_2d(plane, present, chosen, fraction, rng, brush, trace_length, blob_length,
                  max_share, margin, out[index])
    return out


# --------------------------------------------------------------------------- styles

#: Painting styles of :func:`simulate_style`; ``"traced"`` is :func:`simulate_strokes`.
STYLES = ("traced", "centreline", "dabs", "thick", "uneven")

#: Brush radii of ``"thick"``: disks 7-9 px across.
THICK_BRUSH = (3, 4)
#: Largest painted share of a class in ``"uneven"`` over the smallest.
UNEVEN_RATIO = 4.0


def _weighted_budgets(truth, ids, total, weights, max_share):
    """Split ``total`` pixels over classes in proportion to ``weights``, within each capacity."""
    capacity = {c: int(max_share * np.count_nonzero(truth == c)) for c in ids}
    budgets = {c: 0 for c in ids}
    open_ids = [c for c in ids if capacity[c] > 0]
    left = total
    while left > 0 and open_ids:
        norm = sum(weights[c] for c in open_ids)
        handed = 0
        for c in list(open_ids):
            give = min(max(round(left * weights[c] / norm), 1), capacity[c] - budgets[c], left - handed)
            budgets[c] += give
            handed += give
            if budgets[c] >= capacity[c]:
                open_ids.remove(c)
        left -= handed
        if handed == 0:
            break
    return budgets


#: Longest straight ``"centreline"`` line (px): across a cell it ends at the border, across a
#: road or the sky a person stops somewhere.
_LONGEST_LINE = 200


def _centreline_stroke(c, mode, guide, start, rng):
    """Long 3 px stroke: along the skeleton (thin) or straight across the region (blob)."""
    if mode == "trace":
        return _trace_path(guide, start, int(rng.integers(30, 120)), rng), 1
    return _line_path(guide, start, _LONGEST_LINE, rng), 1


def _dab_stroke(c, mode, guide, start, rng):
    """A dab: a few pixels of path under a 5-7 px brush."""
    if mode == "trace":
        return _trace_path(guide, start, int(rng.integers(0, 4)), rng), int(rng.integers(1, 3))
    return _line_path(guide, start, int(rng.integers(1, 6)), rng), int(rng.integers(2, 4))


#: style -> (stroke maker, margin (px) kept by blob strokes' centre line from the border,
#: largest brush radius).
_STROKE_MAKERS = {
    "centreline": (_centreline_stroke, 3.0, 1),
    "dabs": (_dab_stroke, 4.0, 3),
}


def _paint_styled(plane, ids, modes, budgets, make_stroke, margin, brush_max, rng, out):
    """Paint each class up to its budget with strokes from ``make_stroke``, clipped to the truth."""
    for c in ids:
        budget = budgets[c]
        if budget <= 0:
            continue
        mask = plane == c
        guide, starts, weight = _stroke_starts(mask, modes[c], brush_max, margin)
        if len(starts) == 0:
            continue
        cumulative = np.cumsum(weight) / weight.sum()
        painted, misses = 0, 0
        while painted < budget and misses < 50:
            pick = min(int(np.searchsorted(cumulative, rng.random())), len(starts) - 1)
            path, radius = make_stroke(c, modes[c], guide, starts[pick], rng)
            window, crop = _stamp(path, radius, plane.shape)
            new = crop & mask[window] & (out[window] == 0)
            n_new = int(np.count_nonzero(new))
            if n_new == 0:
                misses += 1
                continue
            out[window][new] = c
            painted += n_new
        logger.debug("class %d (%s): painted %d of %d budgeted pixels", c, modes[c], painted, budget)


def simulate_style(
    truth: np.ndarray,
    classes: Iterable[int],
    style: str = "traced",
    fraction: float = 0.015,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Paint sparse strokes of the given classes in one of the :data:`STYLES`.

    Parameters
    ----------
    truth : np.ndarray
        Dense class-id image ``(H, W)``, or a stack ``(..., H, W)`` painted slice by slice.
    classes : iterable of int
        Classes to paint (positive ids); other ids (void = 0) are never painted.
    style : str
        One of :data:`STYLES` (see the module docstring).
    fraction : float
        Target share of painted pixels per 2D image, all classes together, in ``(0, 1]``.
    rng : numpy.random.Generator, int or None
        Random source (a seed makes the strokes reproducible).

    Returns
    -------
    np.ndarray
        Painted labels with ``truth``'s shape: ``0`` = not painted, else the true class id;
        uint8 when every id fits, else uint16 or uint32.
    """
    if style not in STYLES:
        raise ValueError(f"The stroke style must be one of {STYLES}; got {style!r}.")
    if style == "traced":
        return simulate_strokes(truth, classes, fraction, rng)
    if style == "thick":
        return simulate_strokes(truth, classes, fraction, rng, brush=THICK_BRUSH)
    truth = np.asarray(truth)
    ids = sorted({int(c) for c in classes})
    if truth.ndim < 2:
        raise ValueError(f"Strokes need an image of at least 2 dimensions; got shape {truth.shape}.")
    if not ids or min(ids) <= 0:
        raise ValueError(f"Class ids must be positive (0 means 'not painted'); got {ids}.")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"The painted fraction must lie in (0, 1]; got {fraction}.")
    rng = np.random.default_rng(rng)
    dtype = np.uint8 if max(ids) <= 0xFF else np.uint16 if max(ids) <= 0xFFFF else np.uint32
    out = np.zeros(truth.shape, dtype=dtype)
    for index in np.ndindex(truth.shape[:-2]):
        plane = truth[index]
        modes = class_modes(plane, ids)
        present = [c for c in ids if c in modes]
        if not present:
            continue
        total = round(fraction * plane.size)
        if style == "uneven":
            shares = np.linspace(1.0, UNEVEN_RATIO, len(present)) if len(present) > 1 else np.ones(1)
            weights = dict(zip(present, rng.permutation(shares)))
            budgets = _weighted_budgets(plane, present, total, weights, 0.5)
            _paint_2d(plane, present, modes, fraction, rng, (1, 2), (15, 60), (8, 40), 0.5, 6.0,
                      out[index], budgets=budgets)
        else:
            make_stroke, margin, brush_max = _STROKE_MAKERS[style]
            budgets = _class_budgets(plane, present, total, 0.5)
            _paint_styled(plane, present, modes, budgets, make_stroke, margin, brush_max, rng,
                          out[index])
    return out


def simulate_object_style(
    instances: np.ndarray,
    style: str = "traced",
    fraction: float = 0.02,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Objects-mode strokes from instance labels: ``1`` = background, object id + 1 inside objects.

    The styles see two classes (background, object); each painted object pixel then takes its
    own object's id + 1, so a stroke across two touching objects gives both their own ids.

    Parameters
    ----------
    instances : np.ndarray
        Instance labels ``(H, W)``: 0 = background, 1..N = one id per object.
    style, fraction, rng
        As for :func:`simulate_style`.

    Returns
    -------
    np.ndarray
        uint32 labels: 0 = not painted, 1 = background, ``n + 1`` = object ``n``.
    """
    instances = np.asarray(instances)
    classes = np.where(instances > 0, 2, 1).astype(np.uint8)
    strokes = simulate_style(classes, (1, 2), style, fraction, rng)
    objects = instances.astype(np.int64) + 1
    return np.where(strokes == 1, 1, np.where(strokes == 2, objects, 0)).astype(np.uint32)
