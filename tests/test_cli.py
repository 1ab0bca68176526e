"""The ``napari-unet`` command line on real files (an ISBI 2012 slice where present)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import io

from napari_unet.cli import main
from src_models import UNetModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
needs_isbi = pytest.mark.skipif(not DATA.is_dir(), reason="ISBI 2012 data not found at ../shared/data/isbi2012")


def _painted_isbi(tmp_path, seed=0):
    truth = np.where(io.imread(DATA / "labels" / "slice_00.png") == 0, 1, 2).astype(np.uint8)
    rng = np.random.default_rng(seed)
    painted = np.where(rng.random(truth.shape) < 0.02, truth, 0).astype(np.uint8)
    path = tmp_path / "slice_00_labels.tif"
    tifffile.imwrite(path, painted)
    return path


@needs_isbi
def test_cli_train_then_predict_on_an_isbi_slice(tmp_path, capsys):
    labels = _painted_isbi(tmp_path)
    model = tmp_path / "isbi.safetensors"
    rc = main(["train", "--images", str(DATA / "images" / "slice_00.png"), "--labels", str(labels),
               "--out", str(model), "--steps", "40", "--device", "cpu", "--quiet", "--batch-size", "2",
               "--patch-size", "96"])
    assert rc == 0 and model.is_file()
    assert "model written to" in capsys.readouterr().out
    out_dir = tmp_path / "masks"  # created on demand
    rc = main(["predict", "--model", str(model), "--images", str(DATA / "unlabelled" / "test_00.png"),
               str(DATA / "images" / "slice_05.png"), "--out-dir", str(out_dir), "--device", "cpu", "--quiet"])
    assert rc == 0
    for stem in ("test_00", "slice_05"):
        mask = tifffile.imread(out_dir / f"{stem}_mask.tif")
        assert mask.shape == (512, 512) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {1, 2}
    # a model that draws thin separators; --argmax gives the plain most likely class instead
    thin_model = UNetModel.load(model)
    thin_model.separates_regions = True
    thin_model.save(tmp_path / "thin.safetensors")
    for name, extra in (("thin", []), ("argmax", ["--argmax"])):
        assert main(["predict", "--model", str(tmp_path / "thin.safetensors"), "--images",
                     str(DATA / "images" / "slice_05.png"), "--out-dir", str(tmp_path / name), "--device", "cpu",
                     "--quiet", *extra]) == 0
    argmax, thin = (tifffile.imread(tmp_path / d / "slice_05_mask.tif") for d in ("argmax", "thin"))
    # less separator than the argmax; off its separators only one-pixel lines that close faint gaps
    assert (thin == 1).sum() < (argmax == 1).sum() and ((thin == 1) & (argmax == 2)).mean() < 0.02
    # never overwrites without --overwrite
    before = (out_dir / "test_00_mask.tif").stat().st_mtime_ns
    rc = main(["predict", "--model", str(model), "--images", str(DATA / "unlabelled" / "test_00.png"),
               "--out-dir", str(out_dir), "--quiet"])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert (out_dir / "test_00_mask.tif").stat().st_mtime_ns == before


def _write(path, array):
    tifffile.imwrite(path, array)
    return str(path)


@pytest.fixture
def small_files(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    labels = np.zeros((48, 48), np.uint8)
    labels[5:10, 5:20] = 1
    labels[30:35, 20:40] = 2
    return {
        "image": _write(tmp_path / "img.tif", image),
        "labels": _write(tmp_path / "lab.tif", labels),
        "empty": _write(tmp_path / "empty.tif", np.zeros((48, 48), np.uint8)),
        "one": _write(tmp_path / "one.tif", (labels > 0).astype(np.uint8)),
        "wrong": _write(tmp_path / "wrong.tif", np.ones((20, 20), np.uint8)),
        "rgb": _write(tmp_path / "rgb.tif", np.zeros((48, 48, 3), np.uint8)),
        "tmp": tmp_path,
    }


@pytest.mark.parametrize("case,message", [
    ("missing", "File not found"),
    ("unreadable", "Cannot read"),
    ("shape", "do not fit an image"),
    ("empty", "No painted pixels"),
    ("one", "Only one class"),
])
def test_cli_train_bad_input_is_one_sentence(small_files, capsys, case, message):
    f = small_files
    images, labels = f["image"], f["labels"]
    if case == "missing":
        images = str(f["tmp"] / "nope.tif")
    elif case == "unreadable":
        (f["tmp"] / "bad.png").write_bytes(b"this is not a png")
        images = str(f["tmp"] / "bad.png")
    elif case == "shape":
        labels = f["wrong"]
    else:
        labels = f[case]
    rc = main(["train", "--images", images, "--labels", labels, "--out", str(f["tmp"] / "m.safetensors"),
               "--steps", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (f["tmp"] / "m.safetensors").exists()


def test_cli_predict_bad_model_and_channel_mismatch(small_files, capsys):
    f = small_files
    rc = main(["predict", "--model", f["image"], "--images", f["image"], "--out-dir", str(f["tmp"] / "o")])
    assert rc == 2 and "not a napari-unet model" in capsys.readouterr().err
    model = str(f["tmp"] / "m.safetensors")
    assert main(["train", "--images", f["image"], "--labels", f["labels"], "--out", model, "--steps", "1",
                 "--quiet", "--device", "cpu", "--batch-size", "1", "--patch-size", "32"]) == 0
    capsys.readouterr()
    rc = main(["predict", "--model", model, "--images", f["rgb"], "--out-dir", str(f["tmp"] / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "looks like RGB" in err
    assert not (f["tmp"] / "o" / "rgb_mask.tif").exists()


def test_console_script_runs_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "napari_unet.cli", "predict", "--model",
                          str(tmp_path / "none.safetensors"), "--images", "x.tif", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Model file not found" in out.stderr and "Traceback" not in out.stderr


@needs_isbi
@pytest.mark.parametrize("extra", [[], ["--3d", "--z-ratio", "10", "--patch-depth", "4"]], ids=["2d", "3d"])
def test_cli_a_volume_with_non_contiguous_ids_trains_predicts_and_exports(tmp_path, extra):
    # six ISBI slices as a small real volume, painted on two of them, class ids 3 and 7
    planes = [io.imread(DATA / "images" / f"slice_{i:02d}.png")[:160, :160] for i in range(6)]
    truth = [io.imread(DATA / "labels" / f"slice_{i:02d}.png")[:160, :160] for i in range(6)]
    volume = tmp_path / "volume.tif"
    tifffile.imwrite(volume, np.stack(planes))
    rng = np.random.default_rng(0)
    painted = np.zeros((6, 160, 160), np.uint8)
    for z in (1, 4):
        ids = np.where(truth[z] == 0, 3, 7)
        painted[z] = np.where(rng.random(ids.shape) < 0.03, ids, 0)
    tifffile.imwrite(tmp_path / "painted.tif", painted)
    model = tmp_path / "m.safetensors"
    assert main(["train", "--images", str(volume), "--labels", str(tmp_path / "painted.tif"), "--out", str(model),
                 "--steps", "4", "--patch-size", "64", "--device", "cpu", "--quiet", *extra]) == 0
    assert UNetModel.load(model).config.dims == (3 if extra else 2)
    assert main(["predict", "--model", str(model), "--images", str(volume), "--out-dir", str(tmp_path / "out"),
                 "--device", "cpu", "--quiet"]) == 0
    with tifffile.TiffFile(tmp_path / "out" / "volume_mask.tif") as tif:
        mask, meta = tif.asarray(), tif.shaped_metadata[0]
    assert mask.shape == (6, 160, 160)  # every slice predicted, painted or not
    assert set(np.unique(mask)) <= {3, 7} and meta["class_ids"] == [3, 7]
    assert len(meta["class_names"]) == 2


def test_cli_training_from_strokes_stops_at_the_default_length_and_says_so(small_files, capsys, monkeypatch):
    import src_models.training as training

    monkeypatch.setattr(training, "STROKE_STEPS", 3)
    f = small_files
    model = str(f["tmp"] / "m.safetensors")
    assert main(["train", "--images", f["image"], "--labels", f["labels"], "--out", model, "--time-budget", "600",
                 "--quiet", "--device", "cpu", "--batch-size", "1", "--patch-size", "32"]) == 0
    assert "3 steps (the default length for strokes; --steps N trains longer)" in capsys.readouterr().out
    assert main(["train", "--images", f["image"], "--labels", f["labels"], "--out", model, "--overwrite",
                 "--steps", "5", "--quiet", "--device", "cpu", "--batch-size", "1", "--patch-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "trained: 5 steps in" in out and "default length" not in out
