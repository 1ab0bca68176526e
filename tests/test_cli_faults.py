"""Faults and bad input on the command line: one sentence, exit status 2, nothing lost, no
partial file. Signals go to a real subprocess."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from src_models import ClassMap, Task, TrainConfig, UNetModel, make_trainer

REPO = Path(__file__).resolve().parents[1]
FAST = ["--device", "cpu", "--quiet", "--batch-size", "2", "--patch-size", "32"]


def _blobs(size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2).astype(np.uint8)
    image = (truth * 1.0 + 0.2 * rng.random(truth.shape)).astype(np.float32)
    strokes = np.zeros_like(truth)
    strokes[4, 4:size - 4] = 1
    strokes[size // 2, size // 2 - 4:size // 2 + 4] = 2
    return image, strokes


@pytest.fixture
def files(tmp_path):
    image, strokes = _blobs()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", strokes)
    return tmp_path / "img.tif", tmp_path / "lab.tif"


@pytest.fixture
def model_file(tmp_path, files):
    path = tmp_path / "model.safetensors"
    assert main(["train", "--images", str(files[0]), "--labels", str(files[1]), "--out", str(path),
                 "--steps", "2", *FAST]) == 0
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _child(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "napari_unet.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def _wait_for(proc, needle: bytes, timeout: float = 120) -> bytes:
    """Read the child's stderr until ``needle`` appears (the progress bar of its first step)."""
    seen = bytearray()
    done = threading.Event()

    def read():
        while not done.is_set():
            chunk = proc.stderr.read1(1024)
            if not chunk:
                break
            seen.extend(chunk)
            if needle in seen:
                done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout), bytes(seen).decode(errors="replace")
    return bytes(seen)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_training_stops_after_the_step_and_saves_the_model(tmp_path, files, sig):
    out = tmp_path / "stopped.safetensors"
    proc = _child(["train", "--images", str(files[0]), "--labels", str(files[1]), "--out", str(out),
                   "--time-budget", "300", "--device", "cpu", "--batch-size", "2", "--patch-size", "32"])
    _wait_for(proc, b"train (cpu)")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()
    assert b"stopped early" in stdout and b"Traceback" not in stderr
    model = UNetModel.load(out, "cpu")
    assert model.info["steps"] >= 1


def test_a_signal_during_a_streamed_prediction_leaves_no_file_and_the_rerun_works(tmp_path, model_file):
    big = np.random.default_rng(0).random((2048, 2048)).astype(np.float32)
    tifffile.imwrite(tmp_path / "big.tif", big)
    out_dir = tmp_path / "masks"
    script = ("import sys; import src_models.io as io; io.STREAM_PIXELS = 10_000\n"
              "from napari_unet.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["predict", "--model", str(model_file), "--images", str(tmp_path / "big.tif"), "--out-dir", str(out_dir),
            "--device", "cpu", "--tile-size", "128"]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _wait_for(proc, b"tile/s")  # tiles are being predicted into the (hidden, temporary) file
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b"Traceback" not in stderr, stderr.decode()
    assert list(out_dir.iterdir()) == []  # neither a mask that looks valid nor a temporary file
    done = subprocess.run([sys.executable, "-c", script, *args, "--quiet"], cwd=REPO, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert tifffile.imread(out_dir / "big_mask.tif").shape == big.shape


@pytest.mark.parametrize("where", ["folder", "under_a_file", "proc"])
def test_an_unusable_model_path_is_refused_before_training(tmp_path, files, capsys, where):
    out = {"folder": tmp_path, "under_a_file": files[0] / "m.safetensors",
           "proc": Path("/proc/napari-unet-test/m.safetensors")}[where]
    start = time.perf_counter()
    rc = main(["train", "--images", str(files[0]), "--labels", str(files[1]), "--out", str(out),
               "--time-budget", "60", "--overwrite", *FAST])
    assert rc == 2 and time.perf_counter() - start < 20  # no training ran
    err = _error(capsys)
    assert err.startswith("napari-unet: error:") and len(err.strip().splitlines()) == 1


def test_an_output_folder_that_is_a_file_is_refused_before_predicting(tmp_path, files, model_file, capsys):
    rc = main(["predict", "--model", str(model_file), "--images", str(files[0]), "--out-dir", str(files[1]),
               "--quiet"])
    assert rc == 2 and "is a file" in _error(capsys)


def test_a_model_that_cannot_be_written_is_said_in_one_sentence_and_leaves_no_file(tmp_path, files):
    """A full disk, simulated by a file-size limit: the write fails, nothing half-written stays."""
    out = tmp_path / "full" / "m.safetensors"
    out.parent.mkdir()
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))\n"
              "from napari_unet.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", script, "train", "--images", str(files[0]), "--labels",
                           str(files[1]), "--out", str(out), "--steps", "1", *FAST], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "Could not write" in done.stderr
    assert list(out.parent.iterdir()) == []


