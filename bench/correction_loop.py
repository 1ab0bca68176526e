"""The correction loop: strokes, then rounds of painting over the worst mistakes and training on.

Protocol
--------
* Data: ISBI 2012 as in ``protocol.py`` (training slices 0, 4, 9; ``--split heldout`` scores
  slices 10-19, ``tune`` slices 1-3 and 5-8). Round 0: simulated strokes of one ``--style`` and
  ``--seed`` (`evaluation.strokes.simulate_style`).
* Each later round a simulated user looks at the current prediction of the *training* slices
  and paints the true class over the largest wrong connected regions: ``--correct`` of each
  slice's pixels a round (default 0.5 %), split evenly between the classes' mistakes (a class
  with fewer mistakes hands its share on), never over paint already there; a region larger than
  what is left gets its core (the pixels farthest from its border). Then the U-Net trains on from
  its current model (``make_trainer(..., model=previous)``, as the plugin's *Train* after
  corrections) for ``--round-budget`` seconds or ``--round-steps`` steps.
* The random forest gets the same loop on its own mistakes (retrained from scratch each round:
  it has no warm start).
* After every round both are scored on the evaluation slices: membrane F1, adapted Rand error
  of the interior, pixel error (means over slices).
* Ceiling: the same network trained for the loop's total time (or steps) on the full masks of
  the same training slices (``TrainConfig(dense=True)``, labels = truth).

Examples
--------
python bench/correction_loop.py --dataset isbi --rounds 3 --round-budget 60 --style traced --seed 0 --device cpu
python bench/correction_loop.py --round-steps 300 --style centreline --seed 1 --device cpu
python bench/correction_loop.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import (
    TIMING_NOTE,
    add_data_argument,
    markdown_table,
    random_forest,
    require_data,
    train_engine,
)
from bench.protocol import SPLITS, isbi
from evaluation.strokes import STYLES, even_shares

CLASSES = (1, 2)  # ISBI: membrane, interior


def _paint_largest(out, wrong, class_id, budget):
    """Paint ``class_id`` over the largest components of ``wrong`` until ``budget`` pixels are used."""
    parts, n = ndimage.label(wrong)
    if n == 0 or budget <= 0:
        return 0
    sizes = np.bincount(parts.ravel())[1:]
    boxes = ndimage.find_objects(parts)
    left = budget
    for k in np.argsort(-sizes, kind="stable"):
        if left <= 0:
            break
        box = boxes[k]
        part = parts[box] == k + 1
        if sizes[k] > left:  # paint the core of the region: the pixels farthest from its border
            depth = ndimage.distance_transform_edt(np.pad(part, 1))[1:-1, 1:-1]
            order = np.argsort(-depth[part], kind="stable")[:left]
            keep = np.zeros(int(sizes[k]), dtype=bool)
            keep[order] = True
            core = np.zeros_like(part)
            core[part] = keep
            part = core
        out[box][part] = class_id
        left -= int(np.count_nonzero(part))
    return budget - left


def correct(labels, truth, prediction, fraction, classes=CLASSES):
    """The simulated user's corrections of one image: new labels (a copy) with the true class painted
    over the largest wrong regions of ``prediction``, about ``fraction`` of the pixels in all."""
    out = labels.copy()
    wrong = {c: (truth == c) & (prediction != c) & (labels == 0) for c in classes}
    shares = even_shares(round(fraction * truth.size), {c: int(np.count_nonzero(w)) for c, w in wrong.items()})
    for c in classes:
        _paint_largest(out, wrong[c], c, shares[c])
    return out


def _painted(labels):
    return float(np.mean([np.mean(s > 0) for s in labels]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["isbi"], default="isbi")
    parser.add_argument("--split", choices=SPLITS, default="heldout", help="evaluation slices (default heldout)")
    parser.add_argument("--rounds", type=int, default=3, help="correction rounds after round 0 (default 3)")
    parser.add_argument("--round-budget", type=float, default=None,
                        help="U-Net training seconds per round (default 60; 5 with --quick)")
    parser.add_argument("--round-steps", type=int, default=None, help="U-Net steps per round (instead of, or with, the budget)")
    parser.add_argument("--style", choices=STYLES, default="traced", help="stroke style of round 0")
    parser.add_argument("--seed", type=int, default=0, help="stroke seed (the U-Net trains with seed + round)")
    parser.add_argument("--fraction", type=float, default=0.015, help="painted share of each slice in round 0")
    parser.add_argument("--correct", type=float, default=0.005, help="share of each slice painted per round")
    parser.add_argument("--device", default="auto", help="engine device: auto, cpu, cuda, mps")
    parser.add_argument("--eval", type=int, default=None, help="at most this many evaluation slices (2 with --quick)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the full-mask ceiling")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s rounds, 2 evaluation slices")
    parser.add_argument("--variant", default=None, metavar="JSON",
                        help="TrainConfig fields for the U-Net in every round, e.g. '{\"separate_regions\": false}'")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON to FILE")
    add_data_argument(parser)
    args = parser.parse_args(argv)
    if args.round_budget is None and args.round_steps is None:
        args.round_budget = 5.0 if args.quick else 60.0
    if args.eval is None and args.quick:
        args.eval = 2
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1.")

    data = isbi(require_data("isbi2012", args.data), args.split, args.eval)
    print(f"isbi2012: train on {', '.join(data.train_names)}; score {', '.join(data.eval_names)}", flush=True)
    strokes = [data.paint(t, args.style, args.fraction, np.random.default_rng([args.seed, i]))
               for i, t in enumerate(data.train_truths)]
    train = {"budget": args.round_budget, "steps": args.round_steps, "device": args.device}
    if args.variant:
        try:
            train.update(json.loads(args.variant))
        except (json.JSONDecodeError, TypeError) as err:
            raise SystemExit(f"--variant must be a JSON object of TrainConfig fields ({err}).")

    def score(predict):
        return data.score(data.eval_truths, [np.asarray(predict(im)) for im in data.eval_images])

    rows, unet_labels, forest_labels, model, forest = [], list(strokes), list(strokes), None, None
    for r in range(args.rounds + 1):
        if r > 0:  # the user corrects each method's own mistakes on the training slices
            unet_labels = [correct(lab, t, model.segment(im).labels, args.correct)
                           for lab, t, im in zip(unet_labels, data.train_truths, data.train_images)]
            forest_labels = [correct(lab, t, forest(im), args.correct)
                             for lab, t, im in zip(forest_labels, data.train_truths, data.train_images)]
        t0 = time.perf_counter()
        result = train_engine(data.train_images, unet_labels, seed=args.seed + r, model=model, **train)
        unet_s = time.perf_counter() - t0
        model = result.model
        t0 = time.perf_counter()
        forest = random_forest(data.train_images, forest_labels, None, "cpu", seed=args.seed)
        forest_s = time.perf_counter() - t0
        row = {"round": r, "unet_painted": _painted(unet_labels), "forest_painted": _painted(forest_labels),
               "unet_s": unet_s, "unet_steps": result.steps, "forest_s": forest_s,
               "unet": score(lambda im, m=model: m.segment(im).labels), "forest": score(forest)}
        rows.append(row)
        print(f"  round {r}: painted {100 * row['unet_painted']:.2f} % / {100 * row['forest_painted']:.2f} %, "
              f"U-Net {result.steps} steps in {unet_s:.0f} s, F1 {row['unet']['f1']:.3f}; "
              f"forest F1 {row['forest']['f1']:.3f}", flush=True)

    ceiling = None
    if not args.no_ceiling:
        n = args.rounds + 1
        t0 = time.perf_counter()
        result = train_engine(data.train_images, data.train_truths, dense=True, seed=args.seed, device=args.device,
                              budget=args.round_budget and n * args.round_budget,
                              steps=args.round_steps and n * args.round_steps)
        ceiling = {"unet_s": time.perf_counter() - t0, "unet_steps": result.steps,
                   "unet": score(lambda im: result.model.segment(im).labels)}
        print(f"  ceiling: {result.steps} steps in {ceiling['unet_s']:.0f} s, F1 {ceiling['unet']['f1']:.3f}", flush=True)

    keys = [k for k, _ in data.columns]
    header = (["round", "painted % U-Net / forest", "U-Net s", "U-Net steps"]
              + [f"U-Net {t}" for _, t in data.columns] + ["forest s"] + [f"forest {t}" for _, t in data.columns])
    body = [[str(row["round"]), f"{100 * row['unet_painted']:.2f} / {100 * row['forest_painted']:.2f}",
             f"{row['unet_s']:.0f}", str(row["unet_steps"])] + [f"{row['unet'][k]:.3f}" for k in keys]
            + [f"{row['forest_s']:.1f}"] + [f"{row['forest'][k]:.3f}" for k in keys] for row in rows]
    if ceiling:
        body.append(["ceiling: full masks", "100", f"{ceiling['unet_s']:.0f}", str(ceiling["unet_steps"])]
                    + [f"{ceiling['unet'][k]:.3f}" for k in keys] + ["-"] + ["-" for _ in keys])
    cost = " / ".join(([f"{args.round_steps} steps"] if args.round_steps else [])
                      + ([f"{args.round_budget:g} s"] if args.round_budget else []))
    print()
    print(markdown_table(header, body))
    print()
    print(f"Round 0: {args.style} strokes, seed {args.seed}, {args.fraction:g} of each training slice; each later "
          f"round paints the true class over the largest wrong regions of the method's own prediction on the "
          f"training slices, {args.correct:g} of each slice, split evenly between the classes' mistakes. "
          f"U-Net: {cost} a round, trained on from the previous round's model (device {args.device}); forest "
          f"retrained each round. Ceiling: the same network for {args.rounds + 1} × the round's time/steps on the "
          f"full masks of the training slices (dense).")
    print(f"Scored on the {args.split} slices {', '.join(data.eval_names)}, never trained on.")
    for note in data.notes + [TIMING_NOTE]:
        print(note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rows, "ceiling": ceiling}, f, indent=2)
        print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
