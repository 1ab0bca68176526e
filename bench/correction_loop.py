"""The correction loop: strokes, then rounds of painting over the worst mistakes and training on.

Protocol
--------
* Data: ISBI 2012 as in ``protocol.py`` (training slices 0, 4, 9; ``--split heldout`` scores
  slices 10-19, ``tune`` slices 1-3 and 5-8). One loop per (``--styles``, ``--seeds``); its round 0:
  simulated strokes of that style and seed (`evaluation.strokes.simulate_style`).
* Each later round a simulated user looks at the current prediction of the *training* slices
  and paints the true class over the largest wrong connected regions: ``--correct`` of each
  slice's pixels a round (default 0.5 %), split evenly between the classes' mistakes (a class
  with fewer mistakes hands its share on), never over paint already there; a region larger than
  what is left gets its core (the pixels farthest from its border). Then the U-Net trains on from
  its current model (``make_trainer(..., model=previous)``, as the plugin's *Train* after
  corrections) for ``--round-budget`` seconds or ``--round-steps`` steps. With ``--accept`` the
  user first accepts the prediction into every pixel they have not painted (the plugin's *Accept
  into annotation*), so both methods train on full labels: the user's paint, the prediction elsewhere.
  ``--fresh`` trains a new network each round instead (same seed: only the labels differ);
  ``--decision`` makes the user see, correct and score another decision than the engine's labels
  (`DECISIONS`, from the same probabilities).
* The random forest gets the same loop on its own mistakes (retrained from scratch each round:
  it has no warm start).
* After every round both are scored on the evaluation slices: membrane F1, adapted Rand error
  of the interior, pixel error (means over slices).
* Ceiling: the same network trained for the loop's total time (or steps) on the full masks of
  the same training slices (``TrainConfig(dense=True)``, labels = truth), once per seed.
* Table: one row per round, mean ± sd over the loops, and in how many loops the U-Net's F1 and
  Rand error improved since the round before.

Examples
--------
python bench/correction_loop.py --rounds 3 --round-steps 500 --styles traced centreline thick --seeds 0 1 2 --device cpu
python bench/correction_loop.py --round-budget 60 --styles centreline --seeds 1 --device cpu
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
    mean_sd,
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


#: ``--decisions``: what else the plugin could draw from the same probabilities, scored beside the
#: engine's own labels: the most likely class; thin separators whose crest keeps the pixels within
#: a fixed ``ridge`` of the highest membrane probability nearby (`separation.separate_regions`; 0.9
#: is what the engine drew before it fitted its ridge); separators at the ridge fitted on the
#: model's probabilities of the training slices to ``keep`` that share of their most likely membrane
#: (`separation.fit_ridge`, as the engine does with ``TrainConfig.separator_keep``, column "U-Net
#: ridge"); and the separators of ridge 0.9 widened, where the most likely class is membrane too, to
#: the width of the user's membrane strokes (`stroke_width`).
RIDGES = (0.7, 0.8, 0.9)
KEEPS = (0.55, 0.65, 0.7, 0.75)
DECISIONS = ["argmax", *(f"separators, ridge {r}" for r in RIDGES), *(f"separators, keep {k}" for k in KEEPS),
             "separators, stroke width"]


def stroke_width(labels, class_id=CLASSES[0]):
    """Typical width (pixels) of the strokes of ``class_id``: twice the median distance from their centre
    lines to their edges, less one (a 3-pixel line is 3)."""
    from skimage.morphology import skeletonize

    depths = []
    for lab in labels:
        painted = np.asarray(lab) == class_id
        if painted.any():
            depths.append(ndimage.distance_transform_edt(painted)[skeletonize(painted)])
    return 2 * float(np.median(np.concatenate(depths))) - 1 if depths else 1.0


def widen(index, probs, width):
    """Separators (index 0) widened to ``width`` pixels over the pixels whose most likely class is theirs."""
    band = ndimage.distance_transform_edt(index != 0) <= (width - 1) / 2
    return np.where(band & (probs[0] > probs[1]), 0, index).astype(index.dtype)


def fitted_ridges(model, data):
    """``{keep: ridge}`` for `KEEPS`, fitted on ``model``'s probabilities of the training slices."""
    from src_models.separation import fit_ridge

    probs = [model.segment(image, probabilities=True).probabilities for image in data.train_images]
    return {k: fit_ridge(probs, k) for k in KEEPS}


