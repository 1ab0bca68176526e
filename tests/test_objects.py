"""Objects (instance) mode: training targets from painted objects, seeded watershed, the CLI
train/predict round trip on a real DSB 2018 image, and the plugin's mode switch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.draw import disk

from evaluation.metrics import average_precision
from src_models import Task, TrainConfig, Trainer, make_trainer
from src_models.objects import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    fill_between_strokes,
    instances_from_probabilities,
    object_border_weights,
    objects_to_classes,
)

DSB_IMAGE = "c0c4a829c8d3"  # 256 x 256, 15 nuclei in 11 connected groups: several touch


def two_touching_discs(shape=(64, 64)):
    labels = np.zeros(shape, np.uint16)
    for obj_id, cx in ((1, 22), (2, 41)):
        rr, cc = disk((32, cx), 10, shape=shape)
        labels[rr, cc] = obj_id
    assert ndimage.label(labels > 0)[1] == 1  # one connected blob
    return labels


def one_hot(classes, ids=(BACKGROUND, INTERIOR, BOUNDARY)):
    return np.stack([(classes == c).astype(np.float32) for c in ids])


def test_touching_objects_get_a_boundary_between_them():
    labels = two_touching_discs()
    classes = objects_to_classes(labels, dense=True)
    assert classes.dtype == np.uint8 and set(np.unique(classes)) == {BACKGROUND, INTERIOR, BOUNDARY}
    # the row through both centres: interior, then boundary where the discs meet, then interior
    row = classes[32, 22:42]
    assert row[0] == INTERIOR and row[-1] == INTERIOR
    assert (row == BOUNDARY).sum() >= 2
    assert (classes[labels == 0] == BACKGROUND).all()


def test_strokes_convention_keeps_strokes_inside_objects_interior():
    painted = np.zeros((40, 40), np.uint8)
    painted[5:8, 5:35] = 1          # background stroke
    painted[20:23, 10:18] = 2       # stroke inside object 2
    painted[20:23, 19:27] = 3       # object 3 touching object 2 (one pixel gap)
    classes = objects_to_classes(painted)
    assert (classes[painted == 0] == 0).all()                 # unpainted stays unpainted
    assert (classes[painted == 1] == BACKGROUND).all()
    assert classes[21, 11] == INTERIOR                        # far from other ids: interior
    assert classes[21, 17] == BOUNDARY and classes[21, 19] == BOUNDARY
    weights = object_border_weights(painted)
    assert weights.dtype == np.float32 and weights[21, 18] > 5 > weights[30, 30]


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="whole-number"):
        objects_to_classes(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="boundary_width"):
        objects_to_classes(np.zeros((4, 4), np.uint8), boundary_width=-1)
    with pytest.raises(ValueError, match="objects mode"):
        instances_from_probabilities(np.zeros((2, 4, 4)), class_ids=(1, 5))


@pytest.mark.parametrize("seeds", ["interior", "distance"])
def test_watershed_splits_two_touching_discs(seeds):
    labels = two_touching_discs()
    probs = one_hot(objects_to_classes(labels, dense=True))
    instances = instances_from_probabilities(probs, seeds=seeds, extent="foreground")
    assert instances.dtype == np.uint16 and instances.shape == labels.shape
    assert instances.max() == 2
    assert average_precision(labels, instances) == 1.0
    # without a boundary channel, a dip of the interior probability still splits them
    no_boundary = probs[:2].copy()
    no_boundary[1] = ndimage.gaussian_filter(probs[1], 1)
    no_boundary[0] = 1 - no_boundary[1] - ndimage.gaussian_filter(probs[2], 1) * 0.5
    assert instances_from_probabilities(no_boundary, class_ids=(1, 2)).max() == 2


def _dsb(shared_data):
    root = shared_data / "dsb2018"
    return (tifffile.imread(root / "images" / f"{DSB_IMAGE}.tif"),
            tifffile.imread(root / "labels" / f"{DSB_IMAGE}.tif"))


def test_instances_from_a_real_dsb_image_split_touching_nuclei(shared_data):
    _, truth = _dsb(shared_data)
    groups = ndimage.label(truth > 0)[1]
    probs = one_hot(objects_to_classes(truth, dense=True))
    instances = instances_from_probabilities(probs, min_size=4, extent="foreground")
    assert instances.max() > groups                           # touching nuclei came apart
    assert average_precision(truth, instances) > 0.8


def test_trainer_takes_pixel_weights_and_live_updates():
    labels = two_touching_discs()
    image = (labels > 0).astype(np.float32) + 0.1 * np.random.default_rng(0).random(labels.shape)
    config = TrainConfig(steps=2, patch_size=32, batch_size=2, class_prior=False, device="cpu")
    trainer = make_trainer(image, labels, task=Task("objects"), config=replace(config, dense=True))
    assert trainer.model.task.objects
    assert list(trainer.class_map.ids) == [BACKGROUND, INTERIOR, BOUNDARY]
    assert trainer.config.dense is False
    classes = objects_to_classes(labels, dense=True)
    moved = np.roll(labels, 3, axis=1)  # painted again: converted in the training thread
    trainer.update_labels(0, moved)
    result = list_run(trainer)
    assert result.steps == 2
    np.testing.assert_array_equal(trainer.labels[0], objects_to_classes(moved, dense=True))
    with pytest.raises(ValueError, match="Pixel weights have shape"):
        Trainer(image, classes, config=config, pixel_weights=[np.ones((3, 3))])


def list_run(trainer):
    gen = trainer.run()
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def test_cli_train_and_predict_objects_on_a_dsb_image(shared_data, tmp_path, capsys):
    from napari_unet.cli import main

    image, truth = _dsb(shared_data)
    root = shared_data / "dsb2018"
    labels = tmp_path / "truth.tif"
    tifffile.imwrite(labels, truth)
    model = tmp_path / "m.safetensors"
    rc = main(["train", "--objects", "--dense", "--images", str(root / "images" / f"{DSB_IMAGE}.tif"),
               "--labels", str(labels), "--out", str(model), "--steps", "25", "--patch-size", "96",
               "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    rc = main(["predict", "--model", str(model), "--images", str(root / "images" / f"{DSB_IMAGE}.tif"),
               "--out-dir", str(tmp_path / "out"), "--semantic", "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    instances = tifffile.imread(tmp_path / "out" / f"{DSB_IMAGE}_mask.tif")
    classes = tifffile.imread(tmp_path / "out" / f"{DSB_IMAGE}_classes.tif")
    assert instances.dtype in (np.uint16, np.uint32) and instances.shape == image.shape
    assert classes.shape == image.shape and set(np.unique(classes)) <= {1, 2, 3}
    assert "objects" in capsys.readouterr().out


def test_short_engine_training_predicts_several_dsb_nuclei(shared_data):
    image, truth = _dsb(shared_data)
    # class_prior off: after 25 steps its estimate can collapse to "all background" (no objects)
    config = TrainConfig(steps=25, patch_size=96, class_prior=False, device="cpu")
    result = list_run(make_trainer(image, truth, task=Task("objects"), config=replace(config, dense=True)))
    segmentation = result.model.segment(image, semantic=True)
    instances, classes = segmentation.labels, segmentation.classes
    assert instances.dtype == np.uint16 and instances.shape == classes.shape == image.shape
    assert instances.max() > 1
    assert set(np.unique(instances)) - {0} == set(range(1, int(instances.max()) + 1))   # ids 1..N


def test_plugin_objects_mode_trains_and_predicts_instances(dock, qtbot):
    labels = two_touching_discs((96, 96))
    image = (labels > 0).astype(np.float32) + 0.05 * np.random.default_rng(0).random(labels.shape)
    viewer, widget = dock(image)
    assert widget.mode() == "classes" and not widget._mode_hint.isVisible()
    widget._mode_combo.setCurrentText("objects")
    assert widget.mode() == "objects" and not widget._mode_hint.isHidden()
    annotation = widget.new_annotation_layer()
    assert annotation.data.dtype == np.uint16
    assert widget._classes.names()[1] == "background"
    painted = np.where(labels > 0, labels.astype(np.uint16) + 1, 1)    # 1 = background, 2 and 3 = objects
    annotation.data = painted
    widget._train._steps_spin.setValue(2)
    widget._train._budget_spin.setValue(20)
    widget._train._train_btn.click()
    assert widget.model is not None and widget.model.task.objects
    # strokes painted while training reach the trainer as painted, and the training thread
    # turns them into background / interior / boundary with border weights
    section = widget._train
    section._trainer = make_trainer(image, painted, task=Task("objects"), config=TrainConfig(steps=1, device="cpu"))
    section._pairs = [widget.current_pair()]
    section._schedule_push(0)
    section._push_labels()
    pushed = section._trainer.data._pending[0]
    np.testing.assert_array_equal(pushed, annotation.data)
    section._trainer.data.apply_pending()
    assert {BACKGROUND, INTERIOR, BOUNDARY} <= set(np.unique(section._trainer.labels[0]))
    assert section._trainer.data.painted.pixel_weights[0].max() > 1
    section._trainer, section._pairs = None, []
    widget._predict._predict_btn.click()
    prediction = viewer.layers["img prediction"].data
    assert prediction.shape == labels.shape and prediction.dtype in (np.uint16, np.uint32)


def test_a_boundary_ring_spread_outside_the_objects_does_not_inflate_cores():
    # a model trained from bare strokes predicts "boundary" in the unpainted band around
    # each object; objects from the interior core keep their true size
    labels = two_touching_discs()
    probs = one_hot(objects_to_classes(labels, dense=True))
    ring = ndimage.binary_dilation(labels > 0, iterations=4) & (labels == 0)
    probs[:, ring] = np.array([0.2, 0.1, 0.7])[:, None]
    instances = instances_from_probabilities(probs, extent="core")
    assert instances.max() == 2 and not instances[ring].any()
    assert average_precision(labels, instances) == 1.0
    flooded = instances_from_probabilities(probs, extent="foreground")  # right for full-mask models only
    assert flooded[ring].all() and (flooded > 0).sum() > 1.5 * (labels > 0).sum()


def test_strokes_fill_the_band_up_to_the_real_object_edges(shared_data):
    from src_models.images import ImageView, Normalization
    from evaluation.strokes import simulate_strokes

    image, truth = _dsb(shared_data)
    classes = np.where(truth > 0, 2, 1).astype(np.uint8)
    strokes = simulate_strokes(classes, (1, 2), 0.03, np.random.default_rng(1))
    painted = np.where(strokes == 1, 1, np.where(strokes == 2, truth.astype(np.int64) + 1, 0))
    view = ImageView(image, -1 if image.ndim == 3 else None)
    offset, scale = Normalization().stats(view)
    filled = fill_between_strokes((view.read(0) - offset) / scale, painted, reach=8)
    np.testing.assert_array_equal(filled[painted > 0], painted[painted > 0])  # strokes kept
    new = (filled > 0) & (painted == 0)
    assert new.sum() > 0.2 * (painted > 0).sum()
    right = np.where(truth > 0, truth.astype(np.int64) + 1, 1)
    assert (filled[new] == right[new]).mean() > 0.9
    far = ndimage.distance_transform_edt(painted == 0) > 8
    assert not filled[far].any()
    # the boundary class now sits on real edges: many more boundary pixels to learn from
    assert (objects_to_classes(filled) == BOUNDARY).sum() > 3 * (objects_to_classes(painted) == BOUNDARY).sum()


def test_deferred_fill_runs_in_the_training_loop(shared_data):
    from evaluation.strokes import simulate_strokes

    image, truth = _dsb(shared_data)
    strokes = simulate_strokes(np.where(truth > 0, 2, 1).astype(np.uint8), (1, 2), 0.03, np.random.default_rng(1))
    painted = np.where(strokes == 1, 1, np.where(strokes == 2, truth.astype(np.int64) + 1, 0)).astype(np.uint16)
    axis = -1 if image.ndim == 3 else None
    config = TrainConfig(steps=1, patch_size=64, batch_size=1, class_prior=False, device="cpu")
    eager = make_trainer(image, painted, task=Task("objects"), config=config, channel_axis=axis)
    deferred = make_trainer(image, painted, task=Task("objects"), config=config, channel_axis=axis, defer_prepare=True)
    bare = objects_to_classes(painted)
    np.testing.assert_array_equal(deferred.labels[0], bare)  # built at once from the bare strokes
    assert (eager.labels[0] > 0).sum() > (bare > 0).sum()
    list_run(deferred)
    np.testing.assert_array_equal(deferred.labels[0], eager.labels[0])  # filled before the first step
