"""Two-class decisions that keep regions apart: thin separators, closed by a watershed.

A model of two classes where the first one separates regions of the second (membranes
between cells in EM) is trained with the paper's border weights, and its probabilities are right about *where* a separator runs but not
about *how wide* it is: trained on strokes that stop short of every membrane, it paints
the unpainted band beside each membrane as membrane too, more so the longer it trains.
Each cell then loses its rim to the membrane, and adapted Rand error counts all predicted
membrane inside true cells as one segment, which joins every cell whose rim it took.

`separate_regions` draws a separator pixel only where the separator's probability is
within ``ridge`` of its highest value nearby (the crest of the membrane), gives the
flanks back to the regions on either side by a watershed of that probability from the
regions the argmax finds, and keeps a one-pixel separator wherever two regions meet.
The regions seed the watershed only where they are confident (`CONFIDENCE`), so that a
faint stretch of separator between two of them, which the argmax leaves open, is closed
by such a line too (ISBI 2012, six models, held-out slices: adapted Rand error lower by
0.04-0.26 than seeding from the argmax, F1 within 0.003; bench/README.md).

On ISBI 2012 (strokes on slices 1, 5, 8; scored on slices 2, 3, 6, 7), at ridge 0.9 a
1,500-step model went from membrane F1 0.745 / adapted Rand error 0.504 / pixel error 0.155
(argmax after the class-frequency correction) to 0.770 / 0.239 / 0.117. A trained model
stores a ridge fitted to its own probabilities (`fit_ridge`).

Only for separators that are lines (`separators_are_lines`): where the first class is a
background around objects, the same thinning makes every object grow (DSB 2018 nuclei
painted as background / nucleus: nucleus F1 0.733 with the argmax, 0.672 thinned).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["DEFAULT_RIDGE", "fit_ridge", "separate_regions", "separate_regions_in_rows", "separators_are_lines"]

#: A separator is a line when 90 % of its pixels lie within this many pixels of a region.
LINE_REACH = 15.0

#: `separate_regions` seeds its watershed where a region's probability exceeds this.
CONFIDENCE = 0.85

#: The ridge of models that do not store their own (`fit_ridge`; model files written before it).
DEFAULT_RIDGE = 0.9


def crest_ratio(separator, window: int = 9) -> np.ndarray:
    """The separator's probability over its highest value within ``window`` (1 on the crest)."""
    separator = np.asarray(separator, dtype=np.float32)
    return separator / np.maximum(ndimage.maximum_filter(separator, size=window), np.float32(1e-12))