def test_predict_never_writes_over_one_of_its_inputs(tmp_path, files, model_file, capsys):
    victim = tmp_path / "img_mask.tif"
    tifffile.imwrite(victim, np.ones((64, 64), np.float32))
    before = victim.read_bytes()
    rc = main(["predict", "--model", str(model_file), "--images", str(files[0]), str(victim), "--out-dir",
               str(tmp_path), "--overwrite", "--quiet"])
    assert rc == 2 and "is one of the input images" in _error(capsys)
    assert victim.read_bytes() == before


def test_a_nan_pixel_does_not_ruin_the_mask(tmp_path):
    image, strokes = _blobs()
    trainer = make_trainer([image], [strokes], config=TrainConfig(steps=30, batch_size=2, patch_size=32,
                                                                   device="cpu", class_prior=False))
    for _ in trainer.run():
        pass
    model = trainer.result.model
    clean = model.segment(image).labels
    spoiled = image.copy()
    spoiled[10, 10] = np.nan
    spoiled[50, 50] = np.inf
    masked = model.segment(spoiled).labels
    assert len(np.unique(clean)) == 2
    assert (masked != clean).mean() < 0.01


def test_training_on_an_image_with_nan_and_inf_pixels_neither_diverges_nor_blames_the_precision():
    image, strokes = _blobs()
    image[5:9, 5:9] = np.nan
    image[40, 40] = np.inf
    trainer = make_trainer([image], [strokes], config=TrainConfig(steps=10, batch_size=2, patch_size=32,
                                                                   device="cpu"))
    for progress in trainer.run():
        assert np.isfinite(progress.loss)
    assert trainer.result.steps == 10


@pytest.mark.parametrize("argv_tail,needle", [
    (["--time-budget", "nan"], "--time-budget"), (["--time-budget", "inf"], "--time-budget"),
    (["--seed", "-1"], "--seed"), (["--batch-size", "0"], "--batch-size"), (["--patch-size", "0"], "--patch-size"),
])
def test_numeric_train_options_out_of_range_get_a_sentence_with_the_range(files, tmp_path, capsys, argv_tail, needle):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--images", str(files[0]), "--labels", str(files[1]), "--out", str(tmp_path / "m"),
              *argv_tail])
    assert exit_.value.code == 2
    err = _error(capsys)
    assert needle in err and "from" in err


@pytest.mark.parametrize("size", ["-5", "0", "15", "64"])
def test_tile_sizes_follow_one_rule(files, model_file, tmp_path, capsys, size):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--model", str(model_file), "--images", str(files[0]), "--out-dir", str(tmp_path / "o"),
              "--tile-size", size])
    assert exit_.value.code == 2 and "must be a whole number from 96" in _error(capsys)


