"""The folder panel in a real napari viewer: a folder of real TIFF files segmented by a small
trained model into mask files, with no layer added; existing masks, images the model cannot
take and a missing model each end in one sentence."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet._folder_widget import FILE_MODEL, PANEL_MODEL, FolderWidget
from napari_unet._sample_data import synthetic_nuclei
from src_models import TrainConfig, make_trainer

N_IMAGES = 20


@pytest.fixture(scope="module")
def trained():
    """A small grey 2D model trained for a few steps on strokes of the synthetic nuclei."""
    image, mask = synthetic_nuclei((64, 64), n_nuclei=6, seed=3)
    strokes = np.zeros_like(mask)
    strokes[::8] = mask[::8] + 1
    trainer = make_trainer([image], [strokes], config=TrainConfig(steps=3, batch_size=2, patch_size=32,
                                                                   device="cpu", preset="small"))
    for _ in trainer.run():
        pass
    return trainer.result.model


@pytest.fixture
def folder(tmp_path):
    """Twenty 48x48 grey TIFFs in ``tmp_path/images``."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(N_IMAGES):
        tifffile.imwrite(images / f"cell_{i:02d}.tif", synthetic_nuclei((48, 48), n_nuclei=4, seed=i)[0])
    return images


def _panels(make_napari_viewer, model=None, threaded=False):
    """A viewer with the U-Net panel (holding ``model``) and the folder panel, both docked through the manifest."""
    viewer = make_napari_viewer()
    _, unet = viewer.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
    unet.model = model
    _, panel = viewer.window.add_plugin_dock_widget("napari-unet-strokes", "Segment a folder (U-Net)")
    panel.threaded = threaded
    return viewer, panel


def _set(panel, images, out, *, overwrite=False):
    panel._input.value = images
    panel._output.value = out
    panel._overwrite.value = overwrite


def test_the_panels_model_segments_a_folder_into_masks_without_adding_a_layer(make_napari_viewer, folder, tmp_path,
                                                                               trained, notifications):
    viewer, panel = _panels(make_napari_viewer, trained)
    out = tmp_path / "masks"
    _set(panel, folder, out)
    assert isinstance(panel, FolderWidget) and not panel._overwrite.value  # never overwrites without the tick
    panel._run.native.click()
    assert len(viewer.layers) == 0
    report = panel.last_report
    assert len(report.written) == N_IMAGES and report.skipped == [] and not report.cancelled
    assert sorted(p.name for p in out.iterdir()) == [f"cell_{i:02d}_mask.tif" for i in range(N_IMAGES)]
    for i in (0, 19):  # the same masks as the model gives on the image itself
        image = tifffile.imread(folder / f"cell_{i:02d}.tif")
        np.testing.assert_array_equal(tifffile.imread(out / f"cell_{i:02d}_mask.tif"), trained.segment(image).labels)
    assert notifications.messages()[-1] == f"{N_IMAGES} written, 0 skipped."
    assert panel._progress.value == 1000 and panel._run.enabled and not panel._stop.enabled

    # again without Overwrite: every image skipped, every mask left as it was
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    panel._run.native.click()
    assert len(panel.last_report.skipped) == N_IMAGES and panel.last_report.written == []
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert notifications.messages()[-1] == (f"0 written, {N_IMAGES} skipped: {N_IMAGES} mask(s) exist; "
                                            "tick Overwrite to replace them")
    assert len(viewer.layers) == 0


def test_images_the_model_cannot_take_are_skipped_with_a_sentence(make_napari_viewer, folder, tmp_path, trained,
                                                                  notifications):
    model_file = tmp_path / "grey.safetensors"
    trained.save(model_file)
    for i in range(2):  # colour images for a grey model
        tifffile.imwrite(folder / f"colour_{i}.tif", np.zeros((48, 48, 3), np.uint8), photometric="rgb")
    viewer, panel = _panels(make_napari_viewer)  # the U-Net panel has no model: the file is used
    out = tmp_path / "masks"
    _set(panel, folder, out)
    panel._pattern.value = "colour_*.tif"
    panel._model_choice.value = FILE_MODEL
    panel._model_file.value = model_file
    panel._run.native.click()
    report = panel.last_report
    assert report.written == [] and [s.path.name for s in report.skipped] == ["colour_0.tif", "colour_1.tif"]
    message = notifications.messages()[-1]
    assert message.startswith("0 written, 2 skipped: colour_0.tif: ") and "looks like RGB" in message
    assert not out.exists() or list(out.iterdir()) == []


def test_without_any_model_one_sentence_and_no_worker(make_napari_viewer, folder, tmp_path, notifications):
    viewer, panel = _panels(make_napari_viewer)
    _set(panel, folder, tmp_path / "masks")
    assert panel._model_choice.value == PANEL_MODEL and panel._model_file.value is None
    assert panel.run() is False
    assert panel.worker is None and panel.last_report is None
    assert notifications.messages()[-1] == "There is no model: train one in the U-Net panel, or choose a model file."
    assert not (tmp_path / "masks").exists()


def test_a_missing_folder_or_output_is_one_sentence(make_napari_viewer, folder, tmp_path, trained, notifications):
    viewer, panel = _panels(make_napari_viewer, trained)
    assert panel.run() is False
    assert notifications.messages()[-1] == "Choose the folder of images to segment under Images folder."
    panel._input.value = folder
    assert panel.run() is False
    assert notifications.messages()[-1] == "Choose the folder the masks go to under Output folder."
    panel._output.value = tmp_path / "masks"
    panel._pattern.value = "*.png"
    assert panel.run() is False
    assert notifications.messages()[-1].startswith("No images in the files matching")
    assert panel.last_report is None


def test_a_model_file_that_is_not_a_model_notifies_and_the_panel_comes_back(make_napari_viewer, folder, tmp_path,
                                                                            notifications):
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a model")
    viewer, panel = _panels(make_napari_viewer)
    _set(panel, folder, tmp_path / "masks")
    panel._model_file.value = fake  # the panel has no model: the file is the fallback
    assert panel.run() is True
    assert notifications.errors() and notifications.errors()[-1].startswith("Segmenting the folder failed: ")
    assert panel.worker is None and panel._run.enabled and panel.last_report is None


def test_stop_in_a_real_thread_keeps_the_masks_written_and_leaves_no_partial_file(make_napari_viewer, folder,
                                                                                tmp_path, trained, qtbot,
                                                                                notifications):
    viewer, panel = _panels(make_napari_viewer, trained, threaded=True)
    out = tmp_path / "masks"
    _set(panel, folder, out)
    assert panel.run() is True
    worker = panel.worker
    assert worker is not None and panel._stop.enabled and not panel._run.enabled
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        panel._stop.native.click()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=10_000)
    report = panel.last_report
    assert report.cancelled and len(report.written) < N_IMAGES
    assert sorted(out.iterdir()) == sorted(report.written)  # complete masks only, no hidden temporary file
    for path in report.written:
        assert tifffile.imread(path).shape == (48, 48)
    assert notifications.messages()[-1].startswith(f"Stopped after {len(report.written)} of {N_IMAGES} images")
    assert panel._run.enabled and not panel._stop.enabled
