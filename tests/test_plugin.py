"""The dock widget end to end in a real napari viewer (under Xvfb), run synchronously:
paint strokes, train, see the prediction layer, accept, export, save and load models."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import paint, stroke_labels
from napari.layers import Labels

from napari_unet._widget import UNetWidget


def _train(widget, steps=3, budget=3600):
    """Train for ``steps`` steps: the budget is only a guard, so that a busy machine gives
    the same model (a 20 s budget cut the 150-step EM test short on a machine busy with a benchmark)."""
    widget._train._steps_spin.setValue(steps)
    widget._train._budget_spin.setValue(budget)
    widget._train._train_btn.click()


def test_steps_at_default_end_training_from_strokes_at_the_engines_length_and_say_so(dock, nuclei, monkeypatch):
    import src_models.training as training

    monkeypatch.setattr(training, "STROKE_STEPS", 4)
    image, mask = nuclei
    viewer, widget = dock(image)
    paint(widget.new_annotation_layer(), stroke_labels(mask))
    assert widget._train._steps_spin.text() == "default"
    _train(widget, steps=0, budget=3600)
    assert widget.last_result.steps == 4 and not widget.last_result.stopped
    assert "4 steps (the default length for strokes)" in widget._train._loss_label.text()
    _train(widget, steps=2, budget=3600)  # a number of steps set by hand: no such words
    assert widget.last_result.steps == 2 and "default length" not in widget._train._loss_label.text()


def test_widget_docks_from_manifest_and_makes_annotation_layer(dock, nuclei):
    image, _ = nuclei
    viewer, widget = dock(image)
    assert isinstance(widget, UNetWidget)
    assert widget._image_combo.currentText() == "img"
    widget._new_annotation_btn.click()
    layer = viewer.layers["img annotation"]
    assert isinstance(layer, Labels)
    assert layer.data.shape == image.shape and layer.data.dtype == np.uint8
    assert not layer.data.any()
    assert widget._annotation_combo.currentText() == "img annotation"
    assert widget._classes.names() == {1: "background", 2: "foreground"}
    assert layer.selected_label == 2
    # the device is shown, and devices this machine lacks cannot be chosen
    import torch

    assert widget._device_label.text() in {"→ cpu", "→ cuda", "→ mps"}
    cuda_row = [widget._device_combo.itemText(i) for i in range(widget._device_combo.count())].index("cuda")
    assert widget._device_combo.model().item(cuda_row).isEnabled() == torch.cuda.is_available()


def test_train_shows_prediction_and_leaves_annotation_untouched(dock, nuclei):
    image, mask = nuclei
    viewer, widget = dock(image)
    annotation = widget.new_annotation_layer()
    paint(annotation, stroke_labels(mask))
    painted = annotation.data.copy()

    _train(widget, steps=3)

    prediction = viewer.layers["img prediction"]
    assert isinstance(prediction, Labels)
    assert prediction.data.shape == image.shape
    assert set(np.unique(prediction.data)) <= {1, 2}
    assert annotation.data.tobytes() == painted.tobytes()
    assert widget.model is not None and widget.last_result.steps == 3
    assert len(widget._train._loss_plot.losses) == 3
    assert widget._train._progress.value() == 1000
    assert widget._train._train_btn.text() == "Train" and widget._train.worker is None
    assert widget._train.first_preview_seconds is not None
    assert prediction.get_color(2) == pytest.approx(annotation.get_color(2))
    assert "3 steps" in widget._train._loss_label.text()
    # the brush keeps painting the annotation, whose strokes stay drawn above the prediction
    assert viewer.layers.selection.active.name == annotation.name
    assert viewer.layers.index(prediction) < viewer.layers.index(annotation)


@pytest.mark.parametrize(
    "strokes, expected",
    [(lambda m: np.zeros(m.shape, np.uint8), "No painted pixels"),
     (lambda m: (stroke_labels(m) > 0).astype(np.uint8) * 2, "Only one class")],
    ids=["nothing-painted", "one-class"],
)
def test_unusable_strokes_notify_and_start_no_worker(dock, nuclei, notifications, strokes, expected):
    image, mask = nuclei
    viewer, widget = dock(image, threaded=True)
    annotation = widget.new_annotation_layer()
    paint(annotation, strokes(mask))

    widget._train._train_btn.click()

    assert any(expected in message for message in notifications.errors()), notifications.messages()
    assert widget._train.worker is None and not widget._train.running
    assert widget._train._train_btn.text() == "Train" and widget._train._train_btn.isEnabled()
    assert "img prediction" not in viewer.layers


def test_train_without_annotation_layer_warns(dock, nuclei, notifications):
    viewer, widget = dock(nuclei[0])
    widget._train._train_btn.click()
    assert any("annotation layer" in m for m in notifications.messages())
    assert widget.model is None


def test_stack_whole_and_current_slice(dock, nuclei):
    image, mask = nuclei
    stack = np.stack([image, image[::-1], image[:, ::-1]]).astype(np.uint16) * 100
    masks = np.stack([mask, mask[::-1], mask[:, ::-1]])
    viewer, widget = dock(stack)
    annotation = widget.new_annotation_layer()
    assert annotation.data.shape == stack.shape
    strokes = stroke_labels(masks)
    strokes[1:] = 0  # strokes on the first slice only
    paint(annotation, strokes)
    _train(widget, steps=2)
    assert viewer.layers["img prediction"].data.shape == stack.shape

    viewer.layers.remove("img prediction")
    viewer.dims.set_current_step(0, 1)
    widget._predict._scope_combo.setCurrentText("Current slice")
    widget._predict._predict_btn.click()
    current = viewer.layers["img prediction"].data
    assert current.shape == stack.shape
    assert current[1].all() and not current[0].any() and not current[2].any()

    widget._predict._scope_combo.setCurrentText("Whole image")
    widget._predict._predict_btn.click()
    whole = viewer.layers["img prediction"].data
    assert all(whole[z].all() for z in range(3))
    assert set(np.unique(whole)) <= {1, 2}
    assert widget._predict._progress.value() == 1000


@pytest.mark.parametrize("kind", ["rgb", "float"])
def test_rgb_and_float_images(dock, nuclei, kind):
    image, mask = nuclei
    if kind == "rgb":
        data = np.stack([image, 255 - image, image // 2], axis=-1)
    else:
        data = image.astype(np.float32) / 255.0
    viewer, widget = dock(data)
    annotation = widget.new_annotation_layer()
    assert annotation.data.shape == mask.shape
    paint(annotation, stroke_labels(mask))
    _train(widget, steps=2)
    assert widget.model.config.in_channels == (3 if kind == "rgb" else 1)
    prediction = viewer.layers["img prediction"].data
    assert prediction.shape == mask.shape and prediction.all()


def test_accept_fills_only_unpainted_pixels(dock, nuclei):
    image, mask = nuclei
    viewer, widget = dock(image)
    annotation = widget.new_annotation_layer()
    strokes = stroke_labels(mask)
    paint(annotation, strokes)
    _train(widget, steps=2)
    prediction = viewer.layers["img prediction"].data.copy()
    # a prediction that disagrees with every painted pixel must still not overwrite them
    viewer.layers["img prediction"].data = np.where(strokes > 0, 3 - strokes, prediction).astype(np.uint8)

    filled = widget._predict.accept()

    painted = strokes > 0
    assert np.array_equal(annotation.data[painted], strokes[painted])
    assert np.array_equal(annotation.data[~painted], prediction[~painted])
    assert filled == int((~painted).sum())
    annotation.undo()
    assert np.array_equal(annotation.data, strokes)


def test_predict_can_average_eight_orientations(dock, nuclei):
    image, mask = nuclei
    viewer, widget = dock(image)
    paint(widget.new_annotation_layer(), stroke_labels(mask))
    _train(widget, steps=40)
    plain = widget.model.predict(image)
    smoothed = widget.model.predict(image, tile=widget.model.default_tile(tta=True))
    assert not np.array_equal(plain, smoothed)  # the two differ for this model, so the check below can fail
    widget._predict._scope_combo.setCurrentText("Whole image")
    widget._predict._tta_check.setChecked(True)
    widget._predict._predict_btn.click()
    np.testing.assert_array_equal(viewer.layers["img prediction"].data, smoothed)


def test_model_save_load_predict_gives_same_masks(dock, nuclei, tmp_path):
    image, mask = nuclei
    viewer, widget = dock(image)
    paint(widget.new_annotation_layer(), stroke_labels(mask))
    widget._classes.rename(2, "nucleus")
    _train(widget, steps=2)
    widget._predict._scope_combo.setCurrentText("Whole image")
    widget._predict._predict_btn.click()
    before = viewer.layers["img prediction"].data.copy()

    path = widget.save_model(str(tmp_path / "model.safetensors"))
    assert path and (tmp_path / "model.safetensors").stat().st_size > 0
    widget.set_model(None)
    assert widget.model is None
    viewer.layers.remove("img prediction")
    loaded = widget.load_model(path)
    assert loaded is widget.model and "nucleus" in loaded.class_map.names
    widget._predict._predict_btn.click()
    assert np.array_equal(viewer.layers["img prediction"].data, before)


def test_loading_a_foreign_file_notifies(dock, nuclei, tmp_path, notifications):
    _, widget = dock(nuclei[0])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    assert widget.load_model(str(junk)) is None
    assert widget.model is None
    assert any("Could not load the model" in m for m in notifications.errors())


def test_predict_all_open_images_and_export(dock, nuclei, tmp_path):
    image, mask = nuclei
    viewer, widget = dock(image)
    viewer.add_image(image[::-1].copy(), name="other")
    widget._image_combo.setCurrentText("img")
    paint(widget.new_annotation_layer(), stroke_labels(mask))
    _train(widget, steps=2)
    widget._predict._scope_combo.setCurrentText("All open images")
    widget._predict._predict_btn.click()
    assert viewer.layers["other prediction"].data.shape == image.shape

    written = widget.export_predictions(str(tmp_path))

    assert sorted(p.name for p in written) == ["img_prediction.tif", "other_prediction.tif"]
    for path, name in zip(sorted(written), ["img prediction", "other prediction"]):
        back = tifffile.imread(path)
        assert back.dtype == np.uint8
        assert np.array_equal(back, viewer.layers[name].data)


def test_class_table_adds_renames_and_selects(dock, nuclei, tmp_path):
    image, mask = nuclei
    viewer, widget = dock(image)
    annotation = widget.new_annotation_layer()
    new_id = widget._classes.add_class()
    assert new_id == 3 and annotation.selected_label == 3
    widget._classes._table.item(2, 1).setText("debris")
    assert widget._classes.names()[3] == "debris"
    widget._classes.select(1)
    assert annotation.selected_label == 1
    strokes = stroke_labels(mask)
    strokes[40:42, 10:30] = 3
    paint(annotation, strokes)
    _train(widget, steps=2)
    assert widget.model.class_map.ids == (1, 2, 3)
    assert widget.model.class_map.names == ("background", "foreground", "debris")
    # the names travel into the exported TIFF, by Export and by napari's own File > Save
    widget._predict._predict_btn.click()
    exported = widget.export_predictions(str(tmp_path))[0]
    saved = viewer.layers["img prediction"].save(str(tmp_path / "saved.tif"), plugin="napari-unet-strokes")
    for path in (exported, saved[-1]):
        with tifffile.TiffFile(path) as tif:
            meta = tif.shaped_metadata[0]
        assert meta["class_ids"] == [1, 2, 3]
        assert meta["class_names"] == ["background", "foreground", "debris"]


def test_sample_image_opens_from_manifest_and_is_picked(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
    viewer.open_sample("napari-unet-strokes", "nuclei")
    layer = viewer.layers["nuclei (synthetic)"]
    assert layer.data.shape == (256, 256) and layer.data.dtype == np.uint8
    assert widget._image_combo.currentText() == "nuclei (synthetic)"


def test_live_preview_covers_the_field_of_view_of_a_wide_image(dock, nuclei):
    image, mask = nuclei
    wide, wide_mask = np.tile(image, (1, 13))[:, :1200], np.tile(mask, (1, 13))[:, :1200]
    viewer, widget = dock(wide)
    paint(widget.new_annotation_layer(), stroke_labels(wide_mask))
    _train(widget, steps=1)
    # the whole plane is in view, but a preview is cut to 1024 columns around the centre
    predicted_columns = np.nonzero(viewer.layers["img prediction"].data.any(axis=0))[0]
    assert (predicted_columns.min(), predicted_columns.max()) == (88, 88 + 1024 - 1)


def test_panel_scrolls_instead_of_clipping_in_a_short_window(dock, nuclei, qtbot):
    image, mask = nuclei
    viewer, widget = dock(image)
    annotation = widget.new_annotation_layer()
    for _ in range(4):
        widget._classes.add_class()
    paint(annotation, stroke_labels(mask))
    _train(widget, steps=2)  # the finished-training panel is the tallest
    widget.resize(widget.width(), 400)
    widget.show()
    qtbot.wait(50)
    table = widget._classes
    assert widget._scroll.verticalScrollBar().maximum() > 0  # taller than the dock: it scrolls
    assert table.height() >= table.sizeHint().height()  # every class row stays visible


def test_big_image_streams_into_a_memory_mapped_tiff(dock, nuclei, tmp_path, monkeypatch):
    import dask.array as da

    from src_models import io as image_io

    image, mask = nuclei
    stack = np.stack([image, image[::-1], image[:, ::-1]]).astype(np.uint16) * 100
    viewer, widget = dock(da.from_array(stack, chunks=(1, 48, 48)))  # a lazy layer
    paint(widget.new_annotation_layer(), np.stack([stroke_labels(mask), 0 * mask, 0 * mask]))
    _train(widget, steps=2)
    monkeypatch.setattr(image_io, "STREAM_PIXELS", 10_000)  # this stack now counts as big
    widget.stream_folder = tmp_path
    widget._predict._scope_combo.setCurrentText("Whole image")
    widget._predict._predict_btn.click()

    data = viewer.layers["img prediction"].data
    assert isinstance(data, np.memmap) or isinstance(data.base, np.memmap)  # read from the file, not loaded
    with tifffile.TiffFile(tmp_path / "img_prediction.tif") as tif:
        assert tif.pages[0].compression == 1  # uncompressed, memory-mappable
        assert tif.shaped_metadata[0]["class_ids"] == [1, 2]
        on_disk = tif.asarray()
    np.testing.assert_array_equal(on_disk, np.asarray(data))
    expected = widget.model.predict(stack, tile=widget.tile)
    np.testing.assert_array_equal(on_disk, expected)


def test_training_on_a_lazy_stack_reads_only_the_planes_it_needs(dock, nuclei):
    import dask.array as da

    image, mask = nuclei
    planes = 64
    stack = np.stack([image] * planes).astype(np.uint16)
    read = set()

    def record(block, block_info=None):
        if block_info:
            read.add(block_info[0]["chunk-location"][0])
        return block

    lazy = da.from_array(stack, chunks=(1, *image.shape)).map_blocks(record, dtype=stack.dtype)
    viewer, widget = dock(lazy)
    strokes = np.zeros(stack.shape, np.uint8)
    strokes[5] = stroke_labels(mask)
    paint(widget.new_annotation_layer(), strokes)
    read.clear()
    _train(widget, steps=2)
    assert widget.model is not None and widget.model.info["steps"] == 2
    assert 5 in read
    # intensity statistics from every 4th plane (16), the painted plane, the previewed plane: not all 64
    assert len(read) <= 18


CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist")


def test_camvid_rgb_frame_with_eleven_named_classes(shared_data, dock, tmp_path):
    """A real CamVid frame (RGB, 11 classes): names and colours go from the class table
    through the model to the prediction layer and the exported TIFF."""
    from skimage import io

    from evaluation.strokes import simulate_strokes

    name = "0001TP_006690.png"
    frame = io.imread(shared_data / "camvid" / "images" / name)[:192, :256]
    truth = io.imread(shared_data / "camvid" / "labels" / name)[:192, :256].astype(np.uint8) + 1
    truth[truth == 12] = 0  # void: never painted
    viewer, widget = dock(frame, rgb=True)
    annotation = widget.new_annotation_layer()
    for label_id, class_name in enumerate(CAMVID_CLASSES, start=1):
        if label_id > 2:
            assert widget._classes.add_class() == label_id
        widget._classes.rename(label_id, class_name)
    painted = simulate_strokes(truth, [i for i in range(1, 12) if (truth == i).any()], 0.03, rng=0)
    paint(annotation, painted)
    _train(widget, steps=3)

    present = tuple(int(i) for i in np.unique(painted) if i)
    assert len(present) >= 5
    assert widget.model.class_map.ids == present
    assert widget.model.class_map.names == tuple(CAMVID_CLASSES[i - 1] for i in present)
    widget._predict._scope_combo.setCurrentText("Whole image")
    widget._predict._predict_btn.click()
    prediction = viewer.layers["img prediction"]
    assert prediction.data.shape == truth.shape and set(np.unique(prediction.data)) <= set(present)
    for label_id in present:  # same id, same colour as the brush that painted it
        np.testing.assert_allclose(prediction.get_color(label_id), annotation.get_color(label_id))
    with tifffile.TiffFile(widget.export_predictions(str(tmp_path))[0]) as tif:
        meta = tif.shaped_metadata[0]
    assert meta["class_ids"] == list(present)
    assert meta["class_names"] == [CAMVID_CLASSES[i - 1] for i in present]


def test_3d_network_on_a_stack_trains_previews_and_predicts(dock, nuclei):
    image, mask = nuclei
    stack = np.stack([image, image[::-1], image[:, ::-1], image]).astype(np.uint16) * 100
    viewer, widget = dock(stack, scale=(3.0, 1.0, 1.0))  # Z voxels 3 times as deep as wide
    assert widget._volume_check.isEnabled() and widget.z_ratio() == 3.0
    widget._z_ratio_spin.setValue(2.5)
    widget.set_busy(True)
    widget.set_busy(False)
    assert widget.z_ratio() == 2.5 and widget._z_ratio_spin.isEnabled()  # the user's value stays
    widget._z_ratio_spin.setValue(3.0)
    annotation = widget.new_annotation_layer()
    strokes = np.zeros(stack.shape, np.uint8)
    strokes[0] = stroke_labels(mask)
    paint(annotation, strokes)
    widget._volume_check.setChecked(True)
    _train(widget, steps=2)
    assert widget.model.config.dims == 3 and "3D" in widget._model_label.text()
    assert widget.model.config.z_pooling == (1, 2, 2)  # Z pooled once Y and X have caught up
    assert widget._train.first_preview_seconds is not None  # the live preview ran on a slab of planes
    shown = int(viewer.dims.current_step[0])
    assert viewer.layers["img prediction"].data[shown].any()  # the plane on screen

    viewer.layers.remove("img prediction")
    viewer.dims.set_current_step(0, 2)
    widget._predict._scope_combo.setCurrentText("Current slice")
    widget._predict._predict_btn.click()
    current = viewer.layers["img prediction"].data
    assert current[2].all() and not current[[0, 1, 3]].any()
    widget._predict._scope_combo.setCurrentText("Whole image")
    widget._predict._predict_btn.click()
    whole = viewer.layers["img prediction"].data
    assert whole.shape == stack.shape and all(whole[z].all() for z in range(4))

    model = widget.model
    widget._volume_check.setChecked(False)
    widget.set_model(model)  # e.g. loaded from a file: the box follows the model
    assert widget.volume()
    widget.set_mode("objects")  # 3D is for classes mode
    assert not widget._volume_check.isEnabled() and not widget.volume()


def test_membranes_on_a_real_em_slice_come_out_as_thin_lines_between_cells(shared_data, dock):
    """Strokes on a real ISBI crop: after training the model draws membranes as thin separators,
    says so, and the prediction keeps less membrane than the plain most likely class."""
    from skimage import io

    from evaluation.strokes import simulate_strokes

    root = shared_data / "isbi2012"
    image = io.imread(root / "images" / "slice_00.png")[:256, :256]
    truth = np.where(io.imread(root / "labels" / "slice_00.png")[:256, :256] == 0, 1, 2).astype(np.uint8)
    viewer, widget = dock(image)
    annotation = widget.new_annotation_layer()
    paint(annotation, simulate_strokes(truth, (1, 2), 0.03, rng=0))
    _train(widget, steps=150)
    assert widget.model.separates_regions
    assert "thin lines" in widget._train._loss_label.text()
    widget._predict._scope_combo.setCurrentText("Whole image")
    widget._predict._predict_btn.click()
    thin = viewer.layers["img prediction"].data
    argmax = widget.model.predict(image, probabilities=True)[1].argmax(0) + 1
    assert set(np.unique(thin)) == {1, 2}
    # less separator than the argmax; off its separators only one-pixel lines that close faint gaps
    assert (thin == 1).mean() < (argmax == 1).mean() and ((thin == 1) & (argmax == 2)).mean() < 0.02
