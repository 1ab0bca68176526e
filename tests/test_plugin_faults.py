"""Faults in the plugin: an error of any type in a worker reaches the user and the widget comes
back; strokes erased while training; exports that would collide or overwrite; damaged models."""

from __future__ import annotations

import json

import numpy as np
import tifffile
from conftest import paint, stroke_labels
from safetensors import safe_open
from safetensors.torch import save_file

from napari_unet._workers import WorkerError, start


def _raises_runtime_error():
    yield 1
    raise RuntimeError("No painted pixel left to train on.")


def test_a_runtime_error_in_a_real_thread_worker_reaches_errored_and_finished(qtbot):
    seen = {"yielded": [], "errors": [], "finished": 0}
    worker = start(_raises_runtime_error, threaded=True, yielded=seen["yielded"].append, returned=lambda _: None,
                   errored=seen["errors"].append, finished=lambda: seen.__setitem__("finished", 1))
    assert worker is not None
    # the worker starts inside `start` and may end before a waitSignal here could connect:
    # wait for the callback, which is connected before the thread starts
    qtbot.waitUntil(lambda: seen["finished"] == 1, timeout=10_000)
    assert seen["yielded"] == [1]
    assert len(seen["errors"]) == 1 and isinstance(seen["errors"][0], WorkerError)
    assert "No painted pixel" in str(seen["errors"][0])
    assert isinstance(seen["errors"][0].__cause__, RuntimeError)


def test_erasing_every_stroke_while_training_brings_the_widget_back_with_the_model(dock, nuclei, qtbot,
                                                                                 notifications):
    image, mask = nuclei
    viewer, widget = dock(image, threaded=True)
    annotation = widget.new_annotation_layer()
    paint(annotation, stroke_labels(mask))
    widget._train._steps_spin.setValue(100_000)
    widget._train._budget_spin.setValue(600)
    widget._train._train_btn.click()
    worker = widget._train.worker
    qtbot.waitUntil(lambda: len(widget._train._loss_plot.losses) >= 2, timeout=60_000)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        annotation.data = np.zeros_like(annotation.data)  # the eraser over everything
    qtbot.waitUntil(lambda: widget._train._train_btn.text() == "Train", timeout=5_000)
    assert widget._train._train_btn.isEnabled() and widget._image_combo.isEnabled()
    assert widget.model is not None and widget.last_result.stopped
    assert any("erased" in m for m in notifications.messages()), notifications.messages()


def test_export_keeps_names_apart_and_never_overwrites_a_users_file_unasked(dock, nuclei, tmp_path, notifications):
    image, mask = nuclei
    viewer, widget = dock(image)
    for n, name in enumerate(("a/b prediction", "a_b prediction", "a:b prediction")):
        viewer.add_labels(np.full(image.shape, n + 1, np.uint8), name=name)
    mine = tmp_path / "a_b_prediction.tif"
    mine.write_bytes(b"the user's own file")

    written = widget.export_predictions(str(tmp_path))

    assert mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in written) == ["a_b_prediction_2.tif", "a_b_prediction_3.tif"]
    assert [int(tifffile.imread(p).max()) for p in sorted(written)] == [2, 3]
    assert any("kept 1 existing file" in m for m in notifications.messages())
    again = widget.export_predictions(str(tmp_path), overwrite=True)
    assert len(again) == 3 and int(tifffile.imread(mine).max()) == 1


def test_loading_a_model_with_edited_metadata_notifies_and_changes_nothing(dock, nuclei, tmp_path, notifications):
    from src_models import ClassMap, UNetModel

    _, widget = dock(nuclei[0])
    good = tmp_path / "good.safetensors"
    UNetModel.new(1, ClassMap((1, 2)), preset="small", device="cpu", seed=0).save(good)
    with safe_open(str(good), framework="pt") as f:
        meta = json.loads(f.metadata()["napari-unet"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edits = {"version": "abc", "info": ["a", "list"], "class_prior": [0.5, 0.3, 0.2],
             "classes": {"ids": [1, 2, 3], "names": ["a", "b", "c"]}}
    for n, (key, value) in enumerate(edits.items()):
        path = tmp_path / f"edited_{n}.safetensors"
        save_file(tensors, str(path), metadata={"napari-unet": json.dumps({**meta, key: value})})
        assert widget.load_model(str(path)) is None, key
        assert widget.model is None
    assert len([m for m in notifications.errors() if "Could not load the model" in m]) == len(edits)


def test_precision_and_stream_folder_are_widget_settings_passed_to_the_engine(dock, nuclei, tmp_path):
    image, mask = nuclei
    viewer, widget = dock(image)
    widget._precision_combo.setCurrentText("fp32")
    assert widget._train.config().precision == "fp32"
    assert widget._train._budget_spin.text() == "default" and widget._train.config().time_budget is None
    widget._train._budget_spin.setValue(30)
    assert widget._train.config().time_budget == 30
    paint(widget.new_annotation_layer(), stroke_labels(mask))
    widget._train._steps_spin.setValue(2)
    widget._train._train_btn.click()
    assert widget.model.precision == "fp32" and not widget.model.bf16
    widget.stream_folder = tmp_path
    from napari_unet._predict_section import stream_path

    assert stream_path(widget.stream_folder, "img prediction") == tmp_path / "img_prediction.tif"


def test_engine_sentences_get_the_name_of_the_control_that_fixes_them():
    from napari_unet._messages import user_sentence
    from src_models import InputError

    try:
        try:
            raise InputError("Training diverged at step 3; train again in fp32 precision.", setting="precision")
        except InputError as engine_error:
            raise WorkerError(str(engine_error)) from engine_error
    except WorkerError as error:
        text = user_sentence(error)
    assert text.startswith("Training diverged") and text.endswith("(see Precision in 2. Model)")
    assert user_sentence(ValueError("plain")) == "plain"