def decisions(model, image, width, ridges):
    """The labels of every `DECISIONS` entry for ``image``, from one prediction of ``model``; ``width`` is
    the painted membrane's (`stroke_width`), ``ridges`` the `fitted_ridges`."""
    from src_models.separation import separate_regions

    probs = model.segment(image, probabilities=True).probabilities
    index = {"argmax": probs.argmax(0)}
    for r in RIDGES:
        index[f"separators, ridge {r}"] = separate_regions(probs, ridge=r)
    for k in KEEPS:
        index[f"separators, keep {k}"] = separate_regions(probs, ridge=ridges[k])
    index["separators, stroke width"] = widen(index["separators, ridge 0.9"], probs, width)
    return {name: model.class_map.to_ids(index[name]) for name in DECISIONS}


def decision_scores(data, model, width):
    """Scores of every `DECISIONS` entry on the evaluation images."""
    ridges = fitted_ridges(model, data)
    preds = [decisions(model, image, width, ridges) for image in data.eval_images]
    return {name: data.score(data.eval_truths, [p[name] for p in preds]) for name in DECISIONS}


def run_loop(data, style, seed, args, train):
    """One loop: strokes of ``style`` and ``seed``, then ``args.rounds`` rounds of corrections, for the
    U-Net and the forest side by side; a row of scores per round."""
    strokes = [data.paint(t, style, args.fraction, np.random.default_rng([seed, i]))
               for i, t in enumerate(data.train_truths)]

    width = stroke_width(strokes)
    ridges = {}  # --decision: fitted_ridges of each round's model

    def score(predict):
        return data.score(data.eval_truths, [np.asarray(predict(im)) for im in data.eval_images])

    def unet_predict(model, image):  # what the user sees: the engine's labels, or --decision's
        if args.decision is None:
            return model.segment(image).labels
        if id(model) not in ridges:
            ridges[id(model)] = fitted_ridges(model, data)
        return decisions(model, image, width, ridges[id(model)])[args.decision]

    rows, unet_labels, forest_labels, model, forest = [], list(strokes), list(strokes), None, None
    unet_train, forest_train = unet_labels, forest_labels  # what each method trains on
    for r in range(args.rounds + 1):
        if r > 0:  # the user corrects each method's own mistakes on the training slices
            unet_preds = [unet_predict(model, im) for im in data.train_images]
            forest_preds = [forest(im) for im in data.train_images]
            unet_labels = [correct(lab, t, p, args.correct) for lab, t, p in zip(unet_labels, data.train_truths, unet_preds)]
            forest_labels = [correct(lab, t, p, args.correct)
                             for lab, t, p in zip(forest_labels, data.train_truths, forest_preds)]
            unet_train, forest_train = unet_labels, forest_labels
            if args.accept:  # the prediction fills every pixel the user did not paint (Accept into annotation)
                unet_train = [np.where(lab > 0, lab, p) for lab, p in zip(unet_labels, unet_preds)]
                forest_train = [np.where(lab > 0, lab, p) for lab, p in zip(forest_labels, forest_preds)]
        t0 = time.perf_counter()
        if args.fresh:  # a new network each round, with the same seed: only the labels differ
            result = train_engine(data.train_images, unet_train, seed=seed, **train)
        else:
            result = train_engine(data.train_images, unet_train, seed=seed + r, model=model, **train)
        unet_s = time.perf_counter() - t0
        model = result.model
        t0 = time.perf_counter()
        forest = random_forest(data.train_images, forest_train, None, "cpu", seed=seed,
                               max_pixels=200_000 if args.accept else None)
        forest_s = time.perf_counter() - t0
        row = {"style": style, "seed": seed, "round": r, "unet_painted": _painted(unet_labels),
               "forest_painted": _painted(forest_labels), "unet_s": unet_s, "unet_steps": result.steps,
               "forest_s": forest_s, "ridge": model.separator_ridge if model.separates_regions else None,
               "unet": score(lambda im, m=model: unet_predict(m, im)), "forest": score(forest)}
        if args.decisions:
            row["decisions"] = decision_scores(data, model, width)
        rows.append(row)
        print(f"  {style} seed {seed} round {r}: painted {100 * row['unet_painted']:.2f} % / "
              f"{100 * row['forest_painted']:.2f} %, U-Net {result.steps} steps in {unet_s:.0f} s, "
              + " ".join(f"{k} {row['unet'][k]:.3f}/{row['forest'][k]:.3f}" for k in row["unet"]), flush=True)
    return rows


