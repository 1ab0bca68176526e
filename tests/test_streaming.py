"""Streaming prediction: memory-mapped / zarr input, memory-mapped TIFF output (issue 6)."""
import numpy as np
import pytest
import tifffile

from napari_unet import cli
from src_models import ClassMap, InputError, TileConfig, UNetModel
from src_models import io as image_io
from src_models.io import StreamedLabels, open_image_lazily

TILE = TileConfig(tile_size=128, halo=16, blend=8, batch_size=2)


def _model():
    return UNetModel.new(1, ClassMap((1, 2, 3)), preset="small", device="cpu", seed=0, depth=2, base_width=4)


def _image(shape=(700, 900)):
    rng = np.random.default_rng(0)
    return (rng.random(shape) * 4000 + np.linspace(0, 30000, shape[-1])).astype(np.uint16)


@pytest.mark.parametrize("shape", [(700, 900), (3, 300, 400)])  # a stack: pages released slice by slice
def test_memmapped_tiff_in_and_out_equals_the_in_memory_prediction(tmp_path, shape):
    image = _image(shape)
    tifffile.imwrite(tmp_path / "big.tif", image)  # uncompressed: memory-mappable
    lazy = open_image_lazily(tmp_path / "big.tif")
    assert isinstance(lazy, np.memmap) and lazy.dtype == np.uint16
    model = _model()
    expected = model.predict(image, tile=TILE)
    with StreamedLabels(tmp_path / "mask.tif", image.shape, model.class_map.dtype) as streamed:
        out = streamed.array
        assert isinstance(out, np.memmap)
        assert model.predict(lazy, tile=TILE, out=out) is out
    del out, streamed
    written = tifffile.imread(tmp_path / "mask.tif")
    np.testing.assert_array_equal(written, expected)
    assert set(np.unique(written)) <= {1, 2, 3}


def test_compressed_tiff_opens_as_zarr_and_predicts_the_same(tmp_path):
    image = _image((2, 300, 260))  # a small stack, tiled and compressed: not memory-mappable
    tifffile.imwrite(tmp_path / "stack.tif", image, compression="zlib", tile=(64, 64))
    lazy = open_image_lazily(tmp_path / "stack.tif")
    assert not isinstance(lazy, np.ndarray) and lazy.shape == image.shape
    model = _model()
    with StreamedLabels(tmp_path / "mask.tif", image.shape, np.uint8) as streamed:
        out = model.predict(lazy, tile=TILE, out=streamed.array)
    np.testing.assert_array_equal(np.asarray(out), model.predict(image, tile=TILE))


def test_streamed_labels_refuse_to_overwrite(tmp_path):
    StreamedLabels(tmp_path / "m.tif", (10, 10), np.uint8).commit()
    with pytest.raises(InputError, match="already exists"):
        StreamedLabels(tmp_path / "m.tif", (10, 10), np.uint8)
    assert StreamedLabels(tmp_path / "m.tif", (4, 5), np.uint16, overwrite=True).commit().shape == (4, 5)


def test_cli_streams_big_images_into_an_uncompressed_tiff(tmp_path, monkeypatch, capsys):
    model = _model()
    model.save(tmp_path / "m.safetensors")
    image = _image((300, 400))
    tifffile.imwrite(tmp_path / "img.tif", image)
    monkeypatch.setattr(image_io, "STREAM_PIXELS", 10_000)  # make this small image count as big
    rc = cli.main(["predict", "--model", str(tmp_path / "m.safetensors"), "--images", str(tmp_path / "img.tif"),
                   "--out-dir", str(tmp_path / "out"), "--device", "cpu", "--quiet", "--tile-size", "128"])
    assert rc == 0 and "streamed" in capsys.readouterr().out
    with tifffile.TiffFile(tmp_path / "out" / "img_mask.tif") as tif:
        assert tif.pages[0].compression == 1  # none
        mask = tif.asarray()
    np.testing.assert_array_equal(mask, model.predict(image, tile=TileConfig(tile_size=128)))


def test_cli_reads_a_zarr_folder_small_or_streamed(tmp_path, monkeypatch):
    import zarr

    model = _model()
    model.save(tmp_path / "m.safetensors")
    image = _image((200, 260))
    z = zarr.open(str(tmp_path / "img.zarr"), mode="w", shape=image.shape, chunks=(64, 64), dtype=image.dtype)
    z[:] = image
    assert open_image_lazily(tmp_path / "img.zarr").shape == image.shape
    expected = model.predict(image, tile=TileConfig(tile_size=128))
    for limit, out_dir in ((10**9, "small"), (10_000, "big")):
        monkeypatch.setattr(image_io, "STREAM_PIXELS", limit)
        rc = cli.main(["predict", "--model", str(tmp_path / "m.safetensors"), "--images", str(tmp_path / "img.zarr"),
                       "--out-dir", str(tmp_path / out_dir), "--device", "cpu", "--quiet", "--tile-size", "128"])
        assert rc == 0
        np.testing.assert_array_equal(tifffile.imread(tmp_path / out_dir / "img_mask.tif"), expected)
