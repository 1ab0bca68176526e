"""The network, losses, augmentation and model files (real torch on the CPU)."""
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from src_models import ClassMap, InputError, ModelFileError, UNet, UNetConfig, UNetModel
from src_models.augment import Augmenter
from src_models.losses import balanced_cross_entropy, border_weight_map, skeleton, skeleton_recall_loss, soft_dice_loss


@pytest.mark.parametrize("depth,up,norm", [(1, "transpose", "batch"), (3, "bilinear", "group"), (2, "transpose", "none")])
@pytest.mark.parametrize("size", [(32, 32), (37, 45)])
def test_unet_forward_backward_any_size(depth, up, norm, size):
    net = UNet(UNetConfig(in_channels=3, n_classes=4, depth=depth, base_width=4, up=up, norm=norm))
    x = torch.randn(2, 3, *size, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 4, *size)
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_receptive_radius_bounds_the_real_one():
    torch.manual_seed(0)
    net = UNet(UNetConfig(1, 2, depth=2, base_width=4, norm="none")).eval()
    x = torch.randn(1, 1, 96, 96, requires_grad=True)
    net(x)[0, :, 48, 48].pow(2).sum().backward()
    ys, xs = torch.nonzero(x.grad[0, 0] != 0, as_tuple=True)
    reach = max(48 - ys.min().item(), ys.max().item() - 48, 48 - xs.min().item(), xs.max().item() - 48)
    assert 0 < reach <= net.receptive_radius()


def test_config_rejects_bad_values_with_a_sentence():
    with pytest.raises(ValueError, match="at least 2 classes"):
        UNetConfig(in_channels=1, n_classes=1)
    with pytest.raises(ValueError, match="norm"):
        UNetConfig(1, 2, norm="layer")


def test_unpainted_pixels_have_no_effect_on_the_gradient():
    torch.manual_seed(0)
    net = UNet(UNetConfig(1, 2, depth=2, base_width=4, norm="none", dropout=0.0))  # same forward twice
    x = torch.randn(1, 1, 32, 32)
    target = torch.full((1, 32, 32), -1)
    target[0, 5:10, 5:10] = 0
    target[0, 20:25, 20:25] = 1

    def grads(logits_hook):
        net.zero_grad()
        logits = net(x)
        logits = logits_hook(logits)
        balanced_cross_entropy(logits, target).backward()
        return [p.grad.clone() for p in net.parameters()]

    base = grads(lambda z: z)
    # change the logits only where nothing is painted: gradients must not move
    noise = torch.randn(1, 2, 32, 32) * 5 * (target < 0).unsqueeze(1)
    changed = grads(lambda z: z + noise)
    for a, b in zip(base, changed):
        assert torch.allclose(a, b, atol=1e-6)
    # and the logits' gradient is exactly zero on unpainted pixels
    logits = net(x).detach().requires_grad_(True)
    balanced_cross_entropy(logits, target).backward()
    assert torch.all(logits.grad[:, :, target[0] < 0] == 0)
    assert torch.any(logits.grad[:, :, target[0] >= 0] != 0)


def test_cross_entropy_balances_classes_by_painted_counts():
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 0] = 2.0  # predicts class 0 everywhere
    target = torch.full((1, 4, 4), -1)
    target[0, 0, :] = 0
    target[0, 1, 0] = 1  # 4 pixels of class 0, 1 of class 1
    loss = balanced_cross_entropy(logits, target)
    ce0 = torch.nn.functional.cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    ce1 = torch.nn.functional.cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([1]))
    assert torch.isclose(loss, (ce0 + ce1) / 2, atol=1e-5)  # each class counts half


def test_soft_dice_is_zero_for_a_perfect_prediction():
    target = torch.tensor([[[0, 1], [1, -1]]])
    logits = torch.nn.functional.one_hot(target.clamp(min=0), 2).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(logits, target) < 1e-3
    assert soft_dice_loss(-logits, target) > 0.5


def test_skeleton_is_the_centre_line_of_thin_and_wide_strokes():
    mask = torch.zeros(1, 1, 40, 60)
    mask[0, 0, 5:12, 5:55] = 1  # 7 px wide
    mask[0, 0, 25:28, 5:55] = 1  # 3 px wide
    skel = skeleton(mask)
    assert bool((skel <= mask).all())  # inside the strokes
    rows = skel[0, 0, :, 20:40].nonzero()[:, 0].unique().tolist()
    assert rows == [8, 26]  # one centre row per stroke away from the ends


