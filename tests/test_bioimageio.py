"""bioimage.io export: packages pass bioimageio.core's own model test on the CPU, offline."""
from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from skimage.measure import label

from napari_unet._sample_data import synthetic_nuclei
from napari_unet.cli import main
from src_models import InputError, Task, TileConfig, TrainConfig, make_trainer
from src_models.bioimageio_export import UNetProbabilities, export_bioimageio

pytest.importorskip("bioimageio.core")
from bioimageio.core import test_model as bioimageio_model_test  # noqa: E402  (not collected as a test)
from bioimageio.spec import InvalidDescr, load_description  # noqa: E402

TINY = dict(batch_size=2, patch_size=32, device="cpu", seed=0, time_budget=None, precision="fp32")


def _train(image, labels, steps=3, task=Task(), **config):
    trainer = make_trainer(image, labels, task=task, config=TrainConfig(steps=steps, **{**TINY, **config}))
    for _ in trainer.run():
        pass
    model = trainer.result.model
    model.precision = "fp32"
    return model


@pytest.fixture(scope="module")
def nuclei_model():
    image, mask = synthetic_nuclei((128, 128), n_nuclei=15, seed=2)
    strokes = np.zeros_like(mask)
    strokes[::8] = mask[::8] + 1  # thin rows of both classes
    return image, _train(image, strokes, steps=4)


def _passes(source, **kwargs):
    summary = bioimageio_model_test(source, devices=["cpu"], **kwargs)
    failed = [d.name for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    return summary


def test_a_2d_package_passes_the_model_test_and_its_output_is_the_models_prediction(nuclei_model, tmp_path):
    image, model = nuclei_model
    out = export_bioimageio(model, tmp_path / "nuclei.zip", image, authors=["A. Painter"])
    assert out.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    _passes(out)
    descr = load_description(out)
    assert not isinstance(descr, InvalidDescr)
    assert [c for c in descr.outputs[0].axes[1].channel_names] == ["class_1", "class_2"]
    assert descr.license == "BSD-3-Clause" and descr.cite[0].doi == "10.1007/978-3-319-24574-4_28"
    assert descr.authors[0].name == "A. Painter"
    assert set(descr.weights.available_formats) == {"pytorch_state_dict", "torchscript"}
    size = descr.inputs[0].axes[2].size
    assert (size.min, size.step) == (8, 8) == (2 ** model.config.depth,) * 2
    scale = descr.inputs[0].preprocessing[-2] if descr.inputs[0].preprocessing[-1].id == "ensure_dtype" \
        else descr.inputs[0].preprocessing[-1]
    assert (scale.kwargs.min_percentile, scale.kwargs.max_percentile) == (1.0, 99.8)
    # the packaged test output is what napari-unet predicts for the image (the image is the whole crop)
    with zipfile.ZipFile(out) as package:
        expected = np.load(io.BytesIO(package.read("test_output.npy")))[0]
    _, probs = model.predict(image, probabilities=True, tile=TileConfig(tile_size=256, halo=64, blend=0))
    np.testing.assert_allclose(expected[:, 32:-32, 32:-32], probs[:, 32:-32, 32:-32], atol=2e-3)
    assert (expected.argmax(0) == probs.argmax(0)).mean() > 0.99
    np.testing.assert_allclose(expected.sum(0), 1.0, atol=1e-5)


def test_the_exported_network_is_softmax_reweighted_by_the_class_prior(nuclei_model):
    _, model = nuclei_model
    assert model.class_prior is not None
    net = UNetProbabilities(class_prior=list(model.class_prior), **model.config.to_dict())
    net.net.load_state_dict(model.net.state_dict())
    net.eval()
    x = np.random.default_rng(0).random((1, 1, 32, 48), dtype=np.float32)
    import torch

    got = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, model.predict_probabilities_batch(x), atol=1e-5)


def test_an_objects_model_exports_its_three_probability_maps_to_a_folder(tmp_path):
    image, mask = synthetic_nuclei((64, 64), n_nuclei=6, seed=3)
    model = _train(image, label(mask).astype(np.uint16), steps=2, task=Task("objects"), dense=True)
    out = export_bioimageio(model, tmp_path / "objects", image)
    assert out.is_dir() and (out / "rdf.yaml").is_file() and (out / "cover.png").is_file()
    _passes(out / "rdf.yaml")
    descr = load_description(out / "rdf.yaml")
    assert [str(c) for c in descr.outputs[0].axes[1].channel_names] == [
        "background", "object_interior", "object_boundary"]
    assert "watershed" in descr.description
    assert "watershed" in (out / "README.md").read_text()


