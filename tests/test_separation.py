"""Thin separators between regions (membranes between cells) and learning from strokes on a real EM slice."""
import numpy as np
import pytest
from scipy import ndimage

from src_models import InputError, ModelFileError, TrainConfig, UNetModel, fit
from src_models.separation import separate_regions


def _two_cells_and_a_blurred_membrane(width=40, sharp=False):
    """Probabilities of a vertical membrane at x = 20 between two cells; its argmax band is 9 px wide."""
    x = np.arange(width, dtype=np.float32)
    membrane = 0.95 * np.exp(-((x - 20) ** 2) / (2 * 4.0 ** 2))  # > 0.5 for |x - 20| <= 4
    p_sep = np.broadcast_to(membrane, (30, width)).copy()
    return np.stack([p_sep, 1 - p_sep])


def test_a_wide_membrane_is_drawn_along_its_crest_and_keeps_the_cells_apart():
    probs = _two_cells_and_a_blurred_membrane()
    argmax = probs.argmax(0)
    assert (argmax[0] == 0).sum() == 9
    decided = separate_regions(probs)
    assert decided.dtype == np.uint8 and decided.shape == (30, 40)
    band = np.flatnonzero(decided[0] == 0)
    assert 1 <= len(band) <= 3 and 19 <= band.min() and band.max() <= 21  # the crest, not the flanks
    assert (decided[argmax == 1] == 1).all()  # what the argmax calls cell stays cell
    assert ndimage.label(decided == 1)[1] == 2  # the two cells are still apart


def test_a_faint_stretch_of_membrane_is_closed_by_a_line_instead_of_joining_the_cells():
    x = np.arange(40, dtype=np.float32)
    p_sep = np.empty((30, 40), np.float32)
    p_sep[:15] = 0.95 * np.exp(-((x - 20) ** 2) / (2 * 3.0 ** 2))  # a clear membrane above
    p_sep[15:] = 0.35 * np.exp(-((x - 20) ** 2) / (2 * 3.0 ** 2))  # below, too faint for the argmax
    probs = np.stack([p_sep, 1 - p_sep])
    assert ndimage.label(probs.argmax(0) == 1)[1] == 1  # the argmax joins the two cells
    assert ndimage.label(separate_regions(probs, confidence=0.5) == 1)[1] == 1
    decided = separate_regions(probs)
    assert ndimage.label(decided == 1)[1] == 2  # a one-pixel line keeps them apart
    assert (decided[15:] == 0).sum() == 15 and (decided[:, :15] == 1).all() and (decided[:, 26:] == 1).all()
    with pytest.raises(ValueError, match="confidence"):
        separate_regions(probs, confidence=1.0)


def test_regions_that_touch_keep_a_one_pixel_separator():
    # separator probability 0.45 everywhere except 0.55 in a 3-px-wide flat band between two cells
    p_sep = np.full((20, 30), 0.2, np.float32)
    p_sep[:, 14:17] = 0.55
    decided = separate_regions(np.stack([p_sep, 1 - p_sep]), ridge=1.0)
    assert ndimage.label(decided == 1)[1] == 2
    assert 1 <= (decided[0] == 0).sum() <= 3


def test_small_ridge_keeps_the_argmax_and_bad_input_raises():
    probs = _two_cells_and_a_blurred_membrane()
    np.testing.assert_array_equal(separate_regions(probs, ridge=1e-6), probs.argmax(0))
    with pytest.raises(ValueError, match="ridge"):
        separate_regions(probs, ridge=0)
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        separate_regions(np.zeros((3, 4, 4)))


def _membrane(height, sigma=8.0, width=60):
    """Probabilities of a vertical Gaussian membrane of peak ``height`` at x = 20 between two cells."""
    x = np.arange(width, dtype=np.float32)
    p_sep = np.broadcast_to(height * np.exp(-((x - 20) ** 2) / (2 * sigma ** 2)), (30, width)).copy()
    return np.stack([p_sep, 1 - p_sep])


def test_the_fitted_ridge_keeps_the_same_share_of_a_confident_and_a_doubtful_membrane():
    from src_models.separation import fit_ridge

    shares, ridges = {}, {}
    for name, height in (("doubtful", 0.6), ("confident", 0.99)):
        probs = _membrane(height)
        argmax_width = (probs.argmax(0)[0] == 0).sum()
        ridges[name] = fit_ridge([probs], keep=0.6)
        shares[name] = [(separate_regions(probs, ridge=r)[0] == 0).sum() / argmax_width for r in (0.9, ridges[name])]
    # the confident network finds a membrane twice as wide most likely (19 px against 9); a fixed ridge
    # draws both 7 px wide, the fitted one keeps about 0.6 of each
    assert shares["doubtful"][0] - shares["confident"][0] > 0.35, shares
    assert all(abs(fitted - 0.6) <= 0.2 for _, fitted in shares.values()), shares
    assert ridges["confident"] < ridges["doubtful"]
    assert 0.5 <= fit_ridge([_membrane(0.99)], keep=1.0) < ridges["confident"]  # the whole argmax band
    assert fit_ridge([np.stack([np.zeros((4, 4)), np.ones((4, 4))])], keep=0.6) == 0.9  # no separator: the default
    with pytest.raises(ValueError, match="keep"):
        fit_ridge([_membrane(0.99)], keep=0.0)