def ceiling_run(data, seed, args):
    """The same network trained as long as a whole loop on the full masks of the training slices."""
    n = args.rounds + 1
    t0 = time.perf_counter()
    result = train_engine(data.train_images, data.train_truths, dense=True, seed=seed, device=args.device,
                          budget=args.round_budget and n * args.round_budget,
                          steps=args.round_steps and n * args.round_steps)
    model = result.model
    row = {"seed": seed, "unet_s": time.perf_counter() - t0, "unet_steps": result.steps,
           "unet": data.score(data.eval_truths, [np.asarray(model.segment(im).labels) for im in data.eval_images])}
    if args.decisions:  # 'stroke width': the width of the true membranes
        row["decisions"] = decision_scores(data, model, stroke_width(data.train_truths))
    print(f"  ceiling seed {seed}: {result.steps} steps in {row['unet_s']:.0f} s, "
          + " ".join(f"{k} {v:.3f}" for k, v in row["unet"].items()), flush=True)
    return row


def _better(key, new, old):
    """Whether score ``key`` improved (F1-like scores rise, errors fall)."""
    return new < old if key.endswith("error") else new > old


def table(data, rows, ceilings, args):
    """One row per round: mean ± sd over every (style, seed) loop, and how many loops improved the
    U-Net's main scores since the round before; the ceiling below."""
    keys = [k for k, _ in data.columns]
    main = keys[:2]
    header = (["round", "loops", "painted % U-Net / forest", "U-Net s", "U-Net steps", "U-Net ridge"]
              + [f"U-Net {t}" for _, t in data.columns]
              + [f"loops where U-Net {t} improved" for k, t in data.columns if k in main]
              + [f"forest {t}" for _, t in data.columns])
    loops = sorted({(r["style"], r["seed"]) for r in rows})
    by_loop = {lp: {r["round"]: r for r in rows if (r["style"], r["seed"]) == lp} for lp in loops}
    body = []
    for n in range(args.rounds + 1):
        rs = [by_loop[lp][n] for lp in loops]
        line = [str(n), str(len(rs)),
                f"{mean_sd([100 * r['unet_painted'] for r in rs], '{:.2f}')} / "
                f"{np.mean([100 * r['forest_painted'] for r in rs]):.2f}",
                mean_sd([r["unet_s"] for r in rs], "{:.0f}"), mean_sd([r["unet_steps"] for r in rs], "{:.0f}"),
                mean_sd([r.get("ridge") for r in rs])]
        line += [mean_sd([r["unet"][k] for r in rs]) for k in keys]
        for k in main:
            if n == 0:
                line.append("-")
            else:
                won = sum(_better(k, by_loop[lp][n]["unet"][k], by_loop[lp][n - 1]["unet"][k]) for lp in loops)
                line.append(f"{won} of {len(loops)}")
        line += [mean_sd([r["forest"][k] for r in rs]) for k in keys]
        body.append(line)
    if ceilings:
        line = ["ceiling: full masks", str(len(ceilings)), "100", mean_sd([c["unet_s"] for c in ceilings], "{:.0f}"),
                mean_sd([c["unet_steps"] for c in ceilings], "{:.0f}"), "-"]
        line += [mean_sd([c["unet"][k] for c in ceilings]) for k in keys] + ["-" for _ in main] + ["-" for _ in keys]
        body.append(line)
    return markdown_table(header, body)


