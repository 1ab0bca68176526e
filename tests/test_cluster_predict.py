"""Prediction on a dask.distributed LocalCluster of two processes equals single-process prediction."""
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage
from skimage import io

from napari_unet._sample_data import synthetic_nuclei
from napari_unet.cli import main
from src_models import InputError, Task, TrainConfig, UNetModel, make_trainer

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (napari-unet-strokes[cluster])")

from src_models.distributed import OBJECT_MARGIN, connect, parse_cluster, predict_on_cluster, worker_stats  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
BLOCK = 256  # a 512 x 512 image in 4 blocks
FAST = dict(batch_size=2, patch_size=64, device="cpu", preset="small", class_prior=False)


def _trained(image, labels, task, steps, **config):
    trainer = make_trainer([image], [labels], task=task, config=TrainConfig(steps=steps, **{**FAST, **config}))
    for _ in trainer.run():
        pass
    return trainer.result.model


def _labels(store: Path) -> np.ndarray:
    return zarr.open_array(str(store / "0"), mode="r")[...]


@pytest.fixture(scope="module")
def client():
    with connect("local:2") as c:
        yield c


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nuclei")
    image, mask = synthetic_nuclei((512, 512), n_nuclei=120, seed=4)
    path = folder / "nuclei.tif"
    tifffile.imwrite(path, image)
    return image, mask, path


def _check_classes_equal(client, tmp_path, image, image_path, model):
    model_path = tmp_path / "model.safetensors"
    model.save(model_path)
    model = UNetModel.load(model_path, device="cpu")
    model.separates_regions = False  # the argmax: the same bits whatever the blocks
    model.save(model_path)
    tile = model.default_tile()
    expected = model.segment(image, tile=tile).labels
    report = predict_on_cluster(client, model_path, image_path, tmp_path / "out" / "x_mask.ome.zarr", tile=tile,
                                block_size=BLOCK)
    assert report.blocks == 4 and report.predicted == 4 and report.skipped == 0
    got = _labels(report.path)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert len(np.unique(expected)) == 2  # a model that found both classes: the equality says something


def test_classes_on_two_workers_equal_single_process_on_a_synthetic_image(client, nuclei, tmp_path):
    image, mask, path = nuclei
    strokes = np.zeros_like(mask)
    strokes[::16] = mask[::16] + 1
    model = _trained(image, strokes, Task("classes"), steps=15)
    _check_classes_equal(client, tmp_path, image, path, model)


@pytest.mark.skipif(not DATA.is_dir(), reason="ISBI 2012 data not found at ../shared/data/isbi2012")
def test_classes_on_two_workers_equal_single_process_on_an_isbi_slice(client, tmp_path):
    image = io.imread(DATA / "images" / "slice_00.png")
    truth = np.where(io.imread(DATA / "labels" / "slice_00.png") == 0, 1, 2).astype(np.uint8)
    painted = np.where(np.random.default_rng(0).random(truth.shape) < 0.02, truth, 0).astype(np.uint8)
    model = _trained(image, painted, Task("classes"), steps=40, patch_size=96)
    _check_classes_equal(client, tmp_path, image, DATA / "images" / "slice_00.png", model)


def test_objects_on_two_workers_are_the_single_process_objects(client, nuclei, tmp_path):
    image, mask, path = nuclei
    truth, _ = ndimage.label(mask)
    # 80 steps: nucleus-sized objects (40 left blobs across half the image, which no block's margin can hold)
    model = _trained(image, truth, Task("objects"), steps=80, dense=True, patch_size=96)
    model_path = tmp_path / "objects.safetensors"
    model.save(model_path)
    model = UNetModel.load(model_path, device="cpu")
    tile = model.default_tile()
    expected = model.segment(image, tile=tile).labels
    report = predict_on_cluster(client, model_path, path, tmp_path / "nuclei_mask.ome.zarr", tile=tile,
                                block_size=BLOCK)
    got = _labels(report.path)
    n = int(expected.max())
    # every object cut by a block border lies within the context both blocks see: they must agree on it
    for box in ndimage.find_objects(expected):
        for side in box:
            if side.start < BLOCK < side.stop:
                assert BLOCK - OBJECT_MARGIN <= side.start and side.stop <= BLOCK + OBJECT_MARGIN
    assert n >= 20 and report.objects == len(np.unique(got)) - 1
    # objects cut by block borders (x or y = 256) are joined into one id
    assert report.objects == n
    matched = set()
    for i in range(1, n + 1):
        where = expected == i
        ids, counts = np.unique(got[where], return_counts=True)
        j = int(ids[np.argmax(counts)])
        union = np.count_nonzero(where | (got == j))
        assert j > 0 and counts.max() / union >= 0.99, f"object {i}: IoU {counts.max() / union:.3f}"
        matched.add(j)
    assert len(matched) == n  # one to one