def fit_ridge(probabilities, keep: float, window: int = 9) -> float:
    """The ``ridge`` of `separate_regions` whose crest keeps ``keep`` of the separator the argmax draws.

    A network's probabilities after more training, or after corrections, have sharper crests:
    a fixed ridge keeps fewer pixels of the same membranes each time (ISBI 2012 correction loop:
    0.76 to 0.68 of the truth's membrane share over three rounds at ridge 0.9), and the user sees
    the membranes they painted thin out. Fitted on the model's own probabilities of the painted
    slices, the ridge follows the model, and the separators keep the same share of what the
    network finds most likely membrane.

    Parameters
    ----------
    probabilities : sequence of ndarray ``(2, H, W)``
    keep : float
        In ``(0, 1]``: the share of the pixels whose most likely class is the separator that lie
        on the crest (within the ridge of the highest separator probability within ``window``).
    window : int
        As in `separate_regions`.

    Returns
    -------
    float in ``[0.5, 1]`` (a pixel whose most likely class is the separator has at least half
    the highest probability nearby); `DEFAULT_RIDGE` when no map has a separator pixel.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must lie in (0, 1], got {keep}.")
    ratios = []
    for probs in probabilities:
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 3 or probs.shape[0] != 2:
            raise ValueError(f"probabilities must be (2, H, W) maps; got shape {probs.shape}.")
        ratios.append(crest_ratio(probs[0], window)[probs[0] >= probs[1]])
    ratios = np.concatenate(ratios) if ratios else np.empty(0, np.float32)
    if ratios.size == 0:
        return DEFAULT_RIDGE
    return float(min(1.0, np.quantile(ratios, 1.0 - keep)))


def separate_regions(probs, *, ridge: float = DEFAULT_RIDGE, window: int = 9, min_region: int = 30,
                     confidence: float = CONFIDENCE) -> np.ndarray:
    """Class indices of a two-class probability map with thin separators between regions.

    Parameters
    ----------
    probs : ndarray ``(2, H, W)`` float
        Probabilities of the separator (channel 0) and of the regions it separates (channel 1).
    ridge : float
        A pixel the argmax gives to the separator stays separator if its probability is at
        least ``ridge`` times the highest separator probability within ``window``; in ``(0, 1]``
        (1 keeps only the crests, small values keep the argmax's separator). A trained model
        stores its own (`fit_ridge`, `UNetModel.separator_ridge`).
    window : int
        Side (pixels) of the neighbourhood searched for the crest.
    min_region : int
        Regions smaller than this (pixels) do not seed the watershed (they stay as the
        argmax has them).
    confidence : float
        The regions that seed the watershed are where the region's probability exceeds
        this, in ``[0.5, 1)``; the doubtful rest of the argmax's regions is flooded with the
        flanks, so that a faint separator between two confident regions is closed by a
        one-pixel line instead of joining them. A region of the argmax with fewer than
        ``min_region`` confident pixels seeds as a whole. 0.5 seeds from the argmax's regions.

    Returns
    -------
    ndarray ``(H, W)`` uint8: 0 = separator, 1 = region.
    """
    from skimage.segmentation import watershed

    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] != 2:
        raise ValueError(f"probs must be (2, H, W); got shape {probs.shape}.")
    if not 0.0 < ridge <= 1.0:
        raise ValueError(f"ridge must lie in (0, 1], got {ridge}.")
    if window < 1 or min_region < 0:
        raise ValueError("window must be at least 1 and min_region not negative.")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must lie in [0.5, 1), got {confidence}.")
    separator = probs[0]
    region = probs[1] > separator
    parts, n = ndimage.label(region)
    if n == 0:
        return region.astype(np.uint8)
    core = region & (probs[1] > confidence)
    confident = np.bincount(parts[core], minlength=n + 1) >= max(1, min_region)
    confident[0] = False
    core |= region & ~confident[parts]  # regions with too few confident pixels seed as they are
    seeds, n = ndimage.label(core)
    if min_region > 1:
        small = np.bincount(seeds.ravel()) < min_region
        small[0] = False
        seeds[small[seeds]] = 0
    crest = ~region & (crest_ratio(separator, window) >= ridge)
    # flood only the flanks, from the cores' rims (the same result as from whole cores, faster)
    rim = core & ~ndimage.binary_erosion(core, border_value=1)
    flank = ~core & ~crest
    flooded = watershed(separator, np.where(rim, seeds, 0), mask=flank | rim, watershed_line=True)
    return ((flooded > 0) | core).astype(np.uint8)


def separate_regions_in_rows(probs, *, max_pixels: int = 4 * 2**20, halo: int = 64, **options) -> np.ndarray:
    """`separate_regions` of a tall probability map in groups of rows, to bound memory.

    Maps of at most ``max_pixels`` pixels go in one piece. Larger ones (bands of an image
    over 64 Mpx) go in groups of rows with ``halo`` rows of context above and below, of
    which only the inner rows are kept; the watershed needs the context so that a cell cut
    by a group's edge is still flooded from its own rim.
    """
    probs = np.asarray(probs)
    height, width = probs.shape[-2:]
    if height * width <= max_pixels:
        return separate_regions(probs, **options)
    rows = max(1, max_pixels // width - 2 * halo)
    out = np.empty((height, width), np.uint8)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        a, b = max(0, y0 - halo), min(height, y1 + halo)
        out[y0:y1] = separate_regions(probs[:, a:b], **options)[y0 - a:y1 - a]
    return out


def separators_are_lines(probabilities, reach: float = LINE_REACH) -> bool:
    """Whether the first class of two-class probability maps separates regions as lines.

    True when, over all maps, 90 % of the pixels whose most likely class is the first lie
    within ``reach`` pixels of the second class: membranes between cells (ISBI 2012: within
    6-8 px), not a background around objects (DSB 2018 nuclei: 30-120 px), where thinning
    the separator would only make the objects grow.

    Parameters
    ----------
    probabilities : sequence of ndarray ``(2, H, W)``
    reach : float
        Pixels.
    """
    distances = []
    for probs in probabilities:
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 3 or probs.shape[0] != 2:
            raise ValueError(f"probabilities must be (2, H, W) maps; got shape {probs.shape}.")
        region = probs[1] > probs[0]
        if region.any() and not region.all():
            distances.append(ndimage.distance_transform_edt(~region)[~region])
    return bool(distances) and float(np.percentile(np.concatenate(distances), 90)) <= reach
