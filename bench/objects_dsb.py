"""DSB 2018 nuclei as objects from simulated strokes: instance AP@0.5 of three methods.

Protocol
--------
* Data: ``../shared/data/dsb2018`` (uint16 instance labels). Exits cleanly when absent.
  Only images of at most 360 x 360 pixels are used (CPU time); in sorted-name order, 5 spread
  over the list are the training images and 15 others, spread over the rest, the fixed
  held-out set (never trained on).
* Strokes: ``simulate_strokes`` on the class map 1 = background, 2 = nucleus (~2 % of the
  pixels, seeded by (seed, image index)), then turned into objects-mode labels: background
  strokes -> 1, a nucleus stroke pixel -> that nucleus's truth id + 1 (ids 2, 3, ...).
* Methods: ``otsu-watershed`` (no training: Otsu threshold, distance-transform seeded
  watershed), ``random-forest+cc`` (the random-forest anchor on the same strokes as 2 classes,
  then connected components of the nucleus class), ``unet-objects`` (``make_trainer`` in objects mode for
  ``--budget`` seconds, then ``UNetModel.segment``).
* Score: average precision at IoU 0.5, instances matched one to one
  (``evaluation.metrics.average_precision``), averaged over the held-out images.

Examples
--------
python bench/objects_dsb.py --budget 120 --device cpu
python bench/objects_dsb.py --quick                       # 20 s budget, 5 eval images
python bench/objects_dsb.py --dense --budget 600 --device cpu   # full masks of the 45 other images
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import (
    TIMING_NOTE,
    Predictor,
    random_forest,
    require_data,
    add_data_argument,
    run_method,
)

MAX_SIDE = 360
N_TRAIN, N_EVAL = 5, 15


def split(root):
    """(train names, held-out names): 5 and 15 images of at most 360 x 360, spread by name."""
    import tifffile

    names = []
    for path in sorted((root / "images").glob("*.tif")):
        with tifffile.TiffFile(path) as tif:
            if max(tif.pages[0].shape[:2]) <= MAX_SIDE:
                names.append(path.stem)
    train_idx = {int(round(x)) for x in np.linspace(0, len(names) - 1, N_TRAIN)}
    rest = [n for i, n in enumerate(names) if i not in train_idx]
    eval_idx = [int(round(x)) for x in np.linspace(0, len(rest) - 1, N_EVAL)]
    return [names[i] for i in sorted(train_idx)], [rest[i] for i in eval_idx]


def load(root, name):
    import tifffile

    return tifffile.imread(root / "images" / f"{name}.tif"), tifffile.imread(root / "labels" / f"{name}.tif")


def object_strokes(truth, fraction, rng):
    """Objects-mode strokes from instance truth: 1 = background, nucleus id + 1 inside nuclei."""
    from evaluation.strokes import simulate_strokes

    classes = np.where(truth > 0, 2, 1).astype(np.uint8)
    strokes = simulate_strokes(classes, (1, 2), fraction, rng)
    return np.where(strokes == 1, 1, np.where(strokes == 2, truth.astype(np.int64) + 1, 0)).astype(np.uint32)


# --------------------------------------------------------------------------- methods


def _drop_small(mask, min_size=16):
    from scipy import ndimage

    parts, _ = ndimage.label(mask)
    return mask & (np.bincount(parts.ravel()) >= min_size)[parts]


def otsu_watershed(train_images, train_strokes, budget, device, *, channel_axis=None, steps=None):
    """Anchor without training: Otsu foreground, seeds at distance-transform maxima, watershed."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    def predict(image):
        smooth = gaussian(image.astype(np.float32), 1)
        mask = ndimage.binary_fill_holes(smooth > threshold_otsu(smooth))
        mask = _drop_small(mask)
        dist = ndimage.distance_transform_edt(mask)
        parts, _ = ndimage.label(mask)
        peaks = peak_local_max(dist, min_distance=5, labels=parts, exclude_border=False)
        markers = np.zeros(mask.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        return watershed(-dist, markers, mask=mask)

    return Predictor(predict, "cpu", "gaussian 1, Otsu, peaks min_distance 5")


def random_forest_cc(train_images, train_strokes, budget, device, *, channel_axis=None, steps=None):
    """Anchor: the random forest of bench._common on 2-class strokes, connected nucleus components."""
    from scipy import ndimage

    semantic = [np.where(s == 1, 1, np.where(s >= 2, 2, 0)).astype(np.uint8) for s in train_strokes]
    forest = random_forest(train_images, semantic, budget, device, channel_axis=channel_axis)

    def predict(image):
        mask = _drop_small(np.asarray(forest(image)) == 2)
        return ndimage.label(mask)[0]

    return Predictor(predict, "cpu", forest.info)


def unet_objects(train_images, train_strokes, budget, device, *, channel_axis=None, steps=None, seed=0,
                 dense=False, **train_options):
    """The engine in objects mode: `make_trainer` for ``budget`` s, then `UNetModel.segment`.

    ``dense``: the labels are full instance masks (0 = background)."""
    from src_models import Task, TrainConfig, make_trainer

    config = TrainConfig(time_budget=budget, steps=steps, device=device, seed=seed, dense=dense, **train_options)
    trainer = make_trainer(list(train_images), list(train_strokes), task=Task("objects"), config=config,
                           channel_axis=channel_axis)
    gen = trainer.run()
    while True:
        try:
            next(gen)
        except StopIteration as done:
            result = done.value
            break
    model = result.model
    last = np.mean(result.losses[-20:]) if result.losses else float("nan")
    info = (f"{result.steps} steps in {result.elapsed:.0f} s, final loss {last:.3f}, "
            f"classes {list(model.class_map.ids)}")
    return Predictor(lambda image: model.segment(image).labels, str(model.device), info)


METHODS = {"otsu-watershed": otsu_watershed, "random-forest+cc": random_forest_cc, "unet-objects": unet_objects}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=None, help="U-Net training seconds (default 120)")
    parser.add_argument("--steps", type=int, default=None, help="U-Net step limit instead of / besides the budget")
    parser.add_argument("--device", default="auto", help="engine device: auto, cpu, cuda, mps")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--fraction", type=float, default=0.02, help="painted share of each training image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated strokes")
    parser.add_argument("--eval", type=int, default=None, help=f"number of held-out images (at most {N_EVAL})")
    parser.add_argument("--class-prior", action=argparse.BooleanOptionalAction, default=None,
                        help="TrainConfig.class_prior of the U-Net (default: the TrainConfig default)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 s budget, 5 eval images")
    parser.add_argument("--dense", action="store_true",
                        help="train the U-Net on the full instance masks of every image that is not held out "
                             "(the dense row) instead of strokes on 5 images")
    add_data_argument(parser)
    args = parser.parse_args(argv)
    budget = args.budget if args.budget is not None else (None if args.steps else 20.0 if args.quick else 120.0)
    n_eval = args.eval or (5 if args.quick else N_EVAL)

    root = require_data("dsb2018", args.data)
    from evaluation.metrics import average_precision

    train_names, eval_names = split(root)
    eval_names = eval_names[:n_eval]
    if args.dense:  # every image of any size that is not held out, fully labelled
        held_out = set(split(root)[1])
        train_names = [p.stem for p in sorted((root / "images").glob("*.tif")) if p.stem not in held_out]
    images, strokes = [], []
    for i, name in enumerate(train_names):
        image, truth = load(root, name)
        images.append(image)
        strokes.append(truth if args.dense else object_strokes(truth, args.fraction, np.random.default_rng([args.seed, i])))
    painted = 100 * np.mean([np.mean(s > 0) for s in strokes])
    evals = [load(root, n) for n in eval_names]
    print(f"train {train_names}: {painted:.2f} % painted; held out {len(eval_names)} images", flush=True)

    methods = dict(METHODS)
    options = {} if args.class_prior is None else {"class_prior": args.class_prior}
    if args.dense:
        options["dense"] = True
        methods.pop("random-forest+cc")  # the forest is the strokes anchor
        args.methods = [m for m in args.methods if m in methods]
    if options:
        methods["unet-objects"] = functools.partial(unet_objects, **options)
    rows = []
    for name in args.methods:
        preds, train_s, predict_s, predictor = run_method(
            name, methods[name], images, strokes, [im for im, _ in evals], budget=budget, device=args.device,
            steps=args.steps)
        ap = float(np.mean([average_precision(truth, p) for (_, truth), p in zip(evals, preds)]))
        trained = name == "unet-objects"
        cost = " / ".join(([f"{args.steps} steps"] if args.steps else []) + ([f"{budget:g} s"] if budget else []))
        used = f"{len(train_names)} img, dense" if args.dense else f"{len(train_names)} img, {painted:.1f}%"
        rows.append([name, "dsb2018", used if name != "otsu-watershed" else "-",
                     cost if trained else "-", getattr(predictor, "device", "cpu"), f"{ap:.3f}",
                     f"{train_s:.1f}", f"{predict_s:.2f}", getattr(predictor, "info", "")])

    header = ["method", "data", "strokes", "budget", "device", "AP@0.5", "train s", "predict s/img"]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *[r[:8] for r in rows])]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print()
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r[:8]))
    print()
    print(f"Held-out images ({len(eval_names)}, at most {MAX_SIDE} px a side, never trained on): "
          f"{', '.join(eval_names)}. Training images: {', '.join(train_names)}.")
    print("AP@0.5: TP / (TP + FP + FN), one-to-one matches at IoU > 0.5, averaged over the held-out images.")
    print(TIMING_NOTE)
    for r in rows:
        if r[8]:
            print(f"  {r[0]}: {r[8]}")


if __name__ == "__main__":
    main()