def _voronoi_cells(size=256, n=60, seed=0):
    """Probabilities of blurred membranes between Voronoi cells."""
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    points = np.zeros((size, size), bool)
    points[tuple(rng.integers(0, size, (2, n)))] = True
    _, (iy, ix) = ndimage.distance_transform_edt(~points, return_indices=True)
    cells = iy * size + ix
    p_sep = ndimage.gaussian_filter(find_boundaries(cells).astype(np.float32), 2.5)
    p_sep = 0.95 * p_sep / p_sep.max()
    return np.stack([p_sep, 1 - p_sep])


def test_tall_maps_are_separated_in_groups_of_rows_like_in_one_piece():
    from src_models.separation import separate_regions_in_rows

    probs = _voronoi_cells()
    whole = separate_regions(probs)
    assert (whole == 0).mean() < (probs.argmax(0) == 0).mean()  # thinner than the argmax
    np.testing.assert_array_equal(separate_regions_in_rows(probs), whole)  # small: one piece
    rows = separate_regions_in_rows(probs, max_pixels=128 * 256, halo=32)  # 4 groups of 64 rows
    assert (rows == whole).mean() > 0.995


def test_two_class_training_makes_a_separating_model_that_keeps_it_in_its_file(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (48, 48)).astype(np.float32)
    labels = np.zeros((48, 48), np.uint8)
    labels[10, 5:40], labels[30, 5:40] = 1, 2
    config = TrainConfig(steps=2, time_budget=None, batch_size=1, patch_size=32, device="cpu", separate_regions=True)
    model = fit(image, labels, config=config).model
    assert model.separates_regions and model.class_prior is None  # the decision replaces the class prior
    assert 0.5 <= model.separator_ridge <= 1.0 and "separator_ridge" in model.info  # fitted after training
    model.save(tmp_path / "m.safetensors")
    loaded = UNetModel.load(tmp_path / "m.safetensors", device="cpu")
    assert loaded.separates_regions and loaded.separator_ridge == model.separator_ridge
    loaded.separator_ridge = 1.0
    crest = (loaded.predict(image) == 1).sum()
    loaded.separator_ridge = 0.5
    assert (loaded.predict(image) == 1).sum() >= crest  # a lower ridge keeps more of the separator
    with pytest.raises(ValueError, match="separator_ridge"):
        loaded.separator_ridge = 1.5
    model.info["separator_ridge"] = 2.0  # as a damaged file would have it
    model.save(tmp_path / "bad.safetensors")
    with pytest.raises(ModelFileError, match="separator ridge"):
        UNetModel.load(tmp_path / "bad.safetensors", device="cpu")
    with pytest.raises(InputError, match="separator_keep"):
        TrainConfig(separator_keep=0.0)
    fixed = fit(image, labels, model=model, config=TrainConfig(**{**config.to_dict(), "separator_keep": None})).model
    assert fixed.separates_regions and "separator_ridge" not in fixed.info and fixed.separator_ridge == 0.9
    off = fit(image, labels, config=TrainConfig(**{**config.to_dict(), "separate_regions": False})).model
    assert not off.separates_regions and off.class_prior is not None
    labels[20, 5:40] = 3  # three classes: argmax
    assert not fit(image, labels, config=config).model.separates_regions


def test_separators_are_lines_for_membranes_not_for_a_background():
    from src_models.separation import separators_are_lines

    membranes = _two_cells_and_a_blurred_membrane()
    yy, xx = np.mgrid[:120, :120]
    disc = ((yy - 60) ** 2 + (xx - 60) ** 2 < 15 ** 2).astype(np.float32)
    background = np.stack([1 - 0.9 * disc, 0.9 * disc])
    assert separators_are_lines([membranes])
    assert not separators_are_lines([background])
    assert not separators_are_lines([membranes, background, background])


def test_strokes_on_a_real_em_slice_beat_a_threshold_and_separation_lowers_rand_error(shared_data):
    """A small, fast version of bench/strokes_isbi.py: the U-Net against a trivial baseline."""
    from skimage import io
    from skimage.filters import threshold_otsu

    from evaluation.metrics import adapted_rand_error_interior, class_f1
    from evaluation.strokes import simulate_strokes

    root = shared_data / "isbi2012"
    crop = (slice(0, 256), slice(0, 256))
    train = io.imread(root / "images" / "slice_00.png")[crop]
    truth0 = np.where(io.imread(root / "labels" / "slice_00.png")[crop] == 0, 1, 2).astype(np.uint8)
    test = io.imread(root / "images" / "slice_05.png")[crop]
    truth = np.where(io.imread(root / "labels" / "slice_05.png")[crop] == 0, 1, 2).astype(np.uint8)
    strokes = simulate_strokes(truth0, (1, 2), 0.03, np.random.default_rng(0))
    model = fit(train, strokes, config=TrainConfig(steps=250, time_budget=None, batch_size=2, patch_size=96,
                                                   device="cpu", seed=0)).model
    assert model.separates_regions
    separated = model.predict(test)
    model.separates_regions = False
    argmax = model.predict(test)
    threshold = np.where(test < threshold_otsu(test), 1, 2)  # membranes are dark
    f1 = {name: class_f1(truth, pred, 1) for name, pred in
          [("separated", separated), ("argmax", argmax), ("threshold", threshold)]}
    assert f1["separated"] > f1["threshold"] + 0.05, f1
    rand = {name: adapted_rand_error_interior(truth, pred, 2) for name, pred in
            [("separated", separated), ("argmax", argmax), ("threshold", threshold)]}
    assert rand["separated"] < rand["argmax"] and rand["separated"] < rand["threshold"], rand
