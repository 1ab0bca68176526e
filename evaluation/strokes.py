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

__all__ = ["class_modes", "simulate_strokes"]

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


def _class_budgets(truth: np.ndarray, ids: list[int], total: int, max_share: float) -> dict[int, int]:
    """Split ``total`` pixels evenly over classes; a class gives what it cannot hold to the others."""
    capacity = {c: int(max_share * np.count_nonzero(truth == c)) for c in ids}
    budgets = {c: 0 for c in ids}
    open_ids = [c for c in ids if capacity[c] > 0]
    left = total
    while left > 0 and open_ids:
        share = max(left // len(open_ids), 1)
        for c in list(open_ids):
            give = min(share, capacity[c] - budgets[c], left)
            budgets[c] += give
            left -= give
            if budgets[c] >= capacity[c]:
                open_ids.remove(c)
            if left == 0:
                break
    return budgets


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
              margin, out):
    total = round(fraction * truth.size)
    budgets = _class_budgets(truth, ids, total, max_share)
    for c in ids:
        budget = budgets[c]
        if budget <= 0:
            continue
        mask = truth == c
        if modes[c] == "trace":
            guide = skeletonize(mask)
            starts = np.argwhere(guide)
            weight = np.ones(len(starts))
        else:
            guide, starts, weight = _blob_guide(
                mask, ndimage.distance_transform_edt(mask), brush[1], margin)
        cumulative = np.cumsum(weight) / weight.sum()
        painted, misses = 0, 0
        while painted < budget and misses < 50:
            pick = min(int(np.searchsorted(cumulative, rng.random())), len(starts) - 1)
            start = starts[pick]
            radius = int(rng.integers(brush[0], brush[1] + 1))
            if modes[c] == "trace":
                path = _trace_path(guide, start, int(rng.integers(*trace_length)), rng)
            else:
                path = _line_path(guide, start, int(rng.integers(*blob_length)), rng)
            window, crop = _stamp(path, radius, truth.shape)
            new = crop & mask[window] & (out[window] == 0)
            n_new = int(np.count_nonzero(new))
            if n_new == 0:
                misses += 1
                continue
            out[window][new] = c
            painted += n_new
        logger.debug("class %d (%s): painted %d of %d budgeted pixels", c, modes[c], painted, budget)


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
