"""Decisions a training makes from the network's own predictions on the painted slices:
pseudo-labels while it runs, and after it ends whether to draw thin separators, how
frequent each class really is (`calibration`) and, for objects, where their contours lie
(`objects.fit_foreground_threshold`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from .calibration import apply_class_prior, estimate_class_prior
from .config import TrainConfig
from .objects import BACKGROUND, fit_foreground_threshold
from .painted import TrainingData
from .segmenter import UNetModel
from .separation import fit_ridge, separate_regions_in_rows, separators_are_lines

__all__ = ["MAX_PRIOR_CLASSES", "decide_after_training", "model_answers", "pseudo_labels", "slice_probabilities"]

log = logging.getLogger(__name__)

#: ``TrainConfig.class_prior=None`` estimates class frequencies for models of at most this many
#: classes. With more, the estimate went wrong on CamVid's 11 classes (bench/JOURNAL.md).
MAX_PRIOR_CLASSES = 3


def _painted_windows(data: TrainingData, max_side: int | None, limit: int | None):
    """Yield ``(key, read, height, width, region)`` for the painted slices: a central window of
    at most ``max_side`` pixels a side (the whole slice when None), at most ``limit`` slices."""
    for n, (key, read, height, width) in enumerate(data.painted_slices()):
        if limit is not None and n >= limit:
            break
        region = None
        if max_side is not None:
            y0, x0 = max(0, (height - max_side) // 2), max(0, (width - max_side) // 2)
            region = (y0, min(height, y0 + max_side), x0, min(width, x0 + max_side))
        yield key, read, height, width, region


def slice_probabilities(model: UNetModel, data: TrainingData, max_side: int | None = None,
                        limit: int | None = None, prior: bool = True) -> Iterator[tuple[tuple, np.ndarray]]:
    """Yield ``(key, probs)`` for the painted slices, in eval mode (a central window when ``max_side``)."""
    tile = model.default_tile()
    was_training = model.net.training
    model.net.eval()
    try:
        for key, read, height, width, region in _painted_windows(data, max_side, limit):
            yield key, model.probabilities(read, height, width, tile, region=region, prior=prior)
    finally:
        model.net.train(was_training)


def _slice_images(data: TrainingData, max_side: int | None, limit: int | None) -> list:
    """The normalised images ``(C, h, w)`` of the windows `slice_probabilities` predicts."""
    images = []
    for (i, s), _, height, width, region in _painted_windows(data, max_side, limit):
        y0, y1, x0, x1 = region or (0, height, 0, width)
        images.append(data.views[i].read_normalized(s, data.stats[i], slice(y0, y1), slice(x0, x1)))
    return images


def pseudo_labels(model: UNetModel, data: TrainingData, threshold: float) -> dict:
    """``{key: class indices}`` of every painted slice where the model is at least ``threshold``
    sure, -1 elsewhere."""
    pseudo = {}
    for key, probs in list(slice_probabilities(model, data)):
        pseudo[key] = np.where(probs.max(0) >= threshold, probs.argmax(0), -1)
    return pseudo


def model_answers(model: UNetModel, data: TrainingData) -> dict:
    """``{key: class indices}`` the model draws on every painted slice, as a user sees them
    (thin separators when the model draws them)."""
    answers = {}
    for key, probs in list(slice_probabilities(model, data)):
        answers[key] = separate_regions_in_rows(probs, ridge=model.separator_ridge).astype(np.int64) \
            if model.separates_regions else probs.argmax(0)
    return answers


def _volume_probabilities(model: UNetModel, data: TrainingData, max_side: int = 256, limit: int = 4) -> list:
    """3D model: probabilities ``(K, h, w)`` of up to ``limit`` painted planes (central window)."""
    prior, model.class_prior = model.class_prior, None  # the estimate needs the network's own probabilities
    planes = []
    try:
        for i, view in enumerate(data.views):
            if len(planes) >= limit:
                break
            y0, x0 = max(0, (view.height - max_side) // 2), max(0, (view.width - max_side) // 2)
            region = (y0, min(view.height, y0 + max_side), x0, min(view.width, x0 + max_side))
            for z in data.painted_planes(i)[:limit - len(planes)]:
                planes.append(model.segment(view.source, channel_axis=view.channel_axis, plane=(int(z),),
                                            region=region, probabilities=True).probabilities)
    finally:
        model.class_prior = prior
    return planes


def decide_after_training(model: UNetModel, data: TrainingData, config: TrainConfig, may_separate: bool) -> None:
    """Decide thin separators (when ``may_separate`` and not fixed by ``config``) and their ridge
    (`separation.fit_ridge`), or estimate class frequencies, and for a 2D objects model trained
    from strokes the threshold its objects are drawn at (`objects.fit_foreground_threshold`),
    from the network's own probabilities on (a central 1024-pixel window of) up to 8 painted
    slices; all are stored on ``model``."""
    decide = may_separate and config.separate_regions is None
    use_prior = config.class_prior if config.class_prior is not None else \
        model.class_map.n_classes <= MAX_PRIOR_CLASSES
    model.info.pop("foreground_threshold", None)  # an earlier fit does not fit the new weights
    contours = (model.task.objects and model.config.dims == 2 and not model.info.get("dense")
                and config.object_threshold is None)
    if not (decide or use_prior or model.separates_regions or contours):
        model.class_prior = None  # an earlier estimate does not fit the new weights
        return
    if model.config.dims == 3:
        probs = _volume_probabilities(model, data)
    else:
        probs = [p for _, p in slice_probabilities(model, data, max_side=1024, limit=8, prior=False)]
    if decide:
        model.separates_regions = bool(probs) and separators_are_lines(probs)
        log.info("Thin separators between regions: %s", model.separates_regions)
    if model.separates_regions and config.separator_keep is None:
        model.info.pop("separator_ridge", None)  # the fixed ridge
    elif model.separates_regions and probs:
        model.separator_ridge = fit_ridge(probs, config.separator_keep)
        log.info("Thin separators at ridge %.3f", model.separator_ridge)
    if model.separates_regions and config.class_prior is None:
        use_prior = False  # the separators' decision replaces the class-frequency correction
    model.class_prior = None
    if use_prior and probs:
        model.class_prior = estimate_class_prior(probs).astype(np.float32)
        log.info("Estimated class frequencies %s", np.round(model.class_prior, 3))
    if contours and probs:
        background = list(model.class_map.ids).index(BACKGROUND)
        if model.class_prior is not None:  # as prediction will see them
            probs = [apply_class_prior(p, model.class_prior, axis=0) for p in probs]
        images = _slice_images(data, max_side=1024, limit=8)
        model.info["foreground_threshold"] = fit_foreground_threshold(
            [(p[background], image) for p, image in zip(probs, images)])
        log.info("Objects drawn where they are at least %.2f likely", model.info["foreground_threshold"])
