"""Projects: one training on many images, a project saved and opened again (in the plugin and
from the command line), and the faults a project folder meets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import paint

from napari_unet import cli
from src_models import InputError, Task, TrainConfig, make_trainer
from src_models.project import PROJECT_FILE, Project, ProjectImage, open_project, save_project


def _bands(height, width, order, seed):
    """A noisy image of vertical bands of three brightnesses (dark 0.1, mid 0.5, bright 0.9)
    in ``order``, and the band index (0, 1, 2) of every pixel."""
    rng = np.random.default_rng(seed)
    which = np.zeros((height, width), np.uint8)
    edges = np.linspace(0, width, len(order) + 1).astype(int)
    for k, band in enumerate(order):
        which[:, edges[k]:edges[k + 1]] = band
    image = np.array([0.1, 0.5, 0.9], np.float32)[which] + rng.normal(0, 0.04, which.shape).astype(np.float32)
    return image, which


def _strokes(which, paint_as: dict, every=10):
    """Horizontal strokes every ``every`` rows: band b painted as class ``paint_as[b]``."""
    labels = np.zeros(which.shape, np.uint8)
    for band, class_id in paint_as.items():
        rows = np.zeros(which.shape[0], bool)
        rows[every // 2::every] = True
        labels[rows[:, None] & (which == band)] = class_id
    return labels


def _train(widget, steps):
    widget._train._steps_spin.setValue(steps)
    widget._train._budget_spin.setValue(3600)
    widget._train._train_btn.click()


@pytest.fixture
def two_images(make_napari_viewer):
    """A viewer with two band images of different sizes and the panel docked (synchronous)."""
    viewer = make_napari_viewer()
    first, first_bands = _bands(96, 96, (0, 1, 2), seed=1)
    second, second_bands = _bands(72, 120, (2, 0, 1, 2), seed=2)
    viewer.add_image(first, name="first")
    viewer.add_image(second, name="second")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
    widget.threaded = False
    return viewer, widget, (first, first_bands), (second, second_bands)


def _annotate(widget, name):
    widget._image_combo.setCurrentText(name)
    return widget.new_annotation_layer()


def test_one_training_learns_from_two_images_of_different_sizes(two_images):
    viewer, widget, (first, first_bands), (second, second_bands) = two_images
    on_first = _annotate(widget, "first")
    widget._classes.add_class("bright")  # id 3, painted on the second image only
    paint(on_first, _strokes(first_bands, {0: 1, 1: 2}))
    on_second = _annotate(widget, "second")
    on_second.metadata.update(on_first.metadata)
    paint(on_second, _strokes(second_bands, {0: 1, 2: 3}))
    widget._refresh_images_list()
    listed = [widget._images_list.item(i).text() for i in range(widget._images_list.count())]
    assert len(listed) == 2 and listed[0].startswith("first: ") and "\nbackground " in listed[0]
    assert listed[1].startswith("second: ") and "bright " in listed[1] and "foreground" not in listed[1]
    assert [pair.name for pair in widget.training_pairs()] == ["first", "second"]

    widget._image_combo.setCurrentText("first")
    _train(widget, steps=80)

    assert widget.model.class_map.ids == (1, 2, 3)
    widget._predict._scope_combo.setCurrentText("Whole image")
    widget._predict._predict_btn.click()
    prediction = viewer.layers["first prediction"].data
    # the bright band of the first image is predicted as the class painted only on the second
    assert np.mean(prediction[first_bands == 2] == 3) > 0.8
    assert np.mean(prediction[first_bands == 0] == 1) > 0.8


def test_an_unticked_image_is_left_out_and_grey_with_rgb_is_refused(two_images, notifications):
    viewer, widget, (first, first_bands), (second, second_bands) = two_images
    paint(_annotate(widget, "first"), _strokes(first_bands, {0: 1, 1: 2}))
    paint(_annotate(widget, "second"), _strokes(second_bands, {0: 1, 1: 2}))
    widget._refresh_images_list()
    widget.set_ticked("second", False)  # unticked: left out, also while it is the chosen image
    assert [pair.name for pair in widget.training_pairs()] == ["first"]

    rgb = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    viewer.add_image(rgb, name="colour", rgb=True)
    paint(_annotate(widget, "colour"), _strokes(np.tile(np.arange(64) // 22, (64, 1)), {0: 1, 1: 2}))
    widget.set_ticked("second", True)
    _train(widget, steps=2)
    assert widget.model is None and widget._train.worker is None
    assert any("mix grey (first, second) and RGB (colour)" in m for m in notifications.errors())


def test_strokes_on_another_image_while_training_are_taken_up(two_images, qtbot):
    viewer, widget, (first, first_bands), (second, second_bands) = two_images
    widget.threaded = True
    widget._train.preview_interval = 0.2
    paint(_annotate(widget, "first"), _strokes(first_bands, {0: 1, 1: 2}))
    on_second = _annotate(widget, "second")
    paint(on_second, _strokes(second_bands, {0: 1}))
    viewer.layers.selection.active = on_second  # the user looks at the second image
    widget._train._steps_spin.setValue(100_000)
    widget._train._budget_spin.setValue(600)
    widget._train._train_btn.click()
    worker = widget._train.worker
    qtbot.waitUntil(lambda: widget._train.first_preview_seconds is not None, timeout=30_000)
    assert "second prediction" in viewer.layers  # the preview follows the image looked at
    paint(on_second, _strokes(second_bands, {1: 2}, every=7))
    qtbot.waitUntil(lambda: widget._train.label_pushes >= 1, timeout=10_000)
    trainer = widget._train._trainer
    # the training thread takes up the second image's new class-2 strokes at its next step
    qtbot.waitUntil(lambda: np.count_nonzero(trainer.data.labels[1] == 2) > 0, timeout=10_000)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        widget._train.stop()
    assert widget.model is not None and widget._train.worker is None


def test_save_close_open_gives_the_same_project_and_training_goes_on(two_images, make_napari_viewer, tmp_path):
    viewer, widget, (first, first_bands), (second, second_bands) = two_images
    on_first = _annotate(widget, "first")
    paint(on_first, _strokes(first_bands, {0: 1, 1: 2}))
    widget._classes.rename(2, "membrane")
    paint(_annotate(widget, "second"), _strokes(second_bands, {0: 1, 1: 2}))
    widget._image_combo.setCurrentText("first")
    widget._train._budget_spin.setValue(3600)
    _train(widget, steps=5)
    widget._predict._scope_combo.setCurrentText("Every image in the project")
    widget._predict._predict_btn.click()
    before = {name: np.array(viewer.layers[f"{name} prediction"].data) for name in ("first", "second")}
    annotations = {name: np.array(viewer.layers[f"{name} annotation"].data) for name in ("first", "second")}
    weights = {k: v.clone() for k, v in widget.model.net.state_dict().items()}

    folder = tmp_path / "my project"
    assert widget.save_project(str(folder)) == folder
    assert (folder / PROJECT_FILE).is_file()
    viewer.close()

    viewer2 = make_napari_viewer()
    _, widget2 = viewer2.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
    widget2.threaded = False
    assert widget2.open_project(str(folder)) is not None
    names = {layer.name for layer in viewer2.layers}
    assert {"first", "second", "first annotation", "second annotation"} <= names
    for name in ("first", "second"):
        assert np.array_equal(viewer2.layers[f"{name} annotation"].data, annotations[name])
    assert widget2.class_names() == {1: "background", 2: "membrane"}
    assert widget2._train._budget_spin.value() == 3600 and widget2._train._steps_spin.value() == 5
    assert widget2.model is not None and widget2.model.info["steps"] == 5
    for key, value in widget2.model.net.state_dict().items():
        assert np.array_equal(value.cpu().numpy(), weights[key].cpu().numpy()), key
    assert len(widget2.loss_history) == 5 and widget2._train._loss_plot.losses == widget2.loss_history
    widget2._predict._scope_combo.setCurrentText("Every image in the project")
    widget2._predict._predict_btn.click()
    for name in ("first", "second"):  # the same predictions, bit for bit
        assert np.array_equal(viewer2.layers[f"{name} prediction"].data, before[name])

    _train(widget2, steps=3)  # training goes on from the project's model
    assert widget2.model.info["steps"] == 8 and len(widget2.loss_history) == 8
    assert widget2.save_project(str(folder)) == folder
    assert sorted(p.name for p in (folder / "saves").iterdir()) == ["2"]  # the old save is gone


def test_dropping_the_project_file_on_napari_opens_it(two_images, make_napari_viewer, tmp_path, qtbot):
    viewer, widget, (first, first_bands), _ = two_images
    paint(_annotate(widget, "first"), _strokes(first_bands, {0: 1, 1: 2}))
    _train(widget, steps=2)
    widget.save_project(str(tmp_path / "p"))

    viewer2 = make_napari_viewer()
    _, widget2 = viewer2.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
    viewer2.open(str(tmp_path / "p" / PROJECT_FILE), plugin=None)  # as a drag and drop does
    assert "first annotation" in viewer2.layers
    qtbot.waitUntil(lambda: widget2.model is not None, timeout=5_000)  # the panel takes up the model
    assert widget2.model.info["steps"] == 2


def _small_project(tmp_path, **image_kw) -> tuple:
    image, which = _bands(64, 64, (0, 1, 2), seed=3)
    labels = _strokes(which, {0: 1, 1: 2})
    folder = tmp_path / "proj"
    project = Project(images=[ProjectImage("a", pixels=image, annotation=labels, **image_kw)], task=Task("classes"),
                      classes={1: "background", 2: "cells"}, settings={"steps": 2})
    save_project(folder, project)
    return folder, image, labels


def test_a_project_from_a_newer_version_or_no_project_is_refused_with_a_sentence(tmp_path):
    folder, _, _ = _small_project(tmp_path)
    document = json.loads((folder / PROJECT_FILE).read_text())
    document["version"] = 99
    (folder / PROJECT_FILE).write_text(json.dumps(document))
    with pytest.raises(InputError, match="newer napari-unet .* update napari-unet to open it"):
        open_project(folder)
    with pytest.raises(InputError, match="is not a napari-unet project"):
        open_project(tmp_path)


def test_a_missing_image_is_named_and_the_rest_opens(tmp_path, make_napari_viewer, notifications):
    import tifffile

    moved = tmp_path / "elsewhere.tif"
    tifffile.imwrite(moved, _bands(40, 40, (0, 1), seed=4)[0])
    folder = tmp_path / "proj"
    image, which = _bands(64, 64, (0, 1, 2), seed=3)
    save_project(folder, Project(images=[ProjectImage("gone", path=moved), ProjectImage(
        "kept", pixels=image, annotation=_strokes(which, {0: 1, 1: 2}))], classes={1: "a", 2: "b"}))
    moved.unlink()
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
    assert widget.open_project(str(folder)) is not None
    assert "kept" in viewer.layers and "kept annotation" in viewer.layers and "gone" not in viewer.layers
    assert any("'gone' was not opened" in m and "elsewhere.tif" in m for m in notifications.messages())


def test_an_annotation_whose_image_changed_opens_apart_and_a_model_that_does_not_fit_is_said(tmp_path):
    import tifffile

    path = tmp_path / "image.tif"
    image, which = _bands(64, 64, (0, 1, 2), seed=3)
    tifffile.imwrite(path, image)
    labels = _strokes(which, {0: 1, 1: 2})
    trainer = make_trainer([image], [labels], config=TrainConfig(steps=1, preset="small"))
    for _ in trainer.run():
        pass
    folder = tmp_path / "proj"
    save_project(folder, Project(images=[ProjectImage("a", path=path, annotation=labels)], classes={1: "x", 2: "y"},
                                 model=trainer.result.model))
    tifffile.imwrite(path, np.zeros((50, 70, 3), np.uint8), photometric="rgb")  # the file changed
    document = json.loads((folder / PROJECT_FILE).read_text())
    document["images"][0]["channel_axis"] = -1
    (folder / PROJECT_FILE).write_text(json.dumps(document))

    project = open_project(folder)
    assert project.images[0].annotation is None
    assert np.array_equal(project.images[0].stale_annotation, labels)  # nothing painted is lost
    assert any("has shape (64, 64) but the image now has (50, 70)" in p for p in project.problems)
    assert any("3 channel(s) but the model takes 1" in p for p in project.model_problems)


def test_an_interrupted_save_leaves_the_previous_project(tmp_path, monkeypatch):
    folder, image, labels = _small_project(tmp_path)
    import src_models.project as project_module

    def full_disk(path, labels, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(project_module, "write_labels_tiff", full_disk)
    changed = Project(images=[ProjectImage("a", pixels=image, annotation=np.zeros_like(labels))])
    with pytest.raises(InputError, match="No space left on device; free some space"):
        save_project(folder, changed)
    reopened = open_project(folder)
    assert np.array_equal(reopened.images[0].annotation, labels)
    assert sorted(p.name for p in (folder / "saves").iterdir()) == ["1"]  # no half-written save left


def test_a_folder_of_other_files_is_not_made_a_project(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds other files and is not a napari-unet project"):
        save_project(tmp_path, Project(images=[ProjectImage("a", pixels=np.zeros((8, 8), np.float32))]))


def test_command_line_trains_and_predicts_a_project(tmp_path, capsys):
    folder, image, labels = _small_project(tmp_path)
    assert cli.main(["train", "--project", str(folder), "--quiet"]) == 0
    project = open_project(folder)
    assert project.model is not None and project.model.info["steps"] == 2 and len(project.loss_history) == 2
    assert project.model.class_map.names == ("background", "cells")
    out = tmp_path / "masks"
    assert cli.main(["predict", "--project", str(folder), "--out-dir", str(out), "--quiet"]) == 0
    assert (out / "a_mask.tif").is_file()
    empty = tmp_path / "empty"
    save_project(empty, Project(images=[ProjectImage("a", pixels=image)]))
    assert cli.main(["predict", "--project", str(empty), "--out-dir", str(out)]) == 2
    assert "has no model yet" in capsys.readouterr().err



def test_a_plane_and_a_stack_train_together(tmp_path):
    plane, plane_bands = _bands(64, 80, (0, 1, 2), seed=5)
    stack = np.stack([_bands(48, 48, (1, 0), seed=6 + z)[0] for z in range(3)])
    stack_bands = np.stack([_bands(48, 48, (1, 0), seed=6 + z)[1] for z in range(3)])
    stack_labels = np.zeros(stack.shape, np.uint8)
    stack_labels[1] = _strokes(stack_bands[1], {0: 1, 1: 2})  # one painted plane of the stack
    trainer = make_trainer([plane, stack], [_strokes(plane_bands, {0: 1, 1: 2}), stack_labels],
                           config=TrainConfig(steps=3, preset="small"))
    for _ in trainer.run():
        pass
    assert trainer.result.steps == 3
    assert sorted(trainer.data.sampler._slices) == [(0, 0), (1, 1)]  # the plane and the painted slice of the stack


def test_the_list_counts_new_paint_and_new_class_names(two_images):
    viewer, widget, (first, first_bands), _ = two_images
    annotation = _annotate(widget, "first")
    paint(annotation, _strokes(first_bands, {0: 1}))
    widget._refresh_images_list()
    before = widget._images_list.item(0).text()
    paint(annotation, _strokes(first_bands, {1: 2}, every=7))  # a paint event: counted again
    widget._classes.rename(2, "membrane")
    widget._refresh_images_list()
    after = widget._images_list.item(0).text()
    assert "foreground" not in before and "membrane " in after
    assert int(after.split(": ")[1].split(" px")[0].replace(",", "")) > int(
        before.split(": ")[1].split(" px")[0].replace(",", ""))
