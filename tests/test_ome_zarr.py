"""OME-Zarr images in and labels out (issue "Ecosystem", item 2): read back with the ome-zarr package."""
import json
import threading

import numpy as np
import pytest
import zarr

from napari_unet import cli
from src_models import Cancelled, ClassMap, InputError, TileConfig, UNetModel
from src_models.batch import segment_file
from src_models.omezarr import labels_in_image, open_zarr_image, write_labels_zarr

ome_zarr = pytest.importorskip("ome_zarr")
from ome_zarr.format import FormatV04, FormatV05  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Label, Reader  # noqa: E402
from ome_zarr.writer import write_image  # noqa: E402

TILE = TileConfig(tile_size=128, halo=16, blend=8, batch_size=2)
NAMES = ("background", "nucleus", "edge")


def _model():
    return UNetModel.new(1, ClassMap((1, 2, 3), NAMES), preset="small", device="cpu", seed=0, depth=2,
                         base_width=4)


def _image(shape=(1, 1, 150, 190)):
    rng = np.random.default_rng(0)
    return (rng.random(shape) * 4000 + np.linspace(0, 30000, shape[-1])).astype(np.uint16)


def _write_ome(path, image, axes="tcyx", fmt=None):
    fmt = fmt or FormatV04()
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if fmt.version == "0.4" else 3)
    write_image(image, root, axes=axes, fmt=fmt, scale_factors=(2,))
    return path


def _label_nodes(path):
    return [node for node in Reader(parse_url(str(path)))() if any(isinstance(s, Label) for s in node.specs)]


def _predict(tmp_path, *args):
    return cli.main(["predict", "--model", str(tmp_path / "m.safetensors"), "--device", "cpu", "--quiet",
                     "--tile-size", "128", *map(str, args)])


@pytest.mark.parametrize("fmt", [FormatV04(), FormatV05()], ids=["ngff-0.4", "ngff-0.5"])
def test_cli_predicts_into_the_images_labels_group_read_back_by_ome_zarr(tmp_path, fmt, capsys):
    model = _model()
    model.save(tmp_path / "m.safetensors")
    image = _image()
    store = _write_ome(tmp_path / "img.ome.zarr", image, fmt=fmt)
    assert _predict(tmp_path, "--images", store, "--zarr-labels") == 0
    assert "OME-Zarr labels" in capsys.readouterr().out
    [node] = _label_nodes(store)
    assert node.metadata["name"] == "unet"
    labels = np.asarray(node.data[0])
    assert labels.shape == (1, 150, 190)  # the image's axes t, y, x without the channel
    expected = model.segment(image[0, 0], tile=TileConfig(tile_size=128)).labels
    np.testing.assert_array_equal(labels[0], expected)
    assert set(np.unique(labels)) <= {1, 2, 3}
    assert {v["class"] for v in node.metadata["properties"].values()} == set(NAMES)
    assert [a["name"] for a in node.metadata["axes"]] == ["t", "y", "x"]
    # a second run refuses to replace the labels without --overwrite, then replaces them with it
    assert _predict(tmp_path, "--images", store, "--zarr-labels") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _predict(tmp_path, "--images", store, "--zarr-labels", "--overwrite", "--label-name", "second") == 0
    assert sorted(n.metadata["name"] for n in _label_nodes(store)) == ["second", "unet"]


def test_level_1_reads_the_coarser_level_and_writes_a_new_store(tmp_path):
    model = _model()
    model.save(tmp_path / "m.safetensors")
    image = _image()
    store = _write_ome(tmp_path / "img.ome.zarr", image)
    coarse = np.asarray(next(iter(Reader(parse_url(str(store)))())).data[1])  # the image node, level 1
    assert _predict(tmp_path, "--images", store, "--level", "1", "--out-dir", tmp_path / "out") == 0
    written = tmp_path / "out" / "img_mask.ome.zarr"
    [node] = _label_nodes(written)
    labels = np.asarray(node.data[0])
    assert labels.shape == (1, 75, 95)
    np.testing.assert_array_equal(labels[0], model.segment(coarse[0, 0], tile=TileConfig(tile_size=128)).labels)
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == [1.0, 2.0, 2.0]  # lies over the full-resolution image
    assert not (store / "labels").exists()  # --out-dir leaves the image alone


