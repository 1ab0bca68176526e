"""Objects drawn where the image's edges are: the foreground threshold a model trained from
strokes fits to its painted images (`objects.fit_foreground_threshold`), stored with the model
and used by prediction."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.draw import disk

from evaluation.metrics import average_precision
from src_models import Task, TrainConfig, UNetModel, fit
from src_models.errors import InputError
from src_models.objects import (
    BACKGROUND,
    FOREGROUND_THRESHOLDS,
    fit_foreground_threshold,
    instance_defaults,
    instances_from_probabilities,
)

DSB_IMAGE = "c0c4a829c8d3"


def bright_discs(shape=(96, 96), radius=8):
    truth = np.zeros(shape, np.uint16)
    for obj_id, (cy, cx) in enumerate(((24, 24), (24, 70), (70, 30), (68, 68)), start=1):
        rr, cc = disk((cy, cx), radius, shape=shape)
        truth[rr, cc] = obj_id
    image = ndimage.gaussian_filter(np.where(truth > 0, 1.0, 0.1).astype(np.float32), 1.0)
    return image, truth


def probabilities_reaching_out(truth, reach):
    """Background / interior / boundary whose 0.5 contour lies ``reach`` pixels outside the objects."""
    inside = truth > 0
    signed = ndimage.distance_transform_edt(~inside) - ndimage.distance_transform_edt(inside)
    p_object = 1.0 / (1.0 + np.exp((signed - reach) / 1.5))
    return np.stack([1.0 - p_object, p_object, np.zeros_like(p_object)]).astype(np.float32)


def test_objects_drawn_too_large_are_drawn_on_the_edges_at_the_fitted_threshold():
    image, truth = bright_discs()
    probs = probabilities_reaching_out(truth, reach=4.0)
    at_half = instances_from_probabilities(probs)
    assert average_precision(truth, at_half) == 0.0  # every disc grown past IoU 0.5
    threshold = fit_foreground_threshold([(probs[0], image)])
    assert threshold > 0.8 and threshold in FOREGROUND_THRESHOLDS
    fitted = instances_from_probabilities(probs, foreground_threshold=threshold)
    assert average_precision(truth, fitted) == 1.0
    assert abs(int((fitted > 0).sum()) - int((truth > 0).sum())) < 0.25 * (truth > 0).sum()


def test_contours_already_on_the_edges_keep_one_half():
    image, truth = bright_discs()
    probs = probabilities_reaching_out(truth, reach=0.0)
    assert fit_foreground_threshold([(probs[0], image[None])]) == 0.5  # (C, H, W) images too
    assert fit_foreground_threshold([(np.ones_like(image), image)]) == 0.5  # no object anywhere


def test_bad_thresholds_are_refused():
    image, truth = bright_discs()
    probs = probabilities_reaching_out(truth, reach=0.0)
    with pytest.raises(ValueError, match="foreground_threshold"):
        instances_from_probabilities(probs, foreground_threshold=0.3)
    with pytest.raises(ValueError, match="differ in shape"):
        fit_foreground_threshold([(probs[0], image[:50])])
    with pytest.raises(InputError, match="object_threshold"):
        TrainConfig(object_threshold=0.2)


def test_a_model_trained_from_strokes_stores_its_threshold_and_predicts_with_it(shared_data, tmp_path):
    from evaluation.strokes import simulate_strokes

    root = shared_data / "dsb2018"
    image = tifffile.imread(root / "images" / f"{DSB_IMAGE}.tif")
    truth = tifffile.imread(root / "labels" / f"{DSB_IMAGE}.tif")
    strokes = simulate_strokes(np.where(truth > 0, 2, 1).astype(np.uint8), (1, 2), 0.03, np.random.default_rng(1))
    painted = np.where(strokes == 1, 1, np.where(strokes == 2, truth.astype(np.int64) + 1, 0)).astype(np.uint16)
    axis = -1 if image.ndim == 3 else None
    config = TrainConfig(steps=30, patch_size=64, batch_size=2, device="cpu")
    model = fit(image, painted, task=Task("objects"), config=config, channel_axis=axis).model
    threshold = model.info["foreground_threshold"]
    assert threshold in FOREGROUND_THRESHOLDS
    model.save(tmp_path / "nuclei.pt")
    loaded = UNetModel.load(tmp_path / "nuclei.pt", device="cpu")
    assert instance_defaults(loaded)["foreground_threshold"] == threshold
    probs = loaded.segment(image, channel_axis=axis, probabilities=True).probabilities
    expected = instances_from_probabilities(probs, list(loaded.class_map.ids), foreground_threshold=threshold)
    np.testing.assert_array_equal(loaded.segment(image, channel_axis=axis).labels, expected)
    assert list(loaded.class_map.ids).index(BACKGROUND) == 0

    fixed = fit(image, painted, task=Task("objects"), config=TrainConfig(**{**config.to_dict(), "object_threshold": 0.7}),
                channel_axis=axis).model
    assert "foreground_threshold" not in fixed.info
    assert instance_defaults(fixed)["foreground_threshold"] == 0.7
    assert instance_defaults(fixed, foreground_threshold=0.6)["foreground_threshold"] == 0.6  # the caller wins
