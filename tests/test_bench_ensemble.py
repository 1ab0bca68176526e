import numpy as np
from conftest import cell_grid, stroke_labels

from bench.ensemble import averaged_labels


def test_a_model_averaged_with_itself_draws_its_own_labels():
    """bench/ensemble.py draws averaged probabilities as the engine draws one model's (fitted ridge)."""
    from src_models import TrainConfig, fit

    truth = cell_grid(128, period=32, width=3)
    rng = np.random.default_rng(0)
    image = np.where(truth == 1, 60.0, 180.0) + rng.normal(0, 20, truth.shape)
    strokes = stroke_labels(truth == 2, every=8, width=1)
    strokes[:, ::32] = 1  # membrane strokes along the vertical membranes
    model = fit(image, strokes, config=TrainConfig(steps=120, batch_size=2, patch_size=64, device="cpu",
                                                   seed=0)).model
    assert model.separates_regions
    other = image[::-1].copy()
    own = np.asarray(model.segment(other).labels)
    averaged = averaged_labels([model, model], [other], [image])[0]
    np.testing.assert_array_equal(averaged, own)
    assert set(np.unique(own)) == {1, 2}


def test_lever_tables_give_each_style_and_all_styles_their_means():
    from bench.protocol import isbi_style_rows

    def run(style, f1, rand, share):
        return {"style": style, "new": {"f1": f1, "rand_error": rand, "share": share}}

    runs = [run("traced", 0.70, 0.30, 0.9), run("traced", 0.80, 0.10, 1.1), run("thick", 0.60, 0.50, 1.0)]
    rows = isbi_style_rows(runs, ["traced", "thick"], ["new"])
    assert [r[0] for r in rows] == ["traced", "thick", "all styles"]
    assert rows[0][1].startswith("0.750 ± 0.071 / 0.200 ± 0.141 / 1.00")
    assert rows[2][1].startswith("0.700 ± 0.100 / 0.300 ± 0.200 / 1.00")