def test_a_rerun_skips_the_blocks_already_written_and_each_worker_loads_the_model_once(client, nuclei, tmp_path):
    image, mask, path = nuclei
    strokes = np.zeros_like(mask)
    strokes[::16] = mask[::16] + 1
    model = _trained(image, strokes, Task("classes"), steps=5)
    model_path = tmp_path / "model.safetensors"
    model.save(model_path)
    target = tmp_path / "nuclei_mask.ome.zarr"

    def interrupt(done, total):
        if done == total:  # every block written, the store not yet moved into place
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_on_cluster(client, model_path, path, target, block_size=BLOCK, progress=interrupt)
    assert not target.exists()  # complete or absent
    calls = []
    report = predict_on_cluster(client, model_path, path, target, block_size=BLOCK,
                                progress=lambda d, t: calls.append((d, t)))
    assert (report.blocks, report.predicted, report.skipped) == (4, 0, 4)
    assert calls == [(4, 4)]
    expected = UNetModel.load(model_path, device="cpu").segment(image).labels
    assert np.array_equal(_labels(target), expected)
    assert not any((target / name).exists() for name in ("done", "raw", "ring"))  # helpers removed
    key = str(model_path.resolve())
    stats = list(worker_stats(client).values())
    blocks = [s["blocks"].get(key, 0) for s in stats]
    loads = [s["model_loads"].get(key, 0) for s in stats]
    assert sum(blocks) == 4  # the first run only
    assert loads == [1 if b else 0 for b in blocks]  # once per worker, not once per block


def test_cli_predicts_on_a_local_cluster_into_ome_zarr(nuclei, tmp_path, capsys):
    image, mask, path = nuclei
    strokes = np.zeros_like(mask)
    strokes[::16] = mask[::16] + 1
    model_path = tmp_path / "model.safetensors"
    _trained(image, strokes, Task("classes"), steps=3).save(model_path)
    rc = main(["predict", "--model", str(model_path), "--images", str(path), "--out-dir", str(tmp_path / "masks"),
               "--cluster", "local:1", "--block-size", "256", "--quiet"])
    assert rc == 0
    store = tmp_path / "masks" / "nuclei_mask.ome.zarr"
    assert "4 blocks" in capsys.readouterr().out
    ome = zarr.open_group(str(store), mode="r").attrs
    assert ome["multiscales"][0]["datasets"][0]["path"] == "0" and "image-label" in ome
    assert _labels(store).shape == (512, 512)


@pytest.mark.parametrize("text", ["local", "local:0", "local:two", "tcp://host", "http://host:8786", "slurm:4"])
def test_a_bad_cluster_string_gives_one_sentence(text, nuclei, tmp_path, capsys):
    with pytest.raises(InputError, match="is not a cluster"):
        parse_cluster(text)
    rc = main(["predict", "--model", str(tmp_path / "none.safetensors"), "--images", str(nuclei[2]), "--out-dir",
               str(tmp_path), "--cluster", text, "--quiet"])
    err = capsys.readouterr().err.strip()
    # checked before the (missing) model file is read
    assert rc == 2 and err.count("\n") == 0 and "is not a cluster" in err and "--cluster" in err


def test_a_missing_distributed_package_gives_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    with pytest.raises(InputError) as caught:
        with connect("local:1"):
            pass
    sentence = str(caught.value)
    assert sentence.endswith("napari-unet-strokes[cluster].") and sentence.count(". ") == 0 and "\n" not in sentence
