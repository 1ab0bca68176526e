"""The widget with its real thread worker: live previews, strokes pushed while training,
Stop, closing the viewer mid-training, and threaded prediction."""

from __future__ import annotations

import time

import numpy as np
from conftest import paint, stroke_labels
from src_models import TileConfig


def _start(widget, budget):
    widget._train._steps_spin.setValue(0)
    widget._train._budget_spin.setValue(budget)
    widget._train._train_btn.click()
    assert widget._train.worker is not None, "training did not start"
    return widget._train.worker


def test_training_thread_previews_and_takes_new_strokes(dock, nuclei, qtbot):
    image, mask = nuclei
    viewer, widget = dock(image, threaded=True)
    widget._train.preview_interval = 0.5
    annotation = widget.new_annotation_layer()
    strokes = stroke_labels(mask, every=16)
    paint(annotation, strokes)
    painted_before = annotation.data.copy()
    worker = _start(widget, budget=4)
    assert widget._train._train_btn.text() == "Stop"
    assert not widget._image_combo.isEnabled()

    qtbot.waitUntil(lambda: widget._train.first_preview_seconds is not None, timeout=30_000)
    assert "img prediction" in viewer.layers
    more = stroke_labels(mask, every=16)
    more = np.roll(more, 8, axis=0)  # strokes between the first ones
    more[strokes > 0] = 0
    paint(annotation, more)
    qtbot.waitUntil(lambda: widget._train.label_pushes >= 1, timeout=5_000)

    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert widget._train.worker is None and widget._train._train_btn.text() == "Train"
    assert widget._image_combo.isEnabled()
    assert widget.model is not None and widget.last_result.steps >= 1
    prediction = viewer.layers["img prediction"].data
    assert prediction.shape == image.shape and set(np.unique(prediction)) <= {1, 2}
    # the widget only read the strokes: the annotation holds exactly what was painted
    assert np.array_equal(annotation.data, np.where(more > 0, more, painted_before))


def test_stop_returns_within_seconds_and_keeps_model(dock, nuclei, qtbot):
    image, mask = nuclei
    viewer, widget = dock(image, threaded=True)
    paint(widget.new_annotation_layer(), stroke_labels(mask))
    worker = _start(widget, budget=600)
    qtbot.waitUntil(lambda: len(widget._train._loss_plot.losses) >= 2, timeout=60_000)

    clicked = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=20_000):
        widget._train._train_btn.click()  # the button reads "Stop" while training
    stop_seconds = time.perf_counter() - clicked

    assert stop_seconds < 15, stop_seconds
    assert widget.last_result.stopped and widget.last_result.steps >= 2
    masks = widget.model.predict(image)
    assert masks.shape == image.shape and set(np.unique(masks)) <= {1, 2}
    assert widget._train._train_btn.text() == "Train" and widget._train._train_btn.isEnabled()


def test_closing_viewer_stops_training(dock, nuclei, qtbot):
    image, mask = nuclei
    viewer, widget = dock(image, threaded=True)
    paint(widget.new_annotation_layer(), stroke_labels(mask))
    worker = _start(widget, budget=600)
    qtbot.waitUntil(lambda: len(widget._train._loss_plot.losses) >= 1, timeout=60_000)

    closed = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=20_000):
        viewer.close()
    assert time.perf_counter() - closed < 15
    assert widget._train._cancel.is_set()  # the widget saw the window close and asked to stop


def test_prediction_thread_reports_progress(dock, nuclei, qtbot):
    image, mask = nuclei
    viewer, widget = dock(image, threaded=True)
    paint(widget.new_annotation_layer(), stroke_labels(mask))
    widget.threaded = False
    widget._train._steps_spin.setValue(1)
    widget._train._train_btn.click()
    widget.threaded = True
    big = np.tile(image, (3, 3))
    viewer.add_image(big, name="big")
    widget._image_combo.setCurrentText("big")
    widget._predict._scope_combo.setCurrentText("Whole image")
    widget.tile = TileConfig(tile_size=96, halo=16, blend=8)

    widget._predict._predict_btn.click()
    worker = widget._predict.worker
    assert worker is not None and widget._predict._predict_btn.text() == "Stop"
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert widget._predict._progress.value() == 1000
    assert viewer.layers["big prediction"].data.shape == big.shape
    assert widget._predict._predict_btn.text() == "Predict"


def test_engine_notices_during_prediction_become_napari_warnings(dock, nuclei, notifications):
    # the engine calls notice() from the worker thread (e.g. GPU out of memory, smaller tiles);
    # the progress timer on the main thread shows it
    image, _ = nuclei
    viewer, widget = dock(image)
    box = widget._predict._box
    box.notice("GPU out of memory: retrying with 2 tile(s) per batch.")
    widget._predict._poll()
    assert notifications.messages()[-1] == "GPU out of memory: retrying with 2 tile(s) per batch."
    widget._predict._poll()
    assert len([m for m in notifications.messages() if m.startswith("GPU out of memory")]) == 1
