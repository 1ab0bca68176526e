"""Painting styles of the simulated user (evaluation.strokes.simulate_style) on synthetic truths."""

import numpy as np
import pytest
from scipy import ndimage

from conftest import cell_grid
from evaluation.strokes import (
    STYLES,
    simulate_object_style,
    simulate_strokes,
    simulate_style,
)


def _stripes(n_classes=11, height=90, stripe=16):
    """Vertical stripes of classes 1..n with a "void" (0) band across the middle."""
    truth = np.repeat(np.arange(1, n_classes + 1, dtype=np.uint8), stripe)[None, :].repeat(height, 0)
    truth[40:50] = 0
    return truth


def _mean_width(painted):
    """Mean distance of painted pixels to the nearest unpainted one: half a stroke's width."""
    on = painted > 0
    return float(ndimage.distance_transform_edt(on)[on].mean())


@pytest.mark.parametrize("style", STYLES)
def test_each_style_paints_only_true_classes_about_the_asked_fraction(style):
    truth = cell_grid(160)
    painted = simulate_style(truth, (1, 2), style, 0.02, np.random.default_rng(0))
    on = painted > 0
    assert painted.shape == truth.shape and painted.dtype == np.uint8
    assert np.array_equal(painted[on], truth[on])
    assert set(np.unique(painted[on]).tolist()) == {1, 2}
    assert 0.01 <= on.mean() <= 0.04


@pytest.mark.parametrize("style", STYLES)
def test_each_style_covers_eleven_classes_and_leaves_void_unpainted(style):
    truth = _stripes()
    painted = simulate_style(truth, range(1, 12), style, 0.05, 1)
    on = painted > 0
    assert not painted[truth == 0].any()
    assert np.array_equal(painted[on], truth[on])
    assert set(np.unique(painted[on]).tolist()) == set(range(1, 12))
    assert 0.025 <= on.mean() <= 0.1


def test_traced_style_is_simulate_strokes():
    truth = cell_grid(160)
    assert np.array_equal(simulate_style(truth, (1, 2), "traced", 0.02, 5),
                          simulate_strokes(truth, (1, 2), 0.02, 5))


def test_thick_strokes_are_wider_than_traced_and_dabs_than_centreline():
    truth = np.where(np.indices((200, 200)).sum(0) < 200, 1, 2).astype(np.uint8)  # two big regions
    width = {s: np.mean([_mean_width(simulate_style(truth, (1, 2), s, 0.03, seed)) for seed in range(3)])
             for s in ("traced", "thick", "centreline", "dabs")}
    assert width["thick"] > 1.4 * width["traced"]
    assert width["dabs"] > width["centreline"]


def test_centreline_lines_cross_cells_to_near_the_border():
    truth = cell_grid(160)
    painted = simulate_style(truth, (1, 2), "centreline", 0.02, 2)
    dist = ndimage.distance_transform_edt(truth == 2)
    interior = painted == 2
    assert dist[interior].min() <= 2.5  # lines reach close to the membranes
    assert dist[interior].min() >= 1  # but never onto them
    membrane = painted == 1
    assert _mean_width(membrane) <= 2.0  # a 3 px brush inside 3 px membranes (wider at crossings)


def test_uneven_style_paints_one_class_about_four_times_the_other():
    truth = cell_grid(256)
    for seed in range(3):
        painted = simulate_style(truth, (1, 2), "uneven", 0.02, seed)
        counts = np.bincount(painted.ravel(), minlength=3)[1:]
        assert 2.5 <= counts.max() / counts.min() <= 6


def test_object_styles_give_background_one_and_each_object_its_id_plus_one():
    instances = np.zeros((96, 96), dtype=np.uint16)
    yy, xx = np.indices(instances.shape)
    for k, (r, c) in enumerate([(20, 20), (20, 60), (60, 30), (70, 70)], start=1):
        instances[(yy - r) ** 2 + (xx - c) ** 2 < 12 ** 2] = k
    for style in STYLES:
        painted = simulate_object_style(instances, style, 0.03, 0)
        on = painted > 0
        assert np.array_equal(painted[on & (instances == 0)], np.ones(np.count_nonzero(on & (instances == 0))))
        inside = on & (instances > 0)
        assert inside.any() and np.array_equal(painted[inside], instances[inside].astype(np.uint32) + 1)


def test_styles_are_reproducible_and_paint_stacks():
    truth = np.stack([cell_grid(96), cell_grid(96)[::-1]])
    for style in STYLES:
        a = simulate_style(truth, (1, 2), style, 0.03, 7)
        assert np.array_equal(a, simulate_style(truth, (1, 2), style, 0.03, np.random.default_rng(7)))
        assert all(set(np.unique(a[z]).tolist()) == {0, 1, 2} for z in range(2))


@pytest.mark.parametrize("kwargs", [{"style": "zigzag"}, {"fraction": 0.0}, {"classes": (0, 1)},
                                    {"style": "dabs", "fraction": 2.0}])
def test_invalid_style_arguments_raise(kwargs):
    args = {"truth": cell_grid(32), "classes": (1, 2), "style": "centreline", "fraction": 0.02}
    args.update(kwargs)
    with pytest.raises(ValueError):
        simulate_style(**args)
