"""Overlap-tile prediction: exactness, stacks, RGB, lazy arrays, cancellation."""
import threading

import dask.array as da
import numpy as np
import pytest
import torch

from src_models import Cancelled, ClassMap, InputError, TileConfig, UNet, UNetConfig, UNetModel
from src_models.tiling import blend_weights, predict_tiled, read_mirrored, tile_starts


def _reader(image):
    return lambda ys, xs: image[:, ys, xs]


def test_tile_starts_cover_and_stay_aligned():
    starts = tile_starts(320, 96)
    assert starts[0] == 0 and starts[-1] + 96 == 320
    covered = np.zeros(320, bool)
    for s in starts:
        covered[s:s + 96] = True
    assert covered.all()
    assert all(s % 32 == 0 for s in tile_starts(320, 96))  # multiples of the pooling factor
    assert tile_starts(50, 64) == [0]


def test_blend_weights_are_one_on_the_core_and_fade_in_the_halo():
    w = blend_weights(8, 4, 2)
    assert w.shape == (16,)
    assert np.all(w[4:12] == 1) and np.all(w[:2] == 0) and 0 < w[3] < 1 and w[2] < w[3]


@pytest.mark.parametrize("shape", [(1, 100, 77), (3, 64, 64), (2, 17, 300)])
@pytest.mark.parametrize("blend", [0, 8])
def test_pointwise_predictor_is_reproduced_exactly(shape, blend):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    out = predict_tiled(lambda b: b + 1, _reader(image), shape[1], shape[2], shape[0],
                        tile_size=48, halo=12, blend=blend, batch_size=3, multiple=8)
    np.testing.assert_allclose(out, image + 1, rtol=0, atol=1e-6)


def test_region_prediction_matches_the_whole():
    image = np.random.default_rng(1).random((1, 90, 70)).astype(np.float32)
    fn = lambda b: np.concatenate([b, b * 2], axis=1)  # noqa: E731
    whole = predict_tiled(fn, _reader(image), 90, 70, 2, tile_size=40, halo=8, blend=4, multiple=4)
    part = predict_tiled(fn, _reader(image), 90, 70, 2, tile_size=40, halo=8, blend=4, multiple=4,
                         region=(30, 61, 0, 70))
    np.testing.assert_allclose(part, whole[:, 30:61], atol=1e-6)


def test_mirror_padding_reflects_at_the_border():
    image = np.arange(20, dtype=np.float32).reshape(1, 4, 5)
    block = read_mirrored(_reader(image), 4, 5, -2, 6, -1, 5)
    assert block.shape == (1, 8, 6)
    np.testing.assert_array_equal(block[0, 2:6, 1:6], image[0])
    np.testing.assert_array_equal(block[0, 1, 1:], image[0, 1])  # row -1 mirrors row 1


def test_tiled_unet_equals_a_whole_image_pass():
    torch.manual_seed(0)
    net = UNet(UNetConfig(1, 3, depth=2, base_width=4)).eval()
    model = UNetModel(net, ClassMap((1, 2, 3)), device="cpu")
    image = np.random.default_rng(2).random((1, 75, 90)).astype(np.float32)
    halo = (net.receptive_radius() // 4 + 1) * 4  # covers the receptive field, aligned to pooling
    tiled = predict_tiled(model.predict_probabilities_batch, _reader(image), 75, 90, 3,
                          tile_size=2 * halo + 32, halo=halo, blend=0, multiple=4)
    # whole image, mirrored by the same halo and rounded up to the pooling factor
    padded = read_mirrored(_reader(image), 75, 90, -halo, 76 + halo, -halo, 92 + halo)
    whole = model.predict_probabilities_batch(padded[None])[0][:, halo:halo + 75, halo:halo + 90]
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def _model(in_channels=1, ids=(1, 2)):
    return UNetModel.new(in_channels, ClassMap(ids), preset="small", device="cpu", seed=0, depth=2, base_width=4)


def test_predict_stack_rgb_and_dask_shapes():
    model = _model()
    stack = np.random.default_rng(0).integers(0, 65535, (3, 40, 50), dtype=np.uint16)
    labels = model.predict(stack, tile=TileConfig(tile_size=32, halo=8, blend=4))
    assert labels.shape == (3, 40, 50) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {1, 2}
    lazy = da.from_array(stack, chunks=(1, 20, 25))
    np.testing.assert_array_equal(model.predict(lazy, tile=TileConfig(tile_size=32, halo=8, blend=4)), labels)
    rgb_model = _model(3, (2, 7))
    rgb = np.random.default_rng(1).integers(0, 255, (33, 41, 3), dtype=np.uint8)
    out, probs = rgb_model.predict(rgb, channel_axis=-1, probabilities=True)
    assert out.shape == (33, 41) and set(np.unique(out)) <= {2, 7}
    assert probs.shape == (2, 33, 41)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-4)


