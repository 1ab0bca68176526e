"""The correction-loop benchmark's simulated user (bench/correction_loop.py) on synthetic truths."""

from types import SimpleNamespace

import numpy as np

from bench.correction_loop import DECISIONS, correct, decisions_table, stroke_width, table, widen
from conftest import cell_grid


def test_corrections_paint_the_true_class_over_mistakes_never_over_paint():
    truth = cell_grid()
    painted = np.zeros_like(truth)
    painted[40:44, 40:60] = 2  # an earlier stroke
    prediction = np.full_like(truth, 2)  # every membrane missed
    prediction[70:90, 70:90] = 1  # and a block of interior called membrane
    out = correct(painted, truth, prediction, 0.01)
    new = (out > 0) & (painted == 0)
    assert np.array_equal(out[painted > 0], painted[painted > 0])  # paint kept
    assert np.array_equal(out[new], truth[new])  # only the true class
    assert not (new & (truth == prediction)).any()  # only over mistakes
    assert abs(new.sum() - 0.01 * truth.size) <= 2  # the round's share of the image
    assert {1, 2} <= set(np.unique(out[new]).tolist())  # both kinds of mistake


def test_loop_table_counts_the_loops_that_improved():
    def row(style, r, f1, rand):
        return {"style": style, "seed": 0, "round": r, "unet_painted": 0.01, "forest_painted": 0.01, "unet_s": 1.0,
                "unet_steps": 10, "unet": {"f1": f1, "rand_error": rand},
                "forest": {"f1": 0.5, "rand_error": 0.5}}

    data = SimpleNamespace(columns=[("f1", "F1"), ("rand_error", "Rand err")])
    rows = [row("a", 0, 0.6, 0.4), row("a", 1, 0.7, 0.3), row("b", 0, 0.6, 0.4), row("b", 1, 0.5, 0.2)]
    text = table(data, rows, [], SimpleNamespace(rounds=1))
    last = text.splitlines()[-1]
    assert "1 of 2" in last and "2 of 2" in last  # F1 rose in one loop, Rand error fell in both


def test_stroke_width_is_the_painted_membrane_width():
    strokes = np.zeros((60, 60), np.uint8)
    strokes[10:13, 5:55] = 1  # two 3 px membrane strokes
    strokes[20:23, 5:55] = 1
    strokes[40:45, 20:30] = 2  # interior is not measured
    assert stroke_width([strokes]) == 3.0
    assert stroke_width([np.zeros_like(strokes)]) == 1.0  # no membrane painted: lines stay thin


def test_widened_separators_keep_to_the_membrane_the_argmax_draws():
    index = np.ones((30, 30), np.uint8)
    index[15] = 0  # a one-pixel separator
    probs = np.zeros((2, 30, 30), np.float32)
    probs[0, 13:18, :20] = 0.8  # the argmax draws a 5 px membrane on the left only
    probs[1] = 1 - probs[0]
    out = widen(index, probs, 3)
    assert (out[:, :20] == 0).sum(0).tolist() == [3] * 20  # 3 px where the argmax agrees
    assert (out[:, 20:] == 0).sum(0).tolist() == [1] * 10  # the thin line elsewhere


def test_decisions_table_scores_the_ceiling_beside_the_rounds():
    def scores(f1):
        return {d: {"f1": f1, "rand_error": 0.2, "share": 1.0} for d in DECISIONS}

    rows = [{"round": r, "decisions": scores(0.7 + 0.01 * r)} for r in (0, 1)]
    ceilings = [{"decisions": scores(0.8)}, {"decisions": scores(0.9)}]
    lines = decisions_table(None, rows, ceilings, SimpleNamespace(rounds=1)).splitlines()
    assert lines[-1].startswith("| ceiling: full masks") and "0.850 / 0.200 / 1.000" in lines[-1]  # mean of seeds
    assert "0.710 / 0.200 / 1.000" in lines[-2]  # round 1 above it
    assert len(decisions_table(None, rows, [], SimpleNamespace(rounds=1)).splitlines()) == len(lines) - 1
