"""ISBI 2012 from simulated strokes: random-forest anchor vs the U-Net engine.

Protocol
--------
* Data: ``../shared/data/isbi2012`` (labels 255 = interior, 0 = membrane), painted ids
  1 = membrane, 2 = interior. Exits cleanly when the folder is absent.
* Training pool: slices 0-9. ``k`` training slices are spread over the pool
  (k=1: slice 0; k=3: slices 0, 4, 9). Each slice gets simulated strokes
  (``evaluation.strokes.simulate_strokes``, ~1.5 % of its pixels, seeded by (seed, slice) so a
  slice gets the same strokes in every configuration).
* Evaluation: held-out slices 10, 11, ... (``--eval N``, at most 10), never trained on, scored
  against the dense truth: membrane F1 and IoU, pixel error, adapted Rand error of the interior
  components, mean IoU of the two classes; averaged over slices.
* ``--dense``: the full truth of the training slices instead of strokes (the dense row;
  ``--slices-train 10`` trains on all of 0-9). A full-data dense row trains on all 20
  slices and is scored on the challenge's 10 slices kept aside, which are not in ../shared/data;
  here the held-out slices 10-19 stand in.

Examples
--------
python bench/strokes_isbi.py --quick                       # smoke: 20 s budget, 3 eval slices
python bench/strokes_isbi.py --methods random-forest
python bench/strokes_isbi.py --budget 120 --slices-train 3 --device cpu
python bench/strokes_isbi.py --dense --slices-train 10 --budget 600 --device cpu   # full labels
python bench/strokes_isbi.py --steps 450 --slices-train 3 --variant unet-smooth '{"smoothness_weight": 0.5}'
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import (
    Row,
    add_common_arguments,
    budget_label,
    print_report,
    random_forest,
    require_data,
    resolve_methods,
    run_method,
)

POOL = range(10)
HELD_OUT = range(10, 20)
MEMBRANE, INTERIOR = 1, 2
#: ``--dense``: the forest trains on this many of the painted pixels, drawn at random (seeded):
#: on all of them, 2 slices (524,288 px) took it 60 s on 2 cores, and 10 slices hold 2.6 million.
DENSE_FOREST_PIXELS = 200_000


def train_slices(k: int) -> list[int]:
    """``k`` slices spread over the training pool (0-9)."""
    if not 1 <= k <= len(POOL):
        raise SystemExit(f"--slices-train values must lie in 1..{len(POOL)}; got {k}.")
    return sorted({round(x) for x in np.linspace(POOL[0], POOL[-1], k)})


def load(root, index):
    from skimage.io import imread

    image = imread(root / "images" / f"slice_{index:02d}.png")
    label = imread(root / "labels" / f"slice_{index:02d}.png")
    truth = np.where(label == 255, INTERIOR, MEMBRANE).astype(np.uint8)
    return image, truth


def score(truth, pred):
    from evaluation import metrics as m

    return {
        "f1": m.class_f1(truth, pred, MEMBRANE),
        "iou": m.class_iou(truth, pred, MEMBRANE),
        "rand_error": m.adapted_rand_error_interior(truth, pred, INTERIOR),
        "pixel_error": m.pixel_error(truth, pred),
        "miou": m.mean_iou(truth, pred, ignore_id=None, class_ids=(MEMBRANE, INTERIOR)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser, [1, 3], "--slices-train", "numbers of training slices (from 0-9)")
    parser.add_argument("--dense", action="store_true",
                        help="train on the full truth of the training slices instead of strokes "
                             "(the dense row)")
    args = parser.parse_args(argv)
    methods = resolve_methods(args)
    if args.dense and "random-forest" in methods:  # 262,144 painted px a slice: sample them
        methods["random-forest"] = functools.partial(random_forest, max_pixels=DENSE_FOREST_PIXELS)
    budget = args.budget if args.budget is not None else (
        None if args.steps else 20.0 if args.quick else 120.0)
    n_eval = args.eval if args.eval is not None else (3 if args.quick else len(HELD_OUT))
    if not 1 <= n_eval <= len(HELD_OUT):
        raise SystemExit(f"--eval must lie in 1..{len(HELD_OUT)}; got {n_eval}.")

    root = require_data("isbi2012", args.data)
    from evaluation.strokes import simulate_strokes

    eval_ids = list(HELD_OUT)[:n_eval]
    evals = [load(root, i) for i in eval_ids]
    eval_images = [im for im, _ in evals]
    rows = []
    for k in args.slices_train:
        ids = train_slices(k)
        images, strokes = [], []
        for i in ids:
            image, truth = load(root, i)
            images.append(image)
            strokes.append(truth if args.dense else simulate_strokes(
                truth, (MEMBRANE, INTERIOR), args.fraction, np.random.default_rng([args.seed, i])))
        painted = np.mean([np.mean(s > 0) for s in strokes])
        print(f"train slices {ids}: {100 * painted:.2f} % painted; eval slices {eval_ids}", flush=True)
        for name, method in methods.items():
            preds, train_s, predict_s, predictor = run_method(
                name, method, images, strokes, eval_images, budget=budget, device=args.device,
                steps=args.steps, save_dir=args.save_predictions, tag=f"{k}sl")
            scores = [score(truth, p) for (_, truth), p in zip(evals, preds)]
            means = {key: float(np.nanmean([s[key] for s in scores])) for key in scores[0]}
            rows.append(Row(
                method=name, data="isbi2012", strokes=f"{k} sl, {'dense' if args.dense else f'{100 * painted:.1f}%'}",
                budget=budget_label(name, budget, args.steps),
                device=getattr(predictor, "device", args.device),
                train_s=train_s, predict_s=predict_s,
                info=f"train slices {ids}; " + getattr(predictor, "info", ""), **means))
    notes = [
        (f"Held-out evaluation slices: {eval_ids[0]}-{eval_ids[-1]} (never trained on); "
         + ("full labels of the training slices." if args.dense else
            f"strokes seed {args.seed}, fraction {args.fraction}.")),
        ("F1 / IoU: membrane class; Rand error: adapted Rand error of interior components "
         "(skimage); pixel error and mIoU over both classes; all averaged over slices."),
    ]
    print_report(rows, notes=notes, json_path=args.json)


if __name__ == "__main__":
    main()