def test_tta_and_progress_and_output_array():
    model = _model()
    image = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    seen = []
    out = np.zeros((64, 64), np.uint8)
    result = model.predict(image, tile=TileConfig(tile_size=32, halo=8, blend=0, tta=True, batch_size=2),
                           progress=lambda d, t: seen.append((d, t)), out=out)
    assert result is out and set(np.unique(out)) <= {1, 2}
    assert seen[-1][0] == seen[-1][1] and seen[-1][1] > 1


def test_prediction_can_be_cancelled():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        _model().predict(np.zeros((64, 64), np.float32), cancel=cancel)


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(InputError, match="expects 3 channel"):
        _model(3).predict(np.zeros((32, 32), np.float32))


def test_predicting_a_region_equals_cropping_the_whole_prediction():
    model = _model()
    image = np.random.default_rng(4).integers(0, 4000, (2, 70, 90), dtype=np.uint16)
    tile = TileConfig(tile_size=32, halo=8, blend=4)
    seen = []
    whole = model.predict(image, tile=tile)
    part = model.predict(image, tile=tile, region=(10, 47, 30, 81), progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_array_equal(part, whole[:, 10:47, 30:81])
    assert seen[-1][0] == seen[-1][1]  # the progress total is exact
    with pytest.raises(InputError, match="outside"):
        model.predict(image, region=(0, 100, 0, 10))


def test_3d_blocks_equal_one_pass_when_the_halo_covers_the_receptive_field():
    from src_models import ClassMap, TileConfig, UNetModel

    model = UNetModel.new(1, ClassMap((2, 4, 9)), preset="small", device="cpu", seed=0, depth=2, base_width=4,
                          dims=3, z_pooling=(1, 2))
    model.precision = "fp32"
    net = model._inference_net()
    volume = np.random.default_rng(1).random((6, 40, 52)).astype(np.float32)
    radius, radius_z = net.receptive_radius(), net.receptive_radius("z")
    one = TileConfig(tile_size=2 * 64 + 64, halo=64, blend=0, z_tile=2 * 32 + 8, z_halo=32)  # one block
    blocks = TileConfig(tile_size=2 * radius + 16, halo=radius, blend=0, z_tile=2 * radius_z + 2, z_halo=radius_z)
    labels_one, probs_one = model.predict(volume, tile=one, probabilities=True)
    labels_blocks, probs_blocks = model.predict(volume, tile=blocks, probabilities=True)
    np.testing.assert_allclose(probs_blocks, probs_one, atol=1e-5)
    assert labels_blocks.shape == volume.shape and set(np.unique(labels_blocks)) <= {2, 4, 9}
    part = model.predict(volume, tile=blocks, region=(10, 30, 5, 45))
    np.testing.assert_array_equal(part, labels_blocks[:, 10:30, 5:45])
    with pytest.raises(InputError, match="3D model"):
        model.predict(volume[0])


@pytest.mark.parametrize("band_rows", [50, 20])  # 20: a tile's output reaches three bands
def test_bands_of_rows_run_each_tile_once_and_give_the_one_band_result(monkeypatch, band_rows):
    from src_models import segmenter
    from src_models.tiling import count_tiles

    model = _model()
    image = np.random.default_rng(0).normal(100, 20, (2, 300, 200)).astype(np.float32)  # two slices
    tile = TileConfig(tile_size=64, halo=16, blend=8, batch_size=3)
    one_band, one_band_probs = model.predict(image, tile=tile, probabilities=True)
    monkeypatch.setattr(segmenter, "_MAX_REGION_FLOATS", 2 * 200 * band_rows)  # 2 classes x 200 columns
    seen = []
    labels, probs = model.predict(image, tile=tile, probabilities=True, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_array_equal(probs, one_band_probs)
    np.testing.assert_array_equal(labels, one_band)
    per_slice = count_tiles(300, 200, 64, 16, 8, model.config.size_multiple)
    assert seen[-1] == (2 * per_slice, 2 * per_slice)  # no tile run twice
