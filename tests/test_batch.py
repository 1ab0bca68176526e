"""The engine's batch segmentation on real files: which images a folder gives, which masks are
written or skipped and why, cancelling between tiles, and objects mode's classes file."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile

from napari_unet._sample_data import synthetic_nuclei
from src_models import (
    InputError,
    Task,
    TrainConfig,
    list_images,
    make_trainer,
    mask_path,
    segment_file,
    segment_files,
)

FAST = dict(steps=3, batch_size=2, patch_size=32, device="cpu", preset="small")


def _train(task=Task("classes")):
    image, mask = synthetic_nuclei((64, 64), n_nuclei=6, seed=3)
    strokes = np.zeros_like(mask)
    strokes[::8] = mask[::8] + 1  # thin rows: 1 background, 2 nucleus
    trainer = make_trainer([image], [strokes], task=task, config=TrainConfig(**FAST))
    for _ in trainer.run():
        pass
    return trainer.result.model


@pytest.fixture(scope="module")
def model():
    return _train()


def _images(folder, n, shape=(48, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image, _ = synthetic_nuclei(shape, n_nuclei=4, seed=i)
        paths.append(folder / f"img_{i:02d}.tif")
        tifffile.imwrite(paths[-1], image)
    return paths


def _hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_a_folder_lists_its_images_sorted_without_masks_hidden_files_or_other_files(tmp_path):
    for name in ("b.png", "a.tif", "c.JPG", "d.tiff", "a_mask.tif", "a_classes.tif", ".a.tif.1234.tmp.tif",
                 "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.tif").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.tif", "b.png", "c.JPG", "d.tiff"]
    assert [p.name for p in list_images(tmp_path / "*.tif*")] == ["a.tif", "d.tiff"]


def test_an_empty_folder_or_a_pattern_matching_nothing_is_one_sentence(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match=r"^No images in .*; choose another folder or pattern\.$"):
        list_images(tmp_path)
    with pytest.raises(InputError, match="No images"):
        list_images(tmp_path / "*.png")
    with pytest.raises(InputError, match="neither a folder nor a file pattern"):
        list_images(tmp_path / "missing")


def test_masks_are_written_like_the_command_line_and_unusable_images_are_skipped_with_a_sentence(tmp_path, model):
    paths = _images(tmp_path / "in", 3)
    rgb = tmp_path / "in" / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((48, 48, 3), np.uint8))
    broken = tmp_path / "in" / "broken.tif"
    broken.write_bytes(b"II*\x00 this is not really a TIFF")
    out = tmp_path / "out"
    seen = []
    report = segment_files(model, [*paths, rgb, broken], out, progress=lambda *a: seen.append(a))
    assert report.written == [mask_path(out, p) for p in paths] and not report.cancelled
    assert [s.path for s in report.skipped] == [rgb, broken]
    assert "looks like RGB" in report.skipped[0].reason and "damaged" in report.skipped[1].reason
    for path in paths:
        mask = tifffile.imread(mask_path(out, path))
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, model.segment(tifffile.imread(path)).labels)
    assert seen[-1][:2] == (5, 5) and [s[0] for s in seen] == sorted(s[0] for s in seen)
    assert sorted(p.name for p in out.iterdir()) == [f"img_0{i}_mask.tif" for i in range(3)]


def test_existing_masks_are_skipped_unless_overwrite_and_stay_unchanged(tmp_path, model):
    paths = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    segment_files(model, paths, out)
    before = {p: p.read_bytes() for p in out.iterdir()}
    tifffile.imwrite(next(iter(before)), np.full((48, 48), 7, np.uint8))  # a mask edited by hand
    edited = {p: p.read_bytes() for p in out.iterdir()}
    report = segment_files(model, paths, out)
    assert report.written == [] and len(report.skipped) == 2
    assert all(s.setting == "overwrite" and "exists (overwrite not allowed)" in s.reason for s in report.skipped)
    assert {p: p.read_bytes() for p in out.iterdir()} == edited
    report = segment_files(model, paths, out, overwrite=True)
    assert len(report.written) == 2 and {p: p.read_bytes() for p in out.iterdir()} == before


def test_a_mask_that_would_replace_an_input_refuses_the_whole_batch(tmp_path, model):
    folder = tmp_path / "in"
    paths = _images(folder, 1)
    victim = folder / "img_00_mask.tif"  # an input named like the first image's mask
    tifffile.imwrite(victim, np.ones((48, 48), np.uint8))
    with pytest.raises(InputError, match="is one of the input images; choose another output folder"):
        segment_files(model, [*paths, victim], folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["img_00.tif", "img_00_mask.tif"]
    assert np.all(tifffile.imread(victim) == 1)


def test_cancel_stops_between_tiles_keeps_the_masks_written_and_leaves_nothing_half_written(tmp_path, model):
    paths = _images(tmp_path / "in", 8)
    out = tmp_path / "out"
    cancel = threading.Event()

    def progress(files_done, n_files, tiles_done, tiles_total):
        if files_done == 5:  # as the sixth image starts: it is dropped at its first tile batch
            cancel.set()

    report = segment_files(model, paths, out, progress=progress, cancel=cancel)
    assert report.cancelled and report.total == 8
    assert report.written == [mask_path(out, p) for p in paths[:5]] and report.skipped == []
    assert sorted(p.name for p in out.iterdir()) == [f"img_0{i}_mask.tif" for i in range(5)]
    assert _hidden(out) == []


def test_objects_mode_writes_instance_ids_and_the_classes_file(tmp_path):
    model = _train(Task("objects"))
    image_path = _images(tmp_path, 1, shape=(64, 64))[0]
    target = tmp_path / "out" / "img_00_mask.tif"
    target.parent.mkdir()
    result = segment_file(model, image_path, target, semantic=True)
    instances = tifffile.imread(target)
    classes = tifffile.imread(tmp_path / "out" / "img_00_classes.tif")
    assert instances.dtype == np.uint16 and instances.shape == classes.shape == (64, 64)
    np.testing.assert_array_equal(instances, result.labels)
    assert set(np.unique(classes)) <= set(model.class_map.ids)
    # a batch with semantic skips an image whose classes file exists, without overwrite
    (tmp_path / "out" / "img_00_mask.tif").unlink()
    report = segment_files(model, [image_path], tmp_path / "out", semantic=True)
    assert report.written == [] and "img_00_classes.tif exists" in report.skipped[0].reason