def decisions_table(data, rows, ceilings, args):
    """``--decisions``: per round and decision, mean F1 / Rand error / membrane share over the loops."""
    keys = ["f1", "rand_error", "share"]
    header = ["round"] + list(DECISIONS)
    body = []
    for n in range(args.rounds + 1):
        rs = [r for r in rows if r["round"] == n]
        body.append([str(n)] + [" / ".join(f"{np.mean([r['decisions'][d][k] for r in rs]):.3f}" for k in keys)
                                for d in DECISIONS])
    if ceilings:
        body.append(["ceiling: full masks"] + [" / ".join(f"{np.mean([c['decisions'][d][k] for c in ceilings]):.3f}"
                                                          for k in keys) for d in DECISIONS])
    return markdown_table(header, body)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["isbi"], default="isbi")
    parser.add_argument("--split", choices=SPLITS, default="heldout", help="evaluation slices (default heldout)")
    parser.add_argument("--rounds", type=int, default=3, help="correction rounds after round 0 (default 3)")
    parser.add_argument("--round-budget", type=float, default=None,
                        help="U-Net training seconds per round (default 60; 5 with --quick)")
    parser.add_argument("--round-steps", type=int, default=None, help="U-Net steps per round (instead of, or with, the budget)")
    parser.add_argument("--styles", nargs="+", choices=STYLES, default=["traced"], help="stroke styles of round 0")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="stroke seeds, one loop per (style, seed) (the U-Net trains with seed + round)")
    parser.add_argument("--fraction", type=float, default=0.015, help="painted share of each slice in round 0")
    parser.add_argument("--correct", type=float, default=0.005, help="share of each slice painted per round")
    parser.add_argument("--device", default="auto", help="engine device: auto, cpu, cuda, mps")
    parser.add_argument("--eval", type=int, default=None, help="at most this many evaluation slices (2 with --quick)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the full-mask ceiling")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s rounds, 2 evaluation slices")
    parser.add_argument("--variant", default=None, metavar="JSON",
                        help="TrainConfig fields for the U-Net in every round, e.g. '{\"separate_regions\": false}'")
    parser.add_argument("--accept", action="store_true",
                        help="each round the user first accepts the prediction into every pixel they did not paint")
    parser.add_argument("--fresh", action="store_true",
                        help="the U-Net starts each round from a new network instead of the previous round's model")
    parser.add_argument("--decision", choices=DECISIONS, default=None,
                        help="what the user sees of the U-Net, corrects and is scored on (default: the engine's labels)")
    parser.add_argument("--decisions", action="store_true",
                        help="also score other decisions from the same probabilities (second table)")
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
    train = {"budget": args.round_budget, "steps": args.round_steps, "device": args.device}
    if args.variant:
        try:
            train.update(json.loads(args.variant))
        except (json.JSONDecodeError, TypeError) as err:
            raise SystemExit(f"--variant must be a JSON object of TrainConfig fields ({err}).")

    rows = [row for style in args.styles for seed in args.seeds for row in run_loop(data, style, seed, args, train)]
    ceilings = [] if args.no_ceiling else [ceiling_run(data, seed, args) for seed in args.seeds]

    cost = " / ".join(([f"{args.round_steps} steps"] if args.round_steps else [])
                      + ([f"{args.round_budget:g} s"] if args.round_budget else []))
    print()
    print(table(data, rows, ceilings, args))
    print()
    print(f"Round 0: strokes of the styles {', '.join(args.styles)} × seeds {args.seeds}, {args.fraction:g} of each "
          f"training slice; each later round paints the true class over the largest wrong regions of the method's "
          f"own prediction on the training slices, {args.correct:g} of each slice, split evenly between the "
          f"classes' mistakes"
          + (", after accepting the prediction into every pixel the user did not paint (both methods train on "
             "those full labels; the forest on 200,000 of their pixels)" if args.accept else "")
          + f". Mean ± sd over the {len(args.styles) * len(args.seeds)} loops (sample sd). U-Net: "
          f"{cost} a round, " + ("a new network each round" if args.fresh else "trained on from the previous round's model")
          + f" (device {args.device}"
          + (f", TrainConfig {train}" if args.variant else ", engine defaults")
          + (f"; the user sees and corrects '{args.decision}'" if args.decision else "") + "); forest retrained each round. "
          f"Ceiling: the same network for {args.rounds + 1} × the round's time/steps on the full masks of the "
          f"training slices (dense), once per seed.")
    if args.decisions:
        print()
        print(decisions_table(data, rows, ceilings, args))
        print()
        print("U-Net F1 / Rand error / membrane share of each decision, from the same probabilities of the same "
              "models (the engine's labels are separators at the ridge it fitted, column 'U-Net ridge' above; 'keep K' "
              "fits the ridge as the engine does for separator_keep K; 'stroke width' widens the separators of "
              "ridge 0.9 to the width of the round-0 membrane strokes, for the ceiling to that of the true membranes); "
              "mean over the loops.")
    print(f"Scored on the {args.split} slices {', '.join(data.eval_names)}, never trained on.")
    for note in data.notes + [TIMING_NOTE]:
        print(note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rows, "ceilings": ceilings},
                      f, indent=2)
        print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