def test_a_tiny_time_budget_is_refused_or_still_trains_a_step(files, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    with pytest.raises(SystemExit):
        main(["train", "--images", str(files[0]), "--labels", str(files[1]), "--out", str(out),
              "--time-budget", "1e-9", *FAST])
    assert "--time-budget" in _error(capsys) and not out.exists()
    rc = main(["train", "--images", str(files[0]), "--labels", str(files[1]), "--out", str(out),
               "--time-budget", "0.001", *FAST])
    assert rc == 0 and "nan" not in capsys.readouterr().out
    assert UNetModel.load(out, "cpu").info["steps"] >= 1  # never an untrained model


def test_header_only_tiff_and_missing_or_foreign_files_get_a_sentence(tmp_path, files, model_file, capsys):
    header = tmp_path / "header.tif"
    header.write_bytes(files[0].read_bytes()[:8])
    rc = main(["predict", "--model", str(model_file), "--images", str(header), "--out-dir", str(tmp_path / "o"),
               "--quiet"])
    assert rc == 2 and "header.tif" in _error(capsys)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    for path in (tmp_path / "missing.tif", text):
        assert main(["view", str(path)]) == 2
        assert path.name in _error(capsys)


def test_lossy_colour_and_huge_label_files_are_refused(tmp_path, files, capsys):
    from skimage import io as skio

    image, strokes = _blobs()
    bad = {
        "jpeg.jpg": lambda p: skio.imsave(p, (strokes * 100).astype(np.uint8), check_contrast=False),
        "colour.png": lambda p: skio.imsave(p, np.dstack([strokes * 100] * 3).astype(np.uint8), check_contrast=False),
        "huge.tif": lambda p: tifffile.imwrite(p, np.where(strokes == 2, 4_000_000_000, strokes.astype(np.int64)).astype(np.uint32)),
    }
    for name, write in bad.items():
        path = tmp_path / name
        write(path)
        rc = main(["train", "--images", str(files[0]), "--labels", str(path), "--out",
                   str(tmp_path / "m.safetensors"), "--steps", "1", *FAST])
        assert rc == 2, name
        assert name in _error(capsys)
        assert not (tmp_path / "m.safetensors").exists()


def test_a_colour_model_refuses_a_three_plane_grey_stack(tmp_path, capsys):
    model = UNetModel.new(3, ClassMap((1, 2)), preset="small", device="cpu", seed=0)
    model.save(tmp_path / "rgb.safetensors")
    tifffile.imwrite(tmp_path / "stack.tif", np.random.default_rng(0).random((3, 64, 64)).astype(np.float32))
    rc = main(["predict", "--model", str(tmp_path / "rgb.safetensors"), "--images", str(tmp_path / "stack.tif"),
               "--out-dir", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "stack.tif" in _error(capsys)
    assert not (tmp_path / "o" / "stack_mask.tif").exists()


def test_from_a_model_of_another_task_is_refused(tmp_path, files, model_file, capsys):
    rc = main(["train", "--images", str(files[0]), "--labels", str(files[1]), "--out", str(tmp_path / "o.st"),
               "--from", str(model_file), "--objects", "--steps", "1", *FAST])
    assert rc == 2 and "classes, 2D" in _error(capsys)
    stack = np.stack([_blobs()[0]] * 4)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    tifffile.imwrite(tmp_path / "stack_lab.tif", np.stack([_blobs()[1]] * 4))
    rc = main(["train", "--images", str(tmp_path / "stack.tif"), "--labels", str(tmp_path / "stack_lab.tif"),
               "--out", str(tmp_path / "o.st"), "--from", str(model_file), "--3d", "--steps", "1", *FAST])
    err = _error(capsys)
    assert rc == 2 and "classes, 3D" in err and "--from" in err


def test_engine_settings_and_labels_out_of_range_raise_input_errors():
    from src_models import InputError

    image, strokes = _blobs()
    with pytest.raises(InputError, match="time_budget"):
        TrainConfig(time_budget=float("nan"), dense=True)
    with pytest.raises(InputError, match="preset"):
        TrainConfig(preset="huge")
    with pytest.raises(InputError, match="seed"):
        TrainConfig(seed=-1)
    for labels in (strokes.astype(str), strokes.astype(complex), strokes + 0.5):
        with pytest.raises(InputError):
            make_trainer([image], [labels], config=TrainConfig(steps=1, device="cpu"))
    trainer = make_trainer([image], [strokes], config=TrainConfig(steps=1, device="cpu", patch_size=32))
    for labels in (strokes.astype(np.int64) - 1, strokes + 0.5, np.where(strokes == 2, 4e8, strokes.astype(float))):
        with pytest.raises(InputError):
            trainer.update_labels(0, labels)


def test_every_stroke_erased_while_training_stops_it_and_keeps_the_model():
    image, strokes = _blobs()
    trainer = make_trainer([image], [strokes], config=TrainConfig(steps=1000, time_budget=None, device="cpu",
                                                                   batch_size=2, patch_size=32))
    steps = trainer.run()
    next(steps)
    trainer.update_labels(0, np.zeros_like(strokes))
    for _ in steps:
        pass
    result = trainer.result
    assert result.stopped and result.steps < 1000 and "erased" in result.message
    assert result.model.segment(image).labels.shape == image.shape


def test_the_engine_reads_no_environment_variable_and_the_faces_no_mode_string():
    engine = "\n".join(p.read_text() for p in (REPO / "src_models").glob("*.py"))
    assert "os.environ" not in engine and "getenv" not in engine
    face = "\n".join(p.read_text() for p in (REPO / "napari_unet").glob("*.py"))
    assert 'info.get("mode")' not in face and "os.environ" not in face


def test_task_mismatch_names_both_tasks():
    assert Task("objects").mismatch(Task()) is not None
    assert Task(dims=3).mismatch(Task(dims=3)) is None
    assert "objects, 2D" in Task("objects").mismatch(Task(dims=3))


if os.name != "posix":  # pragma: no cover - signals and rlimits are POSIX
    pytestmark = pytest.mark.skip("POSIX signals and resource limits")
