"""Scores in evaluation.metrics on small hand-made arrays whose answers are worked out by hand."""

import numpy as np
import pytest

from evaluation.metrics import (
    adapted_rand_error_interior,
    average_precision,
    class_f1,
    class_iou,
    instance_iou_matrix,
    interior_components,
    intersection_union,
    mean_iou,
    pixel_error,
)

TRUTH = np.array([[1, 1, 2, 2]])
PRED = np.array([[1, 2, 2, 2]])


def test_f1_and_iou_per_class():
    # class 1: TP 1, FP 0, FN 1; class 2: TP 2, FP 1, FN 0.
    assert class_f1(TRUTH, PRED, 1) == pytest.approx(2 / 3)
    assert class_iou(TRUTH, PRED, 1) == pytest.approx(1 / 2)
    assert class_f1(TRUTH, PRED, 2) == pytest.approx(4 / 5)
    assert class_iou(TRUTH, PRED, 2) == pytest.approx(2 / 3)


def test_class_absent_from_both_scores_one():
    assert class_f1(TRUTH, PRED, 7) == 1.0
    assert class_iou(TRUTH, PRED, 7) == 1.0


def test_ignore_id_leaves_pixels_out():
    truth = np.array([[0, 1, 2, 2]])
    pred = np.array([[1, 1, 2, 2]])  # the wrong-looking first pixel is unlabelled in truth
    assert class_f1(truth, pred, 1, ignore_id=0) == 1.0
    assert class_f1(truth, pred, 1) == pytest.approx(2 / 3)
    assert pixel_error(truth, pred, ignore_id=0) == 0.0


def test_pixel_error():
    assert pixel_error(TRUTH, PRED) == pytest.approx(0.25)
    assert pixel_error(TRUTH, TRUTH) == 0.0
    assert pixel_error(np.zeros((2, 2)), np.ones((2, 2)), ignore_id=0) == 0.0  # nothing scored


def test_shape_mismatch_raises_value_error():
    with pytest.raises(ValueError, match="same shape"):
        class_f1(np.zeros((2, 2)), np.zeros((2, 3)), 1)


def test_interior_components_are_four_connected():
    labels = np.array([[2, 1], [1, 2]])  # two interior pixels touching only at a corner
    comps = interior_components(labels, 2)
    assert comps.max() == 2
    assert comps[0, 1] == 0 and comps[1, 0] == 0


def test_adapted_rand_error_identical_is_zero():
    truth = np.array([[2, 2, 1, 2, 2], [2, 2, 1, 2, 2]])
    assert adapted_rand_error_interior(truth, truth, 2) == pytest.approx(0.0)


def test_adapted_rand_error_merge_of_two_cells():
    # Truth: two cells of 2 px split by a membrane pixel (ignored in truth). Prediction merges them.
    # skimage counts ordered pixel pairs: joint sum p_ij^2 - sum p_ij = (4 + 4) - 4 = 4;
    # truth sizes (2, 2): 8 - 4 = 4; prediction size 4 (on scored pixels): 16 - 4 = 12.
    # F = 4 / (0.5 * 4 + 0.5 * 12) = 0.5, error = 0.5.
    truth = np.array([[2, 2, 1, 2, 2]])
    pred = np.array([[2, 2, 2, 2, 2]])
    assert adapted_rand_error_interior(truth, pred, 2) == pytest.approx(0.5)


def test_adapted_rand_error_split_of_one_cell():
    # Truth: one cell of 4 px. Prediction cuts it with a membrane pixel into sizes 2, 1 (+1 membrane).
    # sum p^2 - sum p = (4 + 1 + 1) - 4 = 2; truth: 16 - 4 = 12; prediction: (4 + 1 + 1) - 4 = 2.
    # F = 2 / (0.5 * 12 + 0.5 * 2) = 2 / 7.
    truth = np.array([[2, 2, 2, 2]])
    pred = np.array([[2, 2, 1, 2]])
    assert adapted_rand_error_interior(truth, pred, 2) == pytest.approx(1 - 2 / 7)


def test_adapted_rand_error_without_interior_is_nan():
    assert np.isnan(adapted_rand_error_interior(np.ones((3, 3)), np.ones((3, 3)), 2))


def test_mean_iou_ignores_unlabelled_and_absent_classes():
    truth = np.array([[0, 1, 1, 2]])
    pred = np.array([[2, 1, 2, 2]])
    # scored pixels: t = (1, 1, 2), p = (1, 2, 2) -> IoU(1) = 1/2, IoU(2) = 1/2
    assert mean_iou(truth, pred, ignore_id=0) == pytest.approx(0.5)
    assert mean_iou(truth, pred, ignore_id=0, class_ids=(1, 2, 3)) == pytest.approx(0.5)
    # without ignoring, pixel 0 makes class 0 a class with IoU 0 and class 2 gets an extra FP
    assert mean_iou(truth, pred, ignore_id=None) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)
    assert np.isnan(mean_iou(np.zeros((2, 2)), np.zeros((2, 2)), ignore_id=0))


def _instances():
    truth = np.zeros((8, 10), dtype=np.uint16)
    truth[0:4, 0:4] = 1
    truth[0:4, 6:10] = 2
    pred = np.zeros_like(truth)
    pred[0:4, 0:3] = 5  # IoU with truth 1 = 12/16 = 0.75 -> match
    pred[0:2, 6:10] = 7  # IoU with truth 2 = 8/16 = 0.5 -> not above 0.5
    pred[6:8, 0:2] = 9  # false positive
    return truth, pred


def test_instance_iou_matrix():
    truth, pred = _instances()
    iou = instance_iou_matrix(truth, pred)
    expected = np.array([[0.75, 0.0, 0.0], [0.0, 0.5, 0.0]])
    np.testing.assert_allclose(iou, expected)


def test_average_precision_at_half():
    truth, pred = _instances()
    # TP 1 (5<->1), FP 2 (7, 9), FN 1 (2): 1 / 4
    assert average_precision(truth, pred) == pytest.approx(0.25)
    assert average_precision(truth, truth) == 1.0


def test_average_precision_empty_cases():
    empty = np.zeros((4, 4), dtype=int)
    some = empty.copy()
    some[:2, :2] = 3
    assert average_precision(empty, empty) == 1.0
    assert average_precision(some, empty) == 0.0
    assert average_precision(empty, some) == 0.0


def test_average_precision_low_threshold_matches_one_to_one_optimally():
    # A: cols 0-9, B: cols 10-29. P: cols 4-13 (IoU A 6/14, B 4/26), Q: cols 0-3 (IoU A 4/10).
    # Greedy-by-best-IoU takes P<->A and leaves Q alone; the optimum is Q<->A and P<->B.
    truth = np.zeros((1, 30), dtype=int)
    truth[0, 0:10] = 1
    truth[0, 10:30] = 2
    pred = np.zeros_like(truth)
    pred[0, 4:14] = 1
    pred[0, 0:4] = 2
    assert average_precision(truth, pred, threshold=0.1) == pytest.approx(1.0)
    assert average_precision(truth, pred, threshold=0.5) == pytest.approx(0.0)


def test_average_precision_rejects_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        average_precision(np.zeros((2, 2)), np.zeros((2, 2)), threshold=1.0)


def test_intersection_union_counts():
    truth = np.array([[0, 1, 1, 2]])
    pred = np.array([[2, 1, 2, 2]])
    inter, union = intersection_union(truth, pred, (1, 2, 3), ignore_id=0)
    np.testing.assert_array_equal(inter, [1, 1, 0])
    np.testing.assert_array_equal(union, [2, 2, 0])
