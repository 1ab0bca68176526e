"""Training from painted labels: class ids, budgets, cancel, live strokes, bad input."""
import threading
import time

import numpy as np
import pytest

from src_models import InputError, TrainConfig, Trainer, UNetModel, fit
from src_models.classmap import ClassMap
from src_models.config import PRESETS

TINY = dict(batch_size=2, patch_size=32, device="cpu", seed=0)


def _blobs(size=64, seed=0):
    """A bright disc on a dark noisy background, with its true mask (1 = dark, 2 = disc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    image = (disc * 150 + 40 + rng.normal(0, 10, (size, size))).clip(0, 255).astype(np.uint8)
    return image, np.where(disc, 2, 1).astype(np.uint8)


def _strokes(truth, ids=(1, 2)):
    painted = np.zeros_like(truth)
    c = truth.shape[0] // 2
    painted[c, c - 4:c + 4] = truth[c, c - 4:c + 4]  # inside the disc
    painted[2:4, 2:20] = truth[2:4, 2:20]  # background corner
    return painted


def test_class_ids_round_trip_non_contiguous():
    image, truth = _blobs()
    truth5 = np.where(truth == 2, 5, 1).astype(np.uint8)
    result = fit(image, _strokes(truth5), config=TrainConfig(steps=3, time_budget=None, **TINY))
    assert result.model.class_map.ids == (1, 5)
    pred = result.model.predict(image)
    assert set(np.unique(pred)) <= {1, 5}
    assert pred.shape == image.shape


def test_learns_a_simple_image_from_strokes():
    image, truth = _blobs()
    result = fit(image, _strokes(truth), config=TrainConfig(steps=60, time_budget=None, **TINY))
    assert not result.model.separates_regions  # a background around an object is not a line
    pred = result.model.predict(image)
    assert (pred == truth).mean() > 0.85
    assert result.losses[-1] < result.losses[0]


def test_dense_mode_treats_zero_as_background():
    image, truth = _blobs()
    dense = np.where(truth == 2, 3, 0).astype(np.uint8)
    result = fit(image, dense, config=TrainConfig(steps=2, time_budget=None, dense=True, **TINY))
    assert result.model.class_map.ids == (0, 3)
    assert set(np.unique(result.model.predict(image))) <= {0, 3}


def test_stack_and_rgb_train_and_predict():
    image, truth = _blobs()
    stack = np.stack([image, image[::-1], image.T])
    labels = np.zeros_like(np.stack([truth] * 3))
    labels[1] = _strokes(truth[::-1])  # only the middle slice is painted
    res = fit(stack, labels, config=TrainConfig(steps=2, time_budget=None, **TINY))
    assert res.model.predict(stack).shape == stack.shape
    rgb = np.stack([image, 255 - image, image // 2], axis=-1)
    res = fit(rgb, _strokes(truth), channel_axis=-1, config=TrainConfig(steps=2, time_budget=None, **TINY))
    assert res.model.config.in_channels == 3
    assert res.model.predict(rgb, channel_axis=-1).shape == truth.shape


def test_time_budget_is_respected():
    image, truth = _blobs()
    trainer = Trainer(image, _strokes(truth), config=TrainConfig(time_budget=1.5, steps=10**9, **TINY))
    start = time.perf_counter()
    events = list(trainer.run())
    took = time.perf_counter() - start
    assert events and 1.5 <= events[-1].elapsed + 1.0
    assert took < 1.5 + 2.0  # at most one step past the budget
    assert events[-1].fraction > 0.5


def test_training_from_strokes_ends_at_the_default_length_however_long_the_budget(monkeypatch):
    import src_models.training as training

    monkeypatch.setattr(training, "STROKE_STEPS", 5)
    image, truth = _blobs()
    runs = []
    for budget in (600.0, 3600.0):
        trainer = Trainer(image, _strokes(truth), config=TrainConfig(time_budget=budget, **TINY))
        events = list(trainer.run())
        assert trainer.step_limit == 5 and events[-1].step_limit == 5 and events[-1].fraction == 1.0
        assert len(events) == 5
        runs.append({k: v.clone() for k, v in trainer.model.net.state_dict().items()})
    assert all((runs[0][k] == runs[1][k]).all() for k in runs[0])  # more time: the same model
    # an explicit number of steps wins
    assert Trainer(image, _strokes(truth), config=TrainConfig(steps=7, **TINY)).step_limit == 7


def test_full_masks_have_no_default_step_limit():
    image, truth = _blobs()
    assert Trainer(image, truth, config=TrainConfig(**TINY)).step_limit is None  # every pixel painted
    dense = np.where(truth == 2, 3, 0).astype(np.uint8)
    assert Trainer(image, dense, config=TrainConfig(dense=True, **TINY)).step_limit is None
    half = truth.copy()
    half[:, : truth.shape[1] // 3] = 0  # two thirds painted: still full masks
    assert Trainer(image, half, config=TrainConfig(**TINY)).step_limit is None


def test_auto_size_is_the_small_network_for_strokes_on_every_device():
    from src_models.training import preset_for

    assert preset_for("auto", "cuda", from_strokes=True) == "small"
    assert preset_for("auto", "cuda", from_strokes=False) == "large"
    assert preset_for("auto", "cpu", from_strokes=False) == "small"
    assert preset_for("large", "cpu", from_strokes=True) == "large"  # a size the user names wins
    image, truth = _blobs()
    trainer = Trainer(image, _strokes(truth), config=TrainConfig(preset="large", steps=1, device="cpu"))
    assert trainer.from_strokes and trainer.model.config.base_width == PRESETS["large"]["base_width"]
    assert not Trainer(image, truth, config=TrainConfig(**TINY)).from_strokes


def test_cancel_stops_within_a_step_and_keeps_weights():
    image, truth = _blobs()
    trainer = Trainer(image, _strokes(truth), config=TrainConfig(time_budget=60, **TINY))
    cancel = threading.Event()
    gen = trainer.run(cancel)
    for _ in range(3):
        next(gen)
    before = {k: v.clone() for k, v in trainer.model.net.state_dict().items()}
    cancel.set()
    with pytest.raises(StopIteration) as done:
        next(gen)
    result = done.value.value
    assert result.stopped and result.steps == 3
    after = result.model.net.state_dict()
    assert all((before[k] == after[k]).all() for k in before)  # no step after the request
    assert set(np.unique(result.model.predict(image))) <= {1, 2}


def test_strokes_added_while_training_are_used():
    image, truth = _blobs()
    only_bg = np.zeros_like(truth)
    only_bg[2:4, 2:20] = 1
    only_bg[40, 40] = 2  # one pixel of the second class to start
    trainer = Trainer(image, only_bg, config=TrainConfig(steps=4, time_budget=None, **TINY))
    gen = trainer.run()
    next(gen)
    trainer.update_labels(0, _strokes(truth))
    list(gen)
    assert np.array_equal(trainer.labels[0], _strokes(truth))
    assert trainer.sampler.count(1) == (_strokes(truth) == 2).sum()


def test_fine_tuning_from_a_model_with_a_new_class(tmp_path):
    image, truth = _blobs()
    first = fit(image, _strokes(truth), config=TrainConfig(steps=2, time_budget=None, **TINY)).model
    first.save(tmp_path / "m.safetensors")
    labels = _strokes(truth)
    labels[60:62, 40:60] = 9
    again = fit(image, labels, model=UNetModel.load(tmp_path / "m.safetensors", "cpu"),
                config=TrainConfig(steps=2, time_budget=None, **TINY)).model
    assert again.class_map.ids == (1, 2, 9)
    assert again.info["steps"] == 4


@pytest.mark.parametrize("labels,message", [
    (np.zeros((64, 64), np.uint8), "No painted pixels"),
    (np.pad(np.ones((4, 4), np.uint8), 30), "Only one class"),
    (np.zeros((10, 10), np.uint8), "have shape"),
])
def test_bad_labels_give_a_sentence(labels, message):
    image, _ = _blobs()
    with pytest.raises(InputError, match=message):
        Trainer(image, labels, config=TrainConfig(**TINY))


def test_model_with_other_channel_count_is_refused():
    image, truth = _blobs()
    model = UNetModel.new(3, ClassMap((1, 2)), preset="small", device="cpu")
    with pytest.raises(InputError, match="expects 3 channel"):
        Trainer(image, _strokes(truth), model=model, config=TrainConfig(**TINY))


def test_training_estimates_class_frequencies():
    image, truth = _blobs()
    result = fit(image, _strokes(truth), config=TrainConfig(steps=20, time_budget=None, **TINY))
    prior = result.model.class_prior
    assert prior is not None and prior.shape == (2,) and abs(prior.sum() - 1) < 1e-5
    off = fit(image, _strokes(truth), config=TrainConfig(steps=1, time_budget=None, class_prior=False, **TINY))
    assert off.model.class_prior is None


def test_pseudo_labels_and_smoothness_options_train():
    image, truth = _blobs()
    strokes = _strokes(truth)
    trainer = Trainer(image, strokes, config=TrainConfig(steps=4, time_budget=None, pseudo_labels=True,
                                                         pseudo_threshold=0.0, smoothness_weight=1.0, **TINY))
    for _ in trainer.run():
        pass
    assert trainer.data.pseudo  # confident (threshold 0: all) pixels were labelled
    key = next(iter(trainer.data.pseudo))
    assert (trainer.data.pseudo[key] >= 0).all()
    assert np.array_equal(trainer.labels[0], strokes)  # the user's strokes are untouched


def test_skeleton_recall_option_trains_and_is_checked():
    image, truth = _blobs()
    result = fit(image, _strokes(truth), config=TrainConfig(steps=3, time_budget=None, skeleton_weight=1.0, **TINY))
    assert result.steps == 3 and np.isfinite(result.losses).all()
    with pytest.raises(InputError, match="skeleton_weight"):
        TrainConfig(skeleton_weight=-1.0)


def test_running_out_of_memory_halves_the_batch_then_says_what_to_do():
    import torch

    image, truth = _blobs()
    trainer = Trainer(image, _strokes(truth), config=TrainConfig(steps=3, time_budget=None, **{**TINY, "batch_size": 4}))
    limit = {"batch": 1}

    def too_big(_module, inputs):  # a device whose memory holds `limit` patches at a time
        if inputs[0].shape[0] > limit["batch"]:
            raise torch.OutOfMemoryError("out of memory (simulated by a forward hook)")

    hook = trainer.model.net.register_forward_pre_hook(too_big)
    events = list(trainer.run())
    assert [e.step for e in events] == [1, 2, 3]  # no step lost
    assert "going on with 1 patch(es)" in events[0].notice and events[1].notice is None

    hook.remove()

    stuck = Trainer(image, _strokes(truth), config=TrainConfig(steps=1, time_budget=None, **TINY))
    limit["batch"] = 0  # not even one patch fits
    stuck.model.net.register_forward_pre_hook(too_big)
    with pytest.raises(InputError, match="ran out of memory even with one 32² patch"):
        list(stuck.run())


def test_3d_model_learns_a_volume_from_strokes_on_two_planes(tmp_path):
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:8, :48, :48]
    ball = (zz - 4) ** 2 * 4 + (yy - 24) ** 2 + (xx - 24) ** 2 < 14 ** 2
    volume = (ball * 150 + 40 + rng.normal(0, 10, ball.shape)).clip(0, 255).astype(np.uint8)
    truth = np.where(ball, 2, 1).astype(np.uint8)
    strokes = np.zeros_like(truth)
    for z in (2, 5):
        strokes[z] = _strokes(truth[z])
    config = TrainConfig(steps=40, time_budget=None, dims=3, z_ratio=2.0, patch_depth=4, **TINY)
    result = fit(volume, strokes, config=config)
    model = result.model
    assert model.config.dims == 3 and model.config.z_pooling == (2, 2, 2)
    pred = model.predict(volume)
    assert pred.shape == volume.shape
    assert (pred == truth).mean() > 0.85, (pred == truth).mean()
    model.save(tmp_path / "m3d.safetensors")
    loaded = UNetModel.load(tmp_path / "m3d.safetensors", device="cpu")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.predict(volume), pred)
    with pytest.raises(InputError, match="volumes"):
        fit(volume[0], strokes[2], config=config)


def test_seeded_training_repeats_exactly_and_leaves_the_global_random_state_alone():
    import torch

    image, truth = _blobs()
    config = TrainConfig(steps=6, time_budget=None, **TINY)
    assert UNetModel.new(1, ClassMap((1, 2)), preset="small", device="cpu").config.dropout > 0  # random draws
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = fit(image, _strokes(truth), config=config).losses
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # another global state: same seeded training
    assert fit(image, _strokes(truth), config=config).losses == first


def test_weight_average_follows_the_ramped_decay_and_copies_integer_buffers():
    import torch

    from src_models.training import WeightAverage

    net = torch.nn.BatchNorm1d(2)
    average = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.num_batches_tracked.fill_(7)
    average.update(net)  # first update: decay min(0.5, 2 / 11)
    with torch.no_grad():
        net.weight.fill_(5.0)
    average.update(net)  # second: min(0.5, 3 / 12) = 0.25
    average.copy_to(net)
    expected = (1 * 2 / 11 + 3 * 9 / 11) * 0.25 + 5 * 0.75
    np.testing.assert_allclose(net.weight.detach().numpy(), expected, rtol=1e-6)
    assert int(net.num_batches_tracked) == 7


def test_training_with_weight_averaging_ends_on_averaged_weights_that_still_segment():
    image, truth = _blobs()
    plain = fit(image, _strokes(truth), config=TrainConfig(steps=60, time_budget=None, **TINY)).model
    averaged = fit(image, _strokes(truth), config=TrainConfig(steps=60, time_budget=None, ema_decay=0.9,
                                                              **TINY)).model
    assert averaged.info["train_config"]["ema_decay"] == 0.9
    first = next(iter(plain.net.state_dict()))
    assert not np.allclose(plain.net.state_dict()[first].numpy(), averaged.net.state_dict()[first].numpy())
    assert (averaged.predict(image) == truth).mean() > 0.85
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def _memory_for(model, voxels: int):
    """A device whose memory holds inputs of at most ``voxels`` values (a forward hook on the
    network that prediction runs: the weights' inference copy, batch norm folded in)."""
    import torch

    def too_big(_module, inputs):
        if inputs[0].numel() > voxels:
            raise torch.OutOfMemoryError("out of memory (simulated by a forward hook)")

    return model._inference_net().register_forward_pre_hook(too_big)


def test_prediction_out_of_memory_retries_with_fewer_then_smaller_tiles_and_says_so():
    from src_models import TileConfig

    image, truth = _blobs(size=96)
    model = fit(image, _strokes(truth), config=TrainConfig(steps=2, time_budget=None, **TINY)).model
    tile = TileConfig(tile_size=64, halo=8, blend=0, batch_size=4)
    small = TileConfig(tile_size=32, halo=8, blend=0, batch_size=1)
    expected = model.predict(image, tile=small)
    hook = _memory_for(model, 32 * 32)  # one 32² tile at a time
    notices = []
    assert np.array_equal(model.predict(image, tile=tile, notice=notices.append), expected)
    assert [n.split(": ")[1] for n in notices] == [
        "retrying with 2 tile(s) per batch.", "retrying with 1 tile(s) per batch.", "retrying with 32-pixel tiles."]
    hook.remove()
    _memory_for(model, 100)
    with pytest.raises(InputError, match="Out of memory even with 32-pixel tiles"):
        model.predict(image, tile=tile)


def test_3d_prediction_out_of_memory_retries_with_smaller_blocks():
    from src_models import TileConfig

    rng = np.random.default_rng(0)
    volume = rng.normal(100, 10, (16, 64, 64)).astype(np.float32)
    strokes = np.zeros(volume.shape, np.uint8)
    strokes[4, 10, 5:40], strokes[4, 30, 5:40] = 1, 2
    config = TrainConfig(steps=1, time_budget=None, dims=3, patch_depth=4, **TINY)
    model = fit(volume, strokes, config=config).model
    tile = TileConfig(tile_size=64, halo=8, blend=0, z_tile=16, z_halo=2)
    notices = []
    _memory_for(model, 8 * 32 * 32)  # blocks of at most 8 planes of 32²
    labels = model.predict(volume, tile=tile, notice=notices.append)
    assert [n.split(": ")[1] for n in notices] == ["retrying with 32-pixel tiles.", "retrying with blocks of 8 planes."]
    assert labels.shape == volume.shape and set(np.unique(labels)) <= {1, 2}


def test_training_from_strokes_has_no_clock_by_default_so_a_slow_cpu_gives_the_same_model():
    from src_models.config import DEFAULT_TIME_BUDGET
    from src_models.training import STROKE_STEPS

    image, truth = _blobs(seed=3)
    strokes = Trainer(image, _strokes(truth), config=TrainConfig(**TINY))
    assert strokes.step_limit == STROKE_STEPS and strokes.time_budget is None
    dense = Trainer(image, truth + 1, config=TrainConfig(dense=True, **TINY))
    assert dense.step_limit is None and dense.time_budget == DEFAULT_TIME_BUDGET
    assert Trainer(image, _strokes(truth), config=TrainConfig(time_budget=5, **TINY)).time_budget == 5


def test_retain_weight_keeps_the_answers_of_the_model_training_went_on_from(tmp_path):
    """Training on after a correction that contradicts the model: with ``retain_weight`` the unpainted
    pixels move less from the starting model's answers than without."""
    image, truth = _blobs()
    fit(image, _strokes(truth), config=TrainConfig(steps=40, **TINY)).model.save(tmp_path / "start.safetensors")
    before = UNetModel.load(tmp_path / "start.safetensors", "cpu").segment(image, probabilities=True).probabilities
    corrected = _strokes(truth)
    corrected[22:27, 22:27] = 1  # a piece of the disc painted as background
    unpainted = corrected == 0
    drift = {}
    for weight in (0.0, 10.0):
        start = UNetModel.load(tmp_path / "start.safetensors", "cpu")
        after = fit(image, corrected, model=start, config=TrainConfig(steps=40, retain_weight=weight, **TINY)).model
        drift[weight] = float(np.abs(after.segment(image, probabilities=True).probabilities - before)[:, unpainted].mean())
    assert drift[10.0] < 0.75 * drift[0.0], drift
    with pytest.raises(ValueError, match="retain_weight"):
        TrainConfig(retain_weight=-1.0)


def test_fine_tune_lr_is_the_peak_learning_rate_of_training_that_goes_on_from_a_model():
    image, truth = _blobs()
    config = TrainConfig(steps=12, lr=2e-3, fine_tune_lr=4e-4, **TINY)
    new = Trainer(image, _strokes(truth), config=config)
    first = [p.lr for p in new.run()]
    on = Trainer(image, _strokes(truth), config=config, model=new.result.model)
    again = [p.lr for p in on.run()]
    assert len(again) == len(first) == 12
    np.testing.assert_allclose(again, np.array(first) * 0.2, rtol=1e-9)
    with pytest.raises(ValueError, match="fine_tune_lr"):
        TrainConfig(fine_tune_lr=0.0)


def test_correction_share_centres_patches_on_the_paint_the_starting_model_got_wrong():
    """Paint that contradicts the model training goes on from becomes the sampler's priority; with
    ``correction_share=1`` every patch holds some of it."""
    image, truth = _blobs()
    start = fit(image, _strokes(truth), config=TrainConfig(steps=40, **TINY)).model
    corrected = _strokes(truth)
    corrected[22:27, 22:27] = 1  # a piece of the disc painted as background
    trainer = Trainer(image, corrected, model=start, config=TrainConfig(steps=2, correction_share=1.0, **TINY))
    for _ in trainer.run():
        pass
    assert trainer.result.steps == 2
    reference = trainer.data.reference[(0, 0)]
    assert reference.shape == image.shape
    wrong = (corrected > 0) & (trainer.class_map.to_index(corrected) != reference)
    assert wrong[22:27, 22:27].any()  # the correction contradicts the model
    assert not wrong[2:4, 2:20].any()  # the old background stroke does not
    plain = Trainer(image, corrected, model=start, config=TrainConfig(steps=2, **TINY))
    for _ in plain.run():
        pass
    assert plain.data.reference == {}  # off by default
    with pytest.raises(ValueError, match="correction_share"):
        TrainConfig(correction_share=1.5)


def test_sampler_centres_the_asked_share_of_patches_on_priority_pixels():
    import torch

    from src_models.sampling import PatchSampler

    target = np.full((64, 64), -1)
    target[5], target[50] = 0, 1  # one stroke per class
    priority = np.zeros((64, 64), bool)
    priority[50, 40:44] = True  # four pixels of the second stroke
    image = priority[None].astype(np.float32)  # marks them
    sampler = PatchSampler(2, 16, torch.device("cpu"), np.random.default_rng(0))
    sampler.set_slice("a", image, target, priority=priority)
    always = sampler.draw(32, priority_share=1.0)[0]
    assert bool((always.amax(dim=(1, 2, 3)) == 1).all())  # every patch holds one of them
    never = sampler.draw(32, priority_share=0.0)[0]
    assert float((never.amax(dim=(1, 2, 3)) == 1).float().mean()) < 0.5