def test_a_multichannel_ome_zarr_takes_its_channel_axis_from_the_metadata(tmp_path):
    model = UNetModel.new(2, ClassMap((1, 2)), preset="small", device="cpu", seed=0, depth=2, base_width=4)
    image = _image((2, 130, 140))
    store = _write_ome(tmp_path / "two.ome.zarr", image, axes="cyx")
    opened = open_zarr_image(store)
    assert opened.channel_axis == 0 and opened.data.shape == (2, 130, 140)
    segment_file(model, store, None, tile=TILE, label_name="cells")
    [node] = _label_nodes(store)
    np.testing.assert_array_equal(np.asarray(node.data[0]), model.segment(image, channel_axis=0, tile=TILE).labels)


def test_a_zarr_that_is_not_ome_or_lacks_the_level_gives_one_sentence(tmp_path, capsys):
    _model().save(tmp_path / "m.safetensors")
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    group.create_array("a", shape=(50, 50), dtype="uint8")
    assert _predict(tmp_path, "--images", tmp_path / "plain.zarr", "--out-dir", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "without OME-Zarr 'multiscales' metadata" in err and len(err.splitlines()) == 1
    store = _write_ome(tmp_path / "img.ome.zarr", _image())
    assert _predict(tmp_path, "--images", store, "--level", "5", "--zarr-labels") == 2
    err = capsys.readouterr().err.strip()
    assert "has 2 resolution level(s); choose a level from 0 to 1" in err and "--level" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    zarr.open_array(str(tmp_path / "array.zarr"), mode="w", shape=(40, 40), dtype="uint8")
    assert _predict(tmp_path, "--images", tmp_path / "array.zarr", "--zarr-labels") == 2
    assert "is not an OME-Zarr image" in capsys.readouterr().err
    assert not (store / "labels").exists()


def test_an_interrupted_write_leaves_no_visible_half_labels_group(tmp_path):
    model = _model()
    store = _write_ome(tmp_path / "img.ome.zarr", _image((1, 1, 300, 300)))
    segment_file(model, store, None, tile=TILE, label_name="first")  # a labels group that must stay as it was
    listing = json.loads((store / "labels" / ".zattrs").read_text())
    calls = []

    def stop_midway(done, total):
        calls.append(done)
        if done >= 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        segment_file(model, store, None, tile=TILE, label_name="second", progress=stop_midway)
    assert calls and max(calls) < 9  # stopped between tiles, before the end
    assert not (store / "labels" / "second").exists()
    assert json.loads((store / "labels" / ".zattrs").read_text()) == listing
    assert sorted(p.name for p in (store / "labels").iterdir()) == [".zattrs", ".zgroup", "first"]
    assert [n.metadata["name"] for n in _label_nodes(store)] == ["first"]
    # the same through a cancel event, into a new store: nothing appears
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        segment_file(model, store, tmp_path / "out" / "img_mask.ome.zarr", tile=TILE, cancel=cancel)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_bad_label_names_and_existing_labels_are_refused_before_work(tmp_path):
    store = _write_ome(tmp_path / "img.ome.zarr", _image())
    image = open_zarr_image(store)
    with pytest.raises(InputError, match="cannot name a label group"):
        labels_in_image(image, "../escape")
    write_labels_zarr(store / "labels-copy.ome.zarr", np.ones((4, 5), np.uint8))
    with pytest.raises(InputError, match="already exists") as caught:
        write_labels_zarr(store / "labels-copy.ome.zarr", np.ones((4, 5), np.uint8))
    assert caught.value.setting == "overwrite"


def test_write_labels_zarr_stores_class_names_for_the_plugins_export(tmp_path):
    labels = np.zeros((3, 20, 30), np.int32)
    labels[:, 5:10, 5:10] = 300
    path = write_labels_zarr(tmp_path / "p.ome.zarr", labels, metadata={"class_ids": [300], "class_names": ["cell"]})
    [node] = _label_nodes(path)
    assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
    data = np.asarray(node.data[0])
    assert data.dtype == np.uint16 and np.array_equal(data, labels)
    assert node.metadata["properties"] == {300: {"class": "cell"}}


def test_plugin_exports_predictions_as_ome_zarr_into_a_folder_named_zarr(dock, nuclei, tmp_path):
    from napari_unet._layers import CLASSES_KEY

    image, mask = nuclei
    viewer, widget = dock(image)
    viewer.add_labels(mask.astype(np.uint8) + 1, name="img prediction",
                      metadata={CLASSES_KEY: {1: "background", 2: "nucleus"}})
    written = widget.export_predictions(str(tmp_path / "preds.zarr"))
    assert [p.name for p in written] == ["img_prediction.ome.zarr"]
    [node] = _label_nodes(written[0])
    np.testing.assert_array_equal(np.asarray(node.data[0]), mask.astype(np.uint8) + 1)
    assert node.metadata["properties"] == {1: {"class": "background"}, 2: {"class": "nucleus"}}
