"""Files complete or absent, and inputs refused with a sentence before work starts.

Writers (label TIFFs, streamed TIFFs, model files) must leave nothing partial after a full
disk, an exception or a kill; readers must turn damaged or unsuitable files into `InputError`
sentences; model files must be checked field by field, and shapes before allocation.
"""
from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from safetensors.torch import save_file

from src_models import images
from src_models.checkpoint import (
    FORMAT,
    ModelParts,
    read_metadata,
    read_model,
    write_model,
)
from src_models.classmap import MAX_CLASS_ID, ClassMap, check_label_values
from src_models.config import UNetConfig
from src_models.errors import InputError, ModelFileError, WriteError
from src_models.images import ImageView, Normalization, guess_channel_axis
from src_models.io import (
    StreamedLabels,
    check_output_folder,
    check_writable,
    open_image_lazily,
    read_image,
    read_labels,
    write_labels_tiff,
)
from src_models.model import UNet

ROOT = Path(__file__).resolve().parents[1]


def _run_limited(code: str, limit_bytes: int, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose files cannot grow beyond ``limit_bytes`` (a full disk)."""
    prelude = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], check=False, capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, "TMP": str(tmp_path)})


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- atomic label writes -------------------------------------------------------------------

def test_label_write_on_a_full_disk_leaves_nothing_and_a_rerun_succeeds(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code = f"""
        import numpy as np
        from src_models.errors import WriteError
        from src_models.io import write_labels_tiff
        noise = np.random.default_rng(0).integers(0, 200, (1000, 1000)).astype(np.uint8)  # compresses badly
        try:
            write_labels_tiff({str(out / 'mask.tif')!r}, noise)
        except WriteError as exc:
            print("WriteError:", exc)
    """
    result = _run_limited(code, 100_000, tmp_path)
    assert "WriteError: Could not write" in result.stdout, result.stderr
    assert "free some space or choose another folder." in result.stdout
    assert _files(out) == []  # neither the target nor a hidden temporary file
    write_labels_tiff(out / "mask.tif", np.ones((10, 10), np.uint8))
    assert _files(out) == ["mask.tif"]


def test_label_write_interrupted_by_ctrl_c_leaves_nothing(tmp_path):
    class InterruptingDict(dict):  # the metadata encoder asks for its items while the file is open
        def items(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_labels_tiff(tmp_path / "mask.tif", np.ones((8, 8), np.uint8), metadata={"x": InterruptingDict(a=1)})
    assert _files(tmp_path) == []


def test_label_write_refuses_to_overwrite_and_names_the_setting(tmp_path):
    write_labels_tiff(tmp_path / "m.tif", np.ones((4, 4), np.uint8))
    with pytest.raises(InputError, match="already exists") as info:
        write_labels_tiff(tmp_path / "m.tif", np.zeros((4, 4), np.uint8))
    assert info.value.setting == "overwrite" and "--" not in str(info.value)
    write_labels_tiff(tmp_path / "m.tif", np.full((4, 4), 2, np.uint8), overwrite=True)
    assert tifffile.imread(tmp_path / "m.tif").max() == 2 and _files(tmp_path) == ["m.tif"]


def test_written_labels_have_ordinary_file_permissions(tmp_path):
    path = write_labels_tiff(tmp_path / "m.tif", np.ones((4, 4), np.uint8))
    assert os.stat(path).st_mode & 0o044  # readable by others as any new file, not private like a temp file


# -- streamed labels ------------------------------------------------------------------------

def test_streamed_labels_appear_only_when_complete(tmp_path):
    with StreamedLabels(tmp_path / "mask.tif", (2, 30, 40), np.uint16, metadata={"class_ids": [1, 300]}) as out:
        assert not (tmp_path / "mask.tif").exists()  # still hidden while being filled
        out.array[1, 5:10, 5:10] = 300
    assert _files(tmp_path) == ["mask.tif"] and out.path == tmp_path / "mask.tif"
    out.array[0, 0, 0] = 1  # still usable: the map follows the renamed file
    out.array.flush()
    written = tifffile.imread(tmp_path / "mask.tif")
    assert written.dtype == np.uint16 and written[1, 5:10, 5:10].min() == 300 and written[0, 0, 0] == 1
    with tifffile.TiffFile(tmp_path / "mask.tif") as tif:
        assert tif.pages[0].compression == 1


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_streamed_labels_leave_no_file_after_an_exception(tmp_path, error):
    with pytest.raises(error), StreamedLabels(tmp_path / "mask.tif", (50, 60)) as out:
        out.array[:] = 1
        raise error("stopped half-way")
    assert _files(tmp_path) == []


def test_streamed_labels_commit_and_discard_directly(tmp_path):
    kept = StreamedLabels(tmp_path / "a.tif", (8, 8))
    assert kept.commit() is kept.array and _files(tmp_path) == ["a.tif"]
    dropped = StreamedLabels(tmp_path / "b.tif", (8, 8))
    dropped.discard()
    assert _files(tmp_path) == ["a.tif"]
    forgotten = StreamedLabels(tmp_path / "c.tif", (8, 8))
    del forgotten  # never committed: its temporary file goes with it
    assert _files(tmp_path) == ["a.tif"]


def test_streamed_labels_refuse_an_existing_file_unless_allowed(tmp_path):
    (tmp_path / "m.tif").write_bytes(b"keep me")
    with pytest.raises(InputError, match="already exists") as info:
        StreamedLabels(tmp_path / "m.tif", (8, 8))
    assert info.value.setting == "overwrite"
    assert (tmp_path / "m.tif").read_bytes() == b"keep me" and _files(tmp_path) == ["m.tif"]
    with StreamedLabels(tmp_path / "m.tif", (8, 8), overwrite=True) as out:
        out.array[:] = 3
    assert tifffile.imread(tmp_path / "m.tif").sum() == 3 * 64


def test_streamed_labels_on_a_full_disk_fail_at_once_and_leave_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code = f"""
        import numpy as np
        from src_models.errors import WriteError
        from src_models.io import StreamedLabels
        try:
            StreamedLabels({str(out / 'mask.tif')!r}, (2000, 2000), np.uint16)
        except WriteError as exc:
            print("WriteError:", exc)
        else:
            print("no error")
    """
    result = _run_limited(code, 1_000_000, tmp_path)
    assert "WriteError: Could not write" in result.stdout, result.stdout + result.stderr
    assert _files(out) == []


def test_a_killed_streaming_writer_leaves_no_target_and_does_not_block_a_rerun(tmp_path):
    target = tmp_path / "mask.tif"
    code = f"""
        import sys, time
        import numpy as np
        from src_models.io import StreamedLabels
        with StreamedLabels({str(target)!r}, (500, 500)) as out:
            out.array[:250] = 1
            print("half", flush=True)
            time.sleep(60)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not target.exists()  # a hidden temporary file may remain; nothing looks like a result
    assert all(name.startswith(".") for name in _files(tmp_path))
    with StreamedLabels(target, (500, 500)) as out:
        out.array[:] = 2
    assert tifffile.imread(target).min() == 2


# -- damaged and unsuitable input files -----------------------------------------------------

def _damaged_tiffs(folder: Path) -> dict[str, Path]:
    image = (np.arange(200 * 300) % 60000).astype(np.uint16).reshape(200, 300)
    tifffile.imwrite(folder / "plain.tif", image)
    tifffile.imwrite(folder / "tiled.tif", image, compression="zlib", tile=(64, 64))
    plain, tiled = (folder / "plain.tif").read_bytes(), (folder / "tiled.tif").read_bytes()
    cases = {"header only": plain[:8], "data cut short": plain[: len(plain) // 2],
             "compressed and cut short": tiled[: len(tiled) // 2], "empty file": b""}
    paths = {}
    for n, (name, data) in enumerate(cases.items()):
        paths[name] = folder / f"damaged{n}.tif"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("reader", [read_image, open_image_lazily, read_labels])
def test_damaged_tiffs_are_refused_with_a_sentence_by_every_reader(tmp_path, reader):
    for name, path in _damaged_tiffs(tmp_path).items():
        with pytest.raises(InputError) as info:
            reader(path)
        message = str(info.value)
        assert str(path) in message and message.count("\n") == 0, (name, message)


def test_labels_that_are_not_ids_are_refused_on_reading(tmp_path):
    from skimage import io as skio

    grey = np.zeros((20, 20), np.uint8)
    grey[5:10] = 2
    skio.imsave(tmp_path / "ok.png", grey, check_contrast=False)
    assert read_labels(tmp_path / "ok.png").max() == 2
    (tmp_path / "labels.jpg").write_bytes((tmp_path / "ok.png").read_bytes())
    tifffile.imwrite(tmp_path / "jpeg.tif", grey, compression="jpeg")
    skio.imsave(tmp_path / "rgb.png", np.stack([grey] * 3, -1), check_contrast=False)
    tifffile.imwrite(tmp_path / "fraction.tif", grey.astype(np.float32) / 3)
    tifffile.imwrite(tmp_path / "negative.tif", grey.astype(np.int16) - 1)
    tifffile.imwrite(tmp_path / "huge.tif", grey.astype(np.uint32) * 40000)
    expected = {"labels.jpg": "is a JPEG: its compression invents new label values",
                "jpeg.tif": "invents new label values", "rgb.png": "holds colours", "fraction.tif": "fractions",
                "negative.tif": "negative", "huge.tif": f"above the largest allowed id {MAX_CLASS_ID}"}
    for name, words in expected.items():
        with pytest.raises(InputError, match=words):
            read_labels(tmp_path / name)


# -- checking output paths before long work --------------------------------------------------

def test_check_writable_refuses_unusable_targets_with_a_sentence(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    bad = {tmp_path / "folder": "is a folder", tmp_path / "file" / "mask.tif": "is a file, not a folder",
           Path("/proc/napari_unet_mask.tif"): "system folder"}
    for path, words in bad.items():
        with pytest.raises(WriteError, match=words) as info:
            check_writable(path)
        assert str(path) in str(info.value) and info.value.path == path
    with pytest.raises(InputError, match="already exists") as info:
        check_writable(tmp_path / "file")
    assert info.value.setting == "overwrite"
    assert check_writable(tmp_path / "file", overwrite=True) == tmp_path / "file"
    assert check_writable(tmp_path / "new" / "deeper" / "m.tif") == tmp_path / "new" / "deeper" / "m.tif"
    assert (tmp_path / "new" / "deeper").is_dir() and _files(tmp_path / "new" / "deeper") == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write to any folder")
def test_check_writable_tries_a_real_file_in_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(WriteError, match="choose a folder you may write to"):
            check_writable(locked / "m.tif")
        with pytest.raises(WriteError):
            check_output_folder(locked / "sub")
    finally:
        locked.chmod(0o700)


def test_check_output_folder_creates_it_and_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "taken").write_bytes(b"x")
    with pytest.raises(WriteError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "taken")
    with pytest.raises(WriteError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "taken" / "below")
    with pytest.raises(WriteError, match="system folder"):
        check_output_folder("/proc/napari_unet_out")
    assert check_output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and _files(tmp_path / "a" / "b") == []


# -- label values ------------------------------------------------------------------------------

@pytest.mark.parametrize("values, words", [
    (np.array(["a", "b"]), "whole numbers"),
    (np.array([1, None], dtype=object), "whole numbers"),
    (np.array([1 + 2j]), "whole numbers"),
    (np.array([0.0, 1.5]), "fractions"),
    (np.array([0, -1]), "negative"),
    (np.array([1.0, np.nan]), "NaN or infinite"),
    (np.array([1.0, np.inf]), "NaN or infinite"),
    (np.array([1, 4e9]), "above the largest allowed id"),
    (np.array([1, 1e12]), "above the largest allowed id"),
    (np.array([1, 70000], np.uint32), "above the largest allowed id"),
])
def test_label_values_that_are_not_ids_are_refused(values, words):
    with pytest.raises(InputError, match=words):
        check_label_values(values)
    with pytest.raises(InputError, match=words):
        ClassMap.from_labels([values])


def test_class_map_never_sizes_a_table_by_an_unchecked_id():
    class_map = ClassMap((1, 2))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="above the largest allowed id"):
            class_map.to_index(np.array([[1, 4_000_000_000]], np.int64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20  # a table of 4e9 entries would be 32 GB
    np.testing.assert_array_equal(class_map.to_index(np.array([0, 1, 2, 7])), [-1, 0, 1, -1])
    np.testing.assert_array_equal(class_map.to_index(np.array([2.0, 1.0])), [1, 0])


def test_class_ids_above_the_limit_are_refused():
    assert ClassMap((1, MAX_CLASS_ID)).dtype == np.uint16
    with pytest.raises(ValueError, match="at most"):
        ClassMap((1, MAX_CLASS_ID + 1))
    with pytest.raises(ValueError, match="at most"):
        ClassMap.from_dict({"ids": [1, 2**40]})


# -- images: non-finite pixels and ambiguous channels -------------------------------------------

def test_nan_and_inf_pixels_neither_shift_the_statistics_nor_spread():
    rng = np.random.default_rng(0)
    clean = rng.normal(100, 20, (64, 64)).astype(np.float32)
    broken = clean.copy()
    broken[10, 10], broken[40, 50] = np.nan, np.inf
    norm = Normalization()
    clean_stats = norm.stats(ImageView(clean))
    view = ImageView(broken)
    stats = norm.stats(view)
    for got, want in zip(stats, clean_stats):
        np.testing.assert_allclose(got, want, rtol=0.02)
    scaled = view.read_normalized(0, stats)
    assert scaled.dtype == np.float32 and scaled.shape == (1, 64, 64) and np.isfinite(scaled).all()
    assert scaled[0, 10, 10] == 0 and scaled[0, 40, 50] == 0
    np.testing.assert_allclose(scaled[0, 20:30, 20:30], (clean[20:30, 20:30] - stats[0][0]) / stats[1][0], rtol=1e-5)
    assert np.isnan(broken[10, 10])  # the source is not changed in place
    window = view.read_normalized(0, stats, slice(5, 15), slice(5, 15))
    assert window.shape == (1, 10, 10) and window[0, 5, 5] == 0


def test_an_image_with_no_finite_pixel_gets_neutral_statistics():
    offset, scale = Normalization().stats(ImageView(np.full((16, 16), np.nan, np.float32)))
    assert offset.ravel().tolist() == [0.0] and scale.ravel().tolist() == [1.0]


def test_three_planes_are_not_taken_for_three_colours():
    with pytest.raises(InputError, match="ambiguous") as info:
        guess_channel_axis((3, 64, 64), n_channels=3)
    assert "last axis" in str(info.value)
    with pytest.raises(InputError, match="ambiguous"):
        guess_channel_axis((4, 64, 64), n_channels=4)
    assert guess_channel_axis((64, 64, 3), n_channels=3) == 2
    assert guess_channel_axis((3, 64, 64, 3), n_channels=3) == 3
    assert guess_channel_axis((2, 64, 64), n_channels=2) == 0


def test_images_module_lists_its_names_once_at_the_top():
    source = Path(images.__file__).read_text()
    assert "__all__.append" not in source
    assert set(images.__all__) >= {"ImageView", "Normalization", "guess_channel_axis", "spatial_shape"}
    assert all(hasattr(images, name) for name in images.__all__)


# -- model files -------------------------------------------------------------------------------

def _parts(seed: int = 0, **overrides) -> ModelParts:
    torch.manual_seed(seed)
    config = UNetConfig(**{"in_channels": 1, "n_classes": 2, "depth": 2, "base_width": 4, **overrides})
    return ModelParts(UNet(config), ClassMap((1, 5)), Normalization(2.0, 98.0), {"note": "hi"},
                      np.array([0.3, 0.7], np.float32))


def test_model_parts_round_trip_and_leave_no_temporary_file(tmp_path):
    parts = _parts()
    write_model(tmp_path / "m.safetensors", parts)
    assert _files(tmp_path) == ["m.safetensors"]
    back = read_model(tmp_path / "m.safetensors")
    assert back.class_map == parts.class_map and back.normalization == parts.normalization
    assert back.info == {"note": "hi"} and back.net.config == parts.net.config
    np.testing.assert_allclose(back.class_prior, [0.3, 0.7])
    for key, value in parts.net.state_dict().items():
        assert torch.equal(value, back.net.state_dict()[key])


def test_model_write_on_a_full_disk_raises_a_sentence_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code = f"""
        import torch
        from src_models.checkpoint import ModelParts, write_model
        from src_models.classmap import ClassMap
        from src_models.config import UNetConfig
        from src_models.errors import WriteError
        from src_models.images import Normalization
        from src_models.model import UNet
        parts = ModelParts(UNet(UNetConfig(1, 2, depth=3, base_width=16)), ClassMap((1, 2)), Normalization(), {{}}, None)
        try:
            write_model({str(out / 'm.safetensors')!r}, parts)
        except WriteError as exc:
            print("WriteError:", exc)
    """
    result = _run_limited(code, 50_000, tmp_path)
    assert "WriteError: Could not write the model" in result.stdout, result.stdout + result.stderr
    assert _files(out) == []


def test_checkpoint_does_not_import_the_segmenter():
    tree = ast.parse((ROOT / "src_models" / "checkpoint.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if "segmenter" in name]


def _crafted(path: Path, meta_changes: dict, state=None) -> Path:
    """A model file with the weights of `_parts` (or ``state``) and its metadata changed."""
    parts = _parts()
    write_model(path, parts)
    meta = read_metadata(path)
    for key, value in meta_changes.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    state = state if state is not None else {k: v.contiguous() for k, v in parts.net.state_dict().items()}
    save_file(state, str(path), metadata={FORMAT: json.dumps(meta)})
    return path


@pytest.mark.parametrize("changes, words", [
    ({"version": "abc"}, "invalid format version"),
    ({"version": 99}, "newer napari-unet"),
    ({"info": ["a", "list"]}, "not a mapping"),
    ({"info": "text"}, "not a mapping"),
    ({"class_prior": [1.0]}, "class prior"),
    ({"class_prior": [float("nan"), 1.0]}, "class prior"),
    ({"class_prior": [-0.5, 1.5]}, "class prior"),
    ({"classes": {"ids": [1, 2, 3]}}, "3 class ids for a network with 2 outputs"),
    ({"classes": {"ids": [1, 2**40]}}, "outside 0 to 65535"),
    ({"classes": {"ids": [-1, 2]}}, "outside 0 to 65535"),
    ({"classes": {"ids": [2, 2]}}, "the same class id twice"),
    ({"classes": {"ids": [1, 2.5]}}, "not whole numbers"),
    ({"classes": {"ids": [1, 2], "names": ["one"]}}, "class names"),
    ({"normalization": {"low": -1.0}}, "percentiles"),
    ({"normalization": {"high": 101}}, "percentiles"),
    ({"normalization": {"low": 60, "high": 40}}, "percentiles"),
    ({"normalization": {"low": "1"}}, "percentiles"),
    ({"architecture": {"depth": "2"}}, "not a whole number"),
    ({"architecture": {"base_width": 2.5}}, "not a whole number"),
    ({"architecture": {"depth": 9}}, "depth must be between 1 and 6"),
    ({"architecture": {"norm": 5}}, "not a name"),
    ({"architecture": {"norm": "layer"}}, "norm must be"),
    ({"architecture": {"dropout": "half"}}, "not a number"),
    ({"architecture": {"in_channels": 10**9}}, "above the limit"),
    ({"architecture": "unet"}, "no architecture record"),
    ({"format": "other"}, "different program"),
])
def test_every_metadata_field_is_checked_with_one_sentence(tmp_path, changes, words):
    path = _crafted(tmp_path / "m.safetensors", changes)
    with pytest.raises(ModelFileError, match=words) as info:
        read_model(path)
    assert str(info.value).count("\n") == 0 and str(path) in str(info.value)


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    parts = _parts()
    state = {k: v.contiguous() for k, v in parts.net.state_dict().items()}
    missing = dict(state)
    missing.pop("head.weight")
    with pytest.raises(ModelFileError, match="missing head.weight"):
        read_model(_crafted(tmp_path / "a.safetensors", {}, missing))
    extra = {**state, "surprise": torch.zeros(2)}
    with pytest.raises(ModelFileError, match="unexpected surprise"):
        read_model(_crafted(tmp_path / "b.safetensors", {}, extra))
    reshaped = {**state, "head.bias": torch.zeros(3)}
    with pytest.raises(ModelFileError, match=r"head.bias has shape \(3,\)"):
        read_model(_crafted(tmp_path / "c.safetensors", {}, reshaped))


def test_a_small_file_cannot_make_the_reader_allocate_a_huge_network(tmp_path):
    # about 1 MB of weights whose metadata claims the 2-billion-parameter width 128, depth 6 network
    path = _crafted(tmp_path / "m.safetensors", {"architecture": {"base_width": 128, "depth": 6}},
                    {"stem.0.weight": torch.zeros(256, 1024)})
    assert path.stat().st_size < 2 * 2**20
    code = f"""
        import resource, time
        from src_models.checkpoint import read_model
        from src_models.errors import ModelFileError
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
        try:
            read_model({str(path)!r})
        except ModelFileError as exc:
            print("refused:", exc)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # kilobytes on Linux
        print("grown MB:", grown // 1024, "seconds:", round(time.perf_counter() - start, 1))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert "refused:" in result.stdout and "do not match its architecture" in result.stdout, result.stderr
    grown, seconds = result.stdout.split("grown MB:")[1].split("seconds:")
    assert int(grown) < 500 and float(seconds) < 20
    # shapes that agree with the stated depth, but widths of a network far larger than the file
    small = {k: v.contiguous() for k, v in _parts().net.state_dict().items()}
    with pytest.raises(ModelFileError, match="do not match its architecture"):
        read_model(_crafted(tmp_path / "n.safetensors", {"architecture": {"base_width": 128}}, small))
