"""Simulated user strokes (evaluation.strokes) on synthetic truths."""

import numpy as np
import pytest
from scipy import ndimage

from conftest import cell_grid
from evaluation.strokes import class_modes, simulate_strokes


def test_strokes_agree_with_truth_and_cover_both_classes():
    truth = cell_grid()
    painted = simulate_strokes(truth, (1, 2), fraction=0.02, rng=np.random.default_rng(0))
    assert painted.shape == truth.shape and painted.dtype == np.uint8
    on = painted > 0
    assert np.array_equal(painted[on], truth[on])
    assert set(np.unique(painted[on]).tolist()) == {1, 2}
    assert 0.01 <= on.mean() <= 0.04  # about the asked fraction


def test_strokes_are_reproducible_with_a_seed():
    truth = cell_grid()
    a = simulate_strokes(truth, (1, 2), rng=3)
    b = simulate_strokes(truth, (1, 2), rng=np.random.default_rng(3))
    c = simulate_strokes(truth, (1, 2), rng=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_modes_thin_membrane_traced_and_cells_dabbed():
    assert class_modes(cell_grid(), (1, 2)) == {1: "trace", 2: "blob"}


def test_blob_strokes_keep_away_from_borders():
    truth = cell_grid()
    painted = simulate_strokes(truth, (1, 2), fraction=0.02, rng=1)
    dist = ndimage.distance_transform_edt(truth == 2)
    assert dist[painted == 2].min() >= 2


def test_unlisted_ids_are_never_painted():
    truth = cell_grid()
    truth[:40, :40] = 0  # "void"
    truth[100:, 100:] = 7  # a class nobody asked for
    painted = simulate_strokes(truth, (1, 2), rng=0)
    assert not painted[truth == 0].any()
    assert not painted[truth == 7].any()


def test_many_classes_and_stacks():
    truth = np.zeros((2, 60, 90), dtype=np.uint16)
    for k in range(9):
        truth[:, :, k * 10 : (k + 1) * 10] = k + 1
    truth[1] = truth[1, :, ::-1]
    painted = simulate_strokes(truth, range(1, 10), fraction=0.05, rng=0)
    assert painted.shape == truth.shape
    for z in range(2):
        assert set(np.unique(painted[z]).tolist()) == set(range(10))


def test_large_ids_get_a_wide_dtype():
    truth = np.full((32, 32), 300, dtype=np.uint16)
    truth[:, :16] = 1
    assert simulate_strokes(truth, (1, 300), rng=0).dtype == np.uint16


@pytest.mark.parametrize(
    "kwargs",
    [{"fraction": 0.0}, {"fraction": 1.5}, {"class_ids": (0, 1)}, {"modes": {1: "zigzag"}},
     {"margin": -1.0}],
)
def test_invalid_arguments_raise(kwargs):
    args = {"truth": cell_grid(32, 16), "class_ids": (1, 2)}
    args.update(kwargs)
    with pytest.raises(ValueError):
        simulate_strokes(**args)