def test_a_3d_model_exports_with_z_constraints_and_passes(tmp_path):
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:8, :32, :32]
    ball = (zz - 4) ** 2 * 4 + (yy - 16) ** 2 + (xx - 16) ** 2 < 10 ** 2
    volume = (ball * 150 + 40 + rng.normal(0, 10, ball.shape)).clip(0, 255).astype(np.uint8)
    strokes = np.zeros(ball.shape, np.uint8)
    strokes[:, ::6] = np.where(ball, 2, 1)[:, ::6]
    model = _train(volume, strokes, steps=1, dims=3, patch_depth=4, z_ratio=4.0, task=Task(dims=3))
    out = export_bioimageio(model, tmp_path / "ball.zip", volume)
    _passes(out, weight_format="torchscript")
    descr = load_description(out)
    axes = {str(a.id): a for a in descr.inputs[0].axes}
    assert list(axes) == ["batch", "channel", "z", "y", "x"]
    assert axes["z"].size.step == model.config.z_multiple and axes["y"].size.step == 8
    assert descr.cite[1].doi == "10.1007/978-3-319-46723-8_49"  # the 3D U-Net
    with pytest.raises(InputError, match="volume"):
        export_bioimageio(model, tmp_path / "flat.zip", volume[0])


def test_cli_writes_a_zip_that_loads_and_refuses_an_existing_file(nuclei_model, tmp_path, capsys):
    _, model = nuclei_model
    model_file = tmp_path / "m.safetensors"
    model.save(model_file)
    out = tmp_path / "pkg" / "model.zip"
    assert main(["export-bioimageio", str(model_file), "--out", str(out), "--author", "Ann", "--author", "Bo"]) == 0
    assert str(out) in capsys.readouterr().out
    descr = load_description(out)
    assert not isinstance(descr, InvalidDescr) and [a.name for a in descr.authors] == ["Ann", "Bo"]
    before = out.stat().st_mtime_ns
    assert main(["export-bioimageio", str(model_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert err.count("\n") == 1 and out.stat().st_mtime_ns == before
    assert main(["export-bioimageio", str(model_file), "--out", str(out), "--overwrite"]) == 0
    assert out.stat().st_mtime_ns != before and not isinstance(load_description(out), InvalidDescr)
    # a folder name that is a file, and an RGB image for a grey model: one sentence each
    (tmp_path / "afile").write_text("x")
    assert main(["export-bioimageio", str(model_file), "--out", str(tmp_path / "afile"), "--overwrite"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")  # --overwrite never empties a folder of other files
    assert main(["export-bioimageio", str(model_file), "--out", str(tmp_path / "notes"), "--overwrite"]) == 2
    assert "not a bioimage.io package" in capsys.readouterr().err and (tmp_path / "notes" / "keep.txt").is_file()


def test_the_export_module_imports_neither_bioimageio_nor_a_gui_until_it_exports():
    code = ("import sys, src_models.bioimageio_export\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('bioimageio', 'napari', 'qtpy', 'PyQt5')]\n"
            "assert not bad, bad\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_missing_extra_says_what_to_install(nuclei_model, tmp_path, monkeypatch):
    image, model = nuclei_model
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # as if the extra were not installed
    with pytest.raises(InputError, match=r"napari-unet-strokes\[bioimageio\]"):
        export_bioimageio(model, tmp_path / "x.zip", image)
    assert not list(tmp_path.iterdir())


def test_widget_exports_the_model_with_the_chosen_image(dock, nuclei_model, tmp_path):
    image, model = nuclei_model
    viewer, widget = dock(image)
    assert widget.export_bioimageio(str(tmp_path / "w.zip")) is None  # no model yet: a warning, no file
    assert not (tmp_path / "w.zip").exists()
    widget.set_model(model)
    out = widget.export_bioimageio(str(tmp_path / "w.zip"))
    assert out is not None and not isinstance(load_description(out), InvalidDescr)
    assert widget._bioimageio_btn.text() == "Export to bioimage.io…"
