"""Filter responses as extra input channels (`TrainConfig.filter_features`): the recipe travels
with the model, tiles see the same channels as the whole image, and bad recipes are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from src_models import InputError, ModelFileError, Task, TileConfig, TrainConfig, UNetModel, make_trainer
from src_models.features import FilterFeatures
from src_models.images import ImageView, Normalization


def _image_and_strokes(size=96, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = ((yy // 24 + xx // 24) % 2).astype(np.uint8) + 1
    image = (truth * 50 + rng.normal(0, 10, truth.shape)).astype(np.float32)
    strokes = np.where(rng.random(truth.shape) < 0.03, truth, 0).astype(np.uint8)
    return image, strokes


def test_a_window_read_with_its_margin_has_the_channels_of_the_whole_image():
    image, _ = _image_and_strokes(160)
    view = ImageView(image)
    normalization = Normalization(features=FilterFeatures(sigma_max=4.0).fitted([image[None] / 100]))
    stats = normalization.stats(view)
    whole = normalization.read(view, 0, stats)
    assert whole.shape == (1 + normalization.features.per_channel, 160, 160)
    window = normalization.read(view, 0, stats, slice(40, 100), slice(30, 90))
    np.testing.assert_allclose(window, whole[:, 40:100, 30:90], atol=1e-3)
    features = whole[1:].reshape(len(whole) - 1, -1)
    assert np.abs(features.mean(1)).max() < 5  # standardised by the fitted recipe, not raw


def test_a_model_with_filter_features_trains_predicts_by_tiles_and_reloads(tmp_path):
    image, strokes = _image_and_strokes()
    trainer = make_trainer([image], [strokes], config=TrainConfig(steps=3, device="cpu", patch_size=32,
                                                                   batch_size=2, filter_features=True))
    for _ in trainer.run():
        pass
    model = trainer.result.model
    assert model.image_channels == 1 and model.config.in_channels == 1 + FilterFeatures().per_channel
    whole = model.segment(image).labels
    tiled = model.segment(image, tile=TileConfig(tile_size=64, halo=16, blend=0)).labels
    assert (whole == tiled).mean() > 0.99
    model.save(tmp_path / "m.safetensors")
    again = UNetModel.load(tmp_path / "m.safetensors", "cpu")
    assert again.normalization == model.normalization
    np.testing.assert_array_equal(again.segment(image).labels, whole)
    with pytest.raises(InputError, match="channel"):
        model.segment(np.dstack([image] * 3), channel_axis=-1)


def test_filter_features_are_for_2d_networks():
    image, strokes = _image_and_strokes(64)
    with pytest.raises(InputError, match="2D"):
        make_trainer([np.stack([image] * 4)], [np.stack([strokes] * 4)], task=Task(dims=3),
                     config=TrainConfig(steps=1, device="cpu", filter_features=True))


def test_a_model_file_with_a_recipe_that_does_not_fit_is_refused(tmp_path):
    image, strokes = _image_and_strokes(64)
    trainer = make_trainer([image], [strokes], config=TrainConfig(steps=1, device="cpu", patch_size=32,
                                                                   batch_size=1, filter_features=True))
    for _ in trainer.run():
        pass
    good = tmp_path / "good.safetensors"
    trainer.result.model.save(good)
    with safe_open(str(good), framework="pt") as f:
        meta = json.loads(f.metadata()["napari-unet"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    features = meta["normalization"]["features"]
    for bad in ({**features, "mean": features["mean"][:-1]}, {**features, "std": [0.0] * len(features["std"])},
                {**features, "sigma_max": "big"}):
        path = tmp_path / "bad.safetensors"
        save_file(tensors, str(path), metadata={"napari-unet": json.dumps(
            {**meta, "normalization": {**meta["normalization"], "features": bad}})})
        with pytest.raises(ModelFileError):
            UNetModel.load(path, "cpu")
