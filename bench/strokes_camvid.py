"""CamVid (11 classes, RGB) from simulated strokes: random-forest anchor vs the U-Net engine.

Protocol
--------
* Data: ``../shared/data/camvid`` (60 frames 360x480 from three sequences 0001TP, 0006R0,
  0016E5; label ids 0-10, 11 = void). Painted ids = label id + 1 (1-11), void -> 0 (never painted,
  never scored). Exits cleanly when the folder is absent.
* Training frames: ``k`` frames (``--frames-train``) spread over the sequences, round-robin from
  the longest sequence, each at an evenly spaced position of its sequence. Each gets simulated
  strokes inside every class region present (~1.5 % of the pixels, seeded by (seed, frame index)).
* Evaluation: ``--eval N`` held-out frames, spread evenly over the frames that are at least two
  positions away from every training frame of the same sequence (the neighbours are near copies).
  Scores: mean IoU over the 11 classes pooled over all held-out frames (intersections and unions
  summed, the usual CamVid figure) and pixel error on non-void pixels.

Examples
--------
python bench/strokes_camvid.py --quick
python bench/strokes_camvid.py --methods random-forest --frames-train 3 6
python bench/strokes_camvid.py --budget 120 --frames-train 3 --device cpu
python bench/strokes_camvid.py --budget 120 --frames-train 12 --dense --device cpu   # full labels
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import (
    Row,
    add_common_arguments,
    budget_label,
    print_report,
    require_data,
    resolve_methods,
    run_method,
)

CLASS_IDS = tuple(range(1, 12))
VOID = 11


def split(names: list[str], k: int, n_eval: int) -> tuple[list[int], list[int]]:
    """Indices of ``k`` training frames and ``n_eval`` held-out frames in the sorted name list."""
    groups = defaultdict(list)
    for i, name in enumerate(names):
        groups[name.split("_")[0]].append(i)
    order = sorted(groups, key=lambda g: -len(groups[g]))
    picks = defaultdict(int)
    for j in range(k):
        picks[order[j % len(order)]] += 1
    train = []
    for g, m in picks.items():
        members = groups[g]
        pos = [int((p + 0.5) * len(members) / m) for p in range(m)]
        train += [members[min(p, len(members) - 1)] for p in pos]
    train = sorted(set(train))
    pool = [i for i in range(len(names)) if all(abs(i - t) >= 2 or
            names[i].split("_")[0] != names[t].split("_")[0] for t in train)]
    if not pool:
        raise SystemExit("No held-out frames left; use fewer training frames.")
    n_eval = min(n_eval, len(pool))
    chosen = sorted({pool[round(x)] for x in np.linspace(0, len(pool) - 1, n_eval)})
    return train, chosen


def load(root, name):
    from skimage.io import imread

    image = imread(root / "images" / name)[..., :3]
    label = imread(root / "labels" / name)
    truth = np.where(label == VOID, 0, label.astype(np.int64) + 1).astype(np.uint8)
    return image, truth


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser, [3], "--frames-train", "numbers of training frames")
    parser.add_argument("--dense", action="store_true",
                        help="train on the full labels of the training frames (void stays unpainted) "
                             "instead of strokes: the dense row")
    args = parser.parse_args(argv)
    methods = resolve_methods(args)
    budget = args.budget if args.budget is not None else (
        None if args.steps else 20.0 if args.quick else 120.0)
    n_eval = args.eval if args.eval is not None else (4 if args.quick else 12)

    root = require_data("camvid", args.data)
    from evaluation import metrics
    from evaluation.strokes import simulate_strokes

    names = sorted(p.name for p in (root / "images").glob("*.png"))
    rows = []
    for k in args.frames_train:
        train_ids, eval_ids = split(names, k, n_eval)
        images, strokes = [], []
        for i in train_ids:
            image, truth = load(root, names[i])
            images.append(image)
            strokes.append(truth if args.dense else simulate_strokes(truth, CLASS_IDS, args.fraction,
                                                                     np.random.default_rng([args.seed, i])))
        evals = [load(root, names[i]) for i in eval_ids]
        painted = np.mean([np.mean(s > 0) for s in strokes])
        print(f"train frames {[names[i] for i in train_ids]}: {100 * painted:.2f} % painted; "
              f"{len(eval_ids)} eval frames", flush=True)
        for name, method in methods.items():
            preds, train_s, predict_s, predictor = run_method(
                name, method, images, strokes, [im for im, _ in evals],
                budget=budget, device=args.device, channel_axis=-1, steps=args.steps,
                save_dir=args.save_predictions, tag=f"{k}fr")
            inter = np.zeros(len(CLASS_IDS), dtype=np.int64)
            union = np.zeros(len(CLASS_IDS), dtype=np.int64)
            errors = []
            for (_, truth), pred in zip(evals, preds):
                i_, u_ = metrics.intersection_union(truth, pred, CLASS_IDS, ignore_id=0)
                inter += i_
                union += u_
                errors.append(metrics.pixel_error(truth, pred, ignore_id=0))
            per_class = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
            rows.append(Row(
                method=name, data="camvid", strokes=f"{k} fr, {'dense ' if args.dense else ''}{100 * painted:.1f}%",
                budget=budget_label(name, budget, args.steps),
                device=getattr(predictor, "device", args.device),
                pixel_error=float(np.mean(errors)), miou=float(np.nanmean(per_class)),
                train_s=train_s, predict_s=predict_s,
                info=("per-class IoU " + " ".join(f"{x:.2f}" for x in per_class) + "; "
                      + getattr(predictor, "info", ""))))
        print(f"  held-out frames: {', '.join(names[i] for i in eval_ids)}")
    notes = [
        (f"Held-out frames: {n_eval} frames >= 2 positions from any training frame of the same "
         f"sequence (listed above); strokes seed {args.seed}, fraction {args.fraction}."),
        ("mIoU: 11 classes, void ignored, pooled over held-out frames; pixel error on non-void "
         "pixels, averaged over frames. F1 / Rand error do not apply."),
        ("Per-class IoU order: Sky Building Pole Road Pavement Tree SignSymbol Fence Car "
         "Pedestrian Bicyclist."),
    ]
    print_report(rows, notes=notes, json_path=args.json)


if __name__ == "__main__":
    main()