def test_skeleton_recall_rewards_the_painted_centre_lines_only():
    target = torch.full((1, 30, 30), -1)
    target[0, 10:17, 2:28] = 1  # a wide stroke of class 1
    target[0, 22:24, 2:28] = 0  # a thin stroke of class 0
    right = torch.nn.functional.one_hot(target.clamp(min=0), 3).permute(0, 3, 1, 2).float() * 50
    assert skeleton_recall_loss(right, target) < 1e-3
    assert skeleton_recall_loss(-right, target) > 0.9
    logits = torch.zeros(1, 3, 30, 30, requires_grad=True)
    skeleton_recall_loss(logits, target).backward()
    grad = logits.grad.abs().sum(1)[0]
    assert float(grad[target[0] < 0].sum()) == 0  # unpainted pixels do not count
    assert float(grad[13, 15]) > 0 and float(grad[10, 15]) == 0  # the centre of the wide stroke, not its rim
    nothing = torch.full((1, 30, 30), -1)
    assert float(skeleton_recall_loss(logits.detach(), nothing)) == 0


def test_border_weights_peak_between_touching_objects():
    objects = np.zeros((40, 60), int)
    objects[10:30, 5:28] = 1
    objects[10:30, 30:55] = 2  # a 2-pixel gap at columns 28-29
    w = border_weight_map(objects, w0=10, sigma=5)
    assert w[20, 28] > 8  # in the gap: close to 1 + w0
    assert w[20, 10] == 1  # inside an object
    assert w[2, 28] < w[20, 28]  # far from the gap, outside


def test_augmentation_keeps_shapes_labels_and_unpainted():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 2, 32, 32)
    target = torch.full((3, 32, 32), -1)
    target[:, 8:24, 8:24] = 1
    target[:, 12:20, 12:20] = 0
    out_i, out_t, _ = Augmenter()(image, target, None, generator=g)
    assert out_i.shape == image.shape and out_t.shape == target.shape
    assert set(out_t.unique().tolist()) <= {-1, 0, 1}
    assert (out_t == -1).any() and (out_t == 0).any()


def test_model_file_round_trip(tmp_path):
    model = UNetModel.new(1, ClassMap((1, 5), ("background", "nucleus")), preset="small", device="cpu", seed=1)
    model.info["note"] = "hello"
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = UNetModel.load(path, device="cpu")
    assert loaded.class_map == model.class_map
    assert loaded.config == model.config
    assert loaded.info["note"] == "hello"
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    assert np.array_equal(model.predict(image), loaded.predict(image))


class _Payload:
    def __reduce__(self):
        return (open, ("/tmp/napari_unet_payload_ran", "w"))


def test_pickle_with_payload_is_refused_without_running_it(tmp_path):
    marker = "/tmp/napari_unet_payload_ran"
    import os
    if os.path.exists(marker):
        os.remove(marker)
    evil = tmp_path / "model.safetensors"
    evil.write_bytes(pickle.dumps({"weights": _Payload()}))
    torch.save({"x": _Payload()}, tmp_path / "model.pt")
    for path in (evil, tmp_path / "model.pt"):
        with pytest.raises(ModelFileError, match="not a napari-unet model"):
            UNetModel.load(path)
    assert not os.path.exists(marker)


def test_missing_and_truncated_model_files_get_clear_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        UNetModel.load(tmp_path / "nope.safetensors")
    model = UNetModel.new(1, ClassMap((1, 2)), preset="small", device="cpu")
    path = tmp_path / "m.safetensors"
    model.save(path)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        UNetModel.load(tmp_path / "cut.safetensors")


def test_engine_imports_no_gui_package():
    code = ("import sys, src_models, src_models.training, src_models.tiling, src_models.checkpoint, "
            "evaluation.metrics, evaluation.strokes\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt5', 'PySide2', "
            "'PySide6', 'magicgui', 'superqt')]\n"
            "assert not bad, bad\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_class_prior_is_recovered_from_balanced_probabilities():
    from src_models.calibration import apply_class_prior, estimate_class_prior

    rng = np.random.default_rng(0)
    truth = rng.random(20000) < 0.2  # class 0 on 20 % of the pixels
    score = rng.normal(np.where(truth, 1.0, -1.0), 1.0)  # a noisy feature
    like0, like1 = np.exp(-(score - 1) ** 2 / 2), np.exp(-(score + 1) ** 2 / 2)
    balanced = np.stack([like0, like1]) / (like0 + like1)  # posteriors under equal priors
    prior = estimate_class_prior([balanced])
    assert abs(prior[0] - 0.2) < 0.03 and abs(prior.sum() - 1) < 1e-6
    adjusted = apply_class_prior(balanced[None], prior)[0]
    assert (adjusted.argmax(0) == np.where(truth, 0, 1)).mean() > (balanced.argmax(0) == np.where(truth, 0, 1)).mean()


def test_class_prior_travels_in_the_model_file(tmp_path):
    model = UNetModel.new(1, ClassMap((1, 2)), preset="small", device="cpu", seed=0)
    model.class_prior = np.array([0.25, 0.75], np.float32)
    model.save(tmp_path / "m.safetensors")
    loaded = UNetModel.load(tmp_path / "m.safetensors", "cpu")
    np.testing.assert_allclose(loaded.class_prior, [0.25, 0.75])
    image = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(image), loaded.predict(image))


