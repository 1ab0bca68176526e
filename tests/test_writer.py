"""The manifest's labels writer: napari saves a labels layer to a TIFF that reads back equal."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet._writer import write_labels


@pytest.mark.parametrize("top, dtype", [(2, np.uint8), (300, np.uint16)])
def test_writer_round_trip(tmp_path, top, dtype):
    labels = np.zeros((2, 40, 50), dtype=np.int32)
    labels[:, 5:20, 10:30] = top
    labels[1, 25:35, 5:15] = 1
    [written] = write_labels(str(tmp_path / "masks.tiff"), labels, {"name": "masks"})
    back = tifffile.imread(written)
    assert back.dtype == dtype
    assert np.array_equal(back, labels)
    with tifffile.TiffFile(written) as tif:
        assert tif.pages[0].compression.name in {"ADOBE_DEFLATE", "DEFLATE"}


def test_writer_adds_tif_suffix(tmp_path):
    [written] = write_labels(str(tmp_path / "masks"), np.ones((8, 8), np.uint8), {})
    assert written.endswith("masks.tif")
    assert tifffile.imread(written).sum() == 64


def test_viewer_saves_labels_layer_through_plugin(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = np.zeros((32, 48), dtype=np.uint8)
    data[4:12, 6:30] = 2
    viewer.add_labels(data, name="pred")
    target = tmp_path / "pred.tif"
    saved = viewer.layers.save(str(target), selected=False, plugin="napari-unet-strokes")
    assert [str(target)] == [str(p) for p in saved]
    assert np.array_equal(tifffile.imread(target), data)