def test_class_prior_estimate_cannot_run_away():
    from src_models.calibration import estimate_class_prior

    nearly_all_background = np.stack([np.full(1000, 0.999), np.full(1000, 0.001)])
    prior = estimate_class_prior([nearly_all_background])
    assert prior[1] >= 0.05 - 1e-9 and abs(prior.sum() - 1) < 1e-9


def test_inference_copy_folds_batch_norm_and_follows_weight_updates():
    torch.manual_seed(0)
    model = UNetModel.new(1, ClassMap([1, 2]), preset="small", device="cpu")
    net = model.net
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(2, 1, 64, 64)
    for _ in range(3):  # non-trivial running statistics and weights
        optimiser.zero_grad()
        net(x).square().mean().backward()
        optimiser.step()
    fused = net.for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert net.training  # the original is left as it was
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(fused(x).numpy(), net(x).numpy(), atol=1e-4)
    batch = np.random.default_rng(0).normal(size=(1, 1, 64, 64)).astype(np.float32)
    before = model.predict_probabilities_batch(batch)
    assert model._inference_net() is model._inference_net()  # cached while weights stay
    with torch.no_grad():
        net.head.bias[0] += 5.0  # an in-place update, as an optimiser step makes
    after = model.predict_probabilities_batch(batch)
    assert after[:, 0].mean() > before[:, 0].mean() + 0.1
    assert model.default_tile().tile_size == 512 and model.default_tile(tta=True).tta


def test_precision_is_a_choice_and_bf16_on_the_cpu_agrees_with_fp32():
    from src_models.device import uses_bf16

    cpu = torch.device("cpu")
    assert not uses_bf16(cpu, "fp32") and uses_bf16(cpu, "bf16")
    assert not uses_bf16(torch.device("mps"), "bf16")  # no bf16 autocast on Apple GPUs
    with pytest.raises(InputError, match="precision"):
        uses_bf16(cpu, "fp8")

    model = UNetModel.new(1, ClassMap((1, 2)), preset="small", device="cpu", seed=0)
    image = np.random.default_rng(0).random((96, 128)).astype(np.float32)
    model.precision = "fp32"
    assert not model.bf16
    fp32 = model.predict(image, probabilities=True)[1]
    model.precision = "bf16"
    assert model.bf16
    bf16 = model.predict(image, probabilities=True)[1]
    assert not np.array_equal(fp32, bf16)  # it did run in another precision
    np.testing.assert_allclose(bf16, fp32, atol=0.03)


@pytest.mark.parametrize("z_pooling", [None, (1, 2), (1, 1)])
def test_3d_unet_any_size_folds_batch_norm_and_pools_z_only_where_asked(z_pooling):
    from src_models.config import z_pooling_for

    config = UNetConfig(1, 3, depth=2, base_width=4, dims=3, z_pooling=z_pooling)
    net = UNet(config).eval()
    x = torch.randn(2, 1, 5, 21, 30)
    out = net(x)
    assert out.shape == (2, 3, 5, 21, 30)
    torch.testing.assert_close(net.for_inference()(x), out, atol=1e-4, rtol=1e-4)
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool3d)]
    assert [p.kernel_size[0] for p in pools] == list(z_pooling or (2, 2))
    assert net.receptive_radius("z") <= net.receptive_radius()
    assert UNetConfig.from_dict(config.to_dict()) == config  # the z pooling survives a JSON round trip
    assert z_pooling_for(1, 3) == (2, 2, 2) and z_pooling_for(5, 3) == (1, 1, 2)
    with pytest.raises(ValueError, match="z_pooling"):
        UNetConfig(1, 2, depth=2, dims=3, z_pooling=(2,))


def test_3d_augmentation_moves_planes_labels_and_weights_together():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(-1, 3, (3, 4, 24, 24))
    image = target.float().unsqueeze(1) * 10  # the image is its labels
    out_image, out_target, out_weight = Augmenter(elastic=False, intensity=False)(
        image, target, target.float(), generator=gen)
    assert torch.equal((out_image.squeeze(1) / 10).round().long(), out_target)  # still aligned, plane by plane
    assert torch.equal(out_weight.long(), out_target)
    assert not torch.equal(out_target, target)  # something moved
    out_image, out_target, out_weight = Augmenter()(image, target, target.float(), generator=gen)
    assert out_image.shape == image.shape and out_target.shape == target.shape == out_weight.shape
    assert set(out_target.unique().tolist()) <= {-1, 0, 1, 2}
