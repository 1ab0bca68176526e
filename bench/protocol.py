"""An evaluation that cannot be tuned to: scores as mean ± sd over stroke styles × seeds.

Protocol
--------
* Every (style, seed) draws its own simulated strokes on the same training images
  (`evaluation.strokes.simulate_style`, seeded by (seed, image index)); the U-Net (engine
  defaults, or ``--variant``) and the random-forest anchor train on those same strokes in the
  same run and are scored on the split's evaluation images, never trained on.
* Splits, fixed: ``tune`` is for choosing defaults, ``heldout`` is reported once.

  - ISBI 2012 (1 membrane, 2 interior): training slices 0, 4, 9; ``tune`` scores slices 1-3 and
    5-8, ``heldout`` slices 10-19. Scores: membrane F1, adapted Rand error of the interior
    components, pixel error (means over slices).
  - DSB 2018 (objects): the images of at most 360 px a side, sorted by name; 5 spread over them
    train (as ``objects_dsb.py``), of the others the first half by name is ``tune``, the second
    ``heldout``. U-Net in objects mode, forest on the 2-class strokes + connected components.
    Score: AP@0.5 (mean over images). Otsu + watershed (no strokes) is printed below the table.
  - CamVid (11 classes, void never painted nor scored): 3 training frames as
    ``strokes_camvid.py``; in each sequence the other frames at least 2 positions from a training
    frame, first half by name ``tune``, second half ``heldout`` (one frame dropped between them).
    Scores: mIoU over the 11 classes pooled over frames, pixel error on non-void pixels.
* Table: one row per style with the mean ± sd over seeds, and an "all styles" row over every
  (style, seed). ``--repeats R`` trains the U-Net R times on the same strokes with different
  training seeds; its scores are averaged and the run-to-run sd of the main score is a column.

Examples
--------
python bench/protocol.py --dataset isbi --split tune --styles traced centreline thick --seeds 0 1 2 --steps 1500 --device cpu
python bench/protocol.py --dataset dsb --split heldout --budget 120 --device cpu
python bench/protocol.py --dataset isbi --quick --styles traced dabs --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

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
from evaluation import metrics
from evaluation.strokes import STYLES, simulate_object_style, simulate_style

SPLITS = ("tune", "heldout")


@dataclasses.dataclass
class Data:
    """One data set under the protocol: images, truths and how to paint, train and score them."""

    name: str
    train_names: list[str]
    train_images: list[np.ndarray]
    train_truths: list[np.ndarray]
    eval_names: list[str]
    eval_images: list[np.ndarray]
    eval_truths: list[np.ndarray]
    mode: str  # engine task: "classes" or "objects"
    channel_axis: int | None
    fraction: float
    paint: Callable  # (truth, style, fraction, rng) -> strokes
    forest: Callable  # (images, strokes, seed) -> predict(image)
    score: Callable  # (truths, predictions) -> {key: value}
    columns: list[tuple[str, str]]  # (score key, title); the first is the main score
    notes: list[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- ISBI 2012


def isbi(root, split, n_eval):
    from bench.strokes_isbi import INTERIOR, MEMBRANE, load

    train_ids = [0, 4, 9]
    eval_ids = [i for i in range(10) if i not in train_ids] if split == "tune" else list(range(10, 20))
    eval_ids = _spread(eval_ids, n_eval)
    train = [load(root, i) for i in train_ids]
    evals = [load(root, i) for i in eval_ids]

    def score(truths, preds):
        rows = [{"f1": metrics.class_f1(t, p, MEMBRANE),
                 "rand_error": metrics.adapted_rand_error_interior(t, p, INTERIOR),
                 "pixel_error": metrics.pixel_error(t, p),
                 "share": float(np.mean(p == MEMBRANE) / max(np.mean(t == MEMBRANE), 1e-9))}
                for t, p in zip(truths, preds)]
        return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}

    return Data(
        "isbi2012", [f"slice {i}" for i in train_ids], [im for im, _ in train], [t for _, t in train],
        [f"slice {i}" for i in eval_ids], [im for im, _ in evals], [t for _, t in evals],
        "classes", None, 0.015,
        lambda truth, style, fraction, rng: simulate_style(truth, (MEMBRANE, INTERIOR), style, fraction, rng),
        lambda images, strokes, seed: random_forest(images, strokes, None, "cpu", seed=seed),
        score, [("f1", "F1"), ("rand_error", "Rand err"), ("pixel_error", "pixel err"), ("share", "membrane share")],
        [("F1: membrane; Rand err: adapted Rand error of the interior components; pixel err over both "
          "classes; membrane share: predicted membrane pixels over true ones (1 = as much as the truth); "
          "means over the evaluation slices.")])


def add_isbi_lever_arguments(parser, steps_help: str) -> None:
    """The arguments of the scripts that try one lever on ISBI strokes beside the engine and the forest
    (`warm_start.py`, `ensemble.py`): split, styles, seeds, steps, device, JSON file, data folder."""
    parser.add_argument("--split", choices=SPLITS, default="tune")
    parser.add_argument("--styles", nargs="+", choices=STYLES, default=["traced", "centreline", "thick"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=1500, help=steps_help)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every run as JSON to FILE")
    add_data_argument(parser)


def isbi_lever_start(data, style, seed):
    """The strokes of one style and seed for those scripts, and their run so far: the forest's scores."""
    strokes = [data.paint(truth, style, data.fraction, np.random.default_rng([seed, i]))
               for i, truth in enumerate(data.train_truths)]
    forest = random_forest(data.train_images, strokes, None, "cpu", seed=seed)
    return strokes, {"style": style, "seed": seed,
                     "forest": data.score(data.eval_truths, [np.asarray(forest(im)) for im in data.eval_images])}


def isbi_style_rows(runs, styles, methods) -> list[list[str]]:
    """Table rows of those scripts: per style and over all styles, for each of ``methods`` (keys of
    every run), F1 and Rand error as mean ± sd and the mean membrane share."""
    body = []
    for style in [*styles, "all styles"]:
        rs = [r for r in runs if style in (r["style"], "all styles")]
        body.append([style] + [" / ".join(mean_sd([r[m][k] for r in rs]) for k in ("f1", "rand_error")) + " / "
                               + f"{np.mean([r[m]['share'] for r in rs]):.2f}" for m in methods])
    return body


# --------------------------------------------------------------------------- DSB 2018


def dsb(root, split, n_eval):
    import tifffile

    from bench.objects_dsb import (
        MAX_SIDE,
        N_TRAIN,
        load,
        otsu_watershed,
        random_forest_cc,
    )

    names = []
    for path in sorted((root / "images").glob("*.tif")):
        with tifffile.TiffFile(path) as tif:
            if max(tif.pages[0].shape[:2]) <= MAX_SIDE:
                names.append(path.stem)
    train_idx = sorted({round(x) for x in np.linspace(0, len(names) - 1, N_TRAIN)})
    rest = [n for i, n in enumerate(names) if i not in train_idx]
    half = len(rest) // 2
    eval_names = _spread(rest[:half] if split == "tune" else rest[half:], n_eval)
    train = [load(root, names[i]) for i in train_idx]
    evals = [load(root, n) for n in eval_names]

    def forest(images, strokes, seed):
        return random_forest_cc(images, strokes, None, "cpu")

    def score(truths, preds):
        return {"ap": float(np.mean([metrics.average_precision(t, p) for t, p in zip(truths, preds)]))}

    otsu = otsu_watershed(None, None, None, "cpu")
    ap = score([t for _, t in evals], [otsu(im) for im, _ in evals])["ap"]
    return Data(
        "dsb2018", [names[i] for i in train_idx], [im for im, _ in train], [t for _, t in train],
        eval_names, [im for im, _ in evals], [t for _, t in evals], "objects", None, 0.02,
        lambda truth, style, fraction, rng: simulate_object_style(truth, style, fraction, rng),
        forest, score, [("ap", "AP@0.5")],
        [("AP@0.5: one-to-one matches at IoU > 0.5, TP / (TP + FP + FN), mean over images. The forest "
          "is trained on the strokes as 2 classes, objects are its connected components."),
         f"Anchor without strokes, Otsu threshold + distance watershed, on the same images: AP@0.5 {ap:.3f}."])


# --------------------------------------------------------------------------- CamVid


def camvid(root, split, n_eval):
    from bench.strokes_camvid import CLASS_IDS, load
    from bench.strokes_camvid import split as camvid_split

    names = sorted(p.name for p in (root / "images").glob("*.png"))
    train_ids, pool = camvid_split(names, 3, len(names))
    chosen = []
    for sequence in sorted({n.split("_")[0] for n in names}):
        members = [i for i in pool if names[i].startswith(sequence + "_")]
        half = len(members) // 2
        chosen += members[:half] if split == "tune" else members[half + 1:]
    eval_ids = _spread(sorted(chosen), n_eval)
    train = [load(root, names[i]) for i in train_ids]
    evals = [load(root, names[i]) for i in eval_ids]

    def score(truths, preds):
        inter = np.zeros(len(CLASS_IDS), dtype=np.int64)
        union = np.zeros(len(CLASS_IDS), dtype=np.int64)
        for t, p in zip(truths, preds):
            i_, u_ = metrics.intersection_union(t, p, CLASS_IDS, ignore_id=0)
            inter += i_
            union += u_
        per_class = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
        return {"miou": float(np.nanmean(per_class)),
                "pixel_error": float(np.mean([metrics.pixel_error(t, p, ignore_id=0) for t, p in zip(truths, preds)]))}

    return Data(
        "camvid", [names[i] for i in train_ids], [im for im, _ in train], [t for _, t in train],
        [names[i] for i in eval_ids], [im for im, _ in evals], [t for _, t in evals], "classes", -1, 0.015,
        lambda truth, style, fraction, rng: simulate_style(truth, CLASS_IDS, style, fraction, rng),
        lambda images, strokes, seed: random_forest(images, strokes, None, "cpu", channel_axis=-1, seed=seed),
        score, [("miou", "mIoU"), ("pixel_error", "pixel err")],
        ["mIoU: 11 classes, void ignored, pooled over the evaluation frames; pixel err on non-void pixels."])


DATASETS = {"isbi": (isbi, "isbi2012"), "dsb": (dsb, "dsb2018"), "camvid": (camvid, "camvid")}


def _spread(items, n):
    """At most ``n`` of ``items``, evenly spread (all when ``n`` is None)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[round(x)] for x in np.linspace(0, len(items) - 1, n)]


# --------------------------------------------------------------------------- one (style, seed)


def run_one(data, style, seed, args, variant):
    """Strokes of one style and seed; forest and U-Net on them; their scores and costs."""
    strokes = [data.paint(truth, style, args.fraction or data.fraction, np.random.default_rng([seed, i]))
               for i, truth in enumerate(data.train_truths)]
    run = {"style": style, "seed": seed, "painted": float(np.mean([np.mean(s > 0) for s in strokes]))}

    t0 = time.perf_counter()
    forest = data.forest(data.train_images, strokes, seed)
    run["forest_train_s"] = time.perf_counter() - t0
    run["forest"] = data.score(data.eval_truths, [np.asarray(forest(im)) for im in data.eval_images])

    repeats = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        result = train_engine(data.train_images, strokes, mode=data.mode, budget=args.budget, steps=args.steps,
                              device=args.device, seed=seed + 1000 * r, channel_axis=data.channel_axis, **variant)
        train_s = time.perf_counter() - t0
        model = result.model
        preds = [np.asarray(model.segment(im, channel_axis=data.channel_axis).labels) for im in data.eval_images]
        repeats.append({"scores": data.score(data.eval_truths, preds), "train_s": train_s, "steps": result.steps})
    keys = list(repeats[0]["scores"])
    run["unet"] = {k: float(np.mean([x["scores"][k] for x in repeats])) for k in keys}
    run["unet_repeats"] = [x["scores"] for x in repeats]
    run["unet_train_s"] = float(np.mean([x["train_s"] for x in repeats]))
    run["unet_steps"] = float(np.mean([x["steps"] for x in repeats]))
    main = data.columns[0][0]
    line = " ".join(f"{k} {run['unet'][k]:.3f}/{run['forest'][k]:.3f}" for k in keys)
    print(f"  {style:10s} seed {seed}: {100 * run['painted']:.2f} % painted; U-Net/forest {line}; "
          f"U-Net {run['unet_steps']:.0f} steps in {run['unet_train_s']:.0f} s", flush=True)
    if args.repeats > 1:
        print(f"    U-Net {main} over {args.repeats} repeats: "
              + " ".join(f"{x['scores'][main]:.3f}" for x in repeats), flush=True)
    return run


# --------------------------------------------------------------------------- table


def table(data, runs, args, unet_name):
    main_key, main_title = data.columns[0]
    header = ["style", "runs", "painted %"]
    header += [f"{unet_name} {title}" for _, title in data.columns]
    header += [f"forest {title}" for _, title in data.columns]
    header += [f"{unet_name} train s", f"{unet_name} steps", "forest train s"]
    if args.repeats > 1:
        header.append(f"{unet_name} {main_title} sd, same strokes")
    groups = defaultdict(list)
    for run in runs:
        groups[run["style"]].append(run)
    groups = [(style, groups[style]) for style in args.styles] + [("all styles", runs)]
    body = []
    for style, rs in groups:
        row = [style, str(len(rs)), mean_sd([100 * r["painted"] for r in rs], "{:.2f}")]
        row += [mean_sd([r["unet"][k] for r in rs]) for k, _ in data.columns]
        row += [mean_sd([r["forest"][k] for r in rs]) for k, _ in data.columns]
        row += [mean_sd([r["unet_train_s"] for r in rs], "{:.0f}"), mean_sd([r["unet_steps"] for r in rs], "{:.0f}"),
                mean_sd([r["forest_train_s"] for r in rs], "{:.1f}")]
        if args.repeats > 1:
            row.append(f"{np.mean([np.std([x[main_key] for x in r['unet_repeats']], ddof=1) for r in rs]):.3f}")
        body.append(row)
    return markdown_table(header, body)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="isbi")
    parser.add_argument("--styles", nargs="+", choices=STYLES, default=list(STYLES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="stroke seeds (at least 3 for a claim)")
    parser.add_argument("--split", choices=SPLITS, default="tune",
                        help="tune: choose defaults here; heldout: report once (default tune)")
    parser.add_argument("--budget", type=float, default=None, help="U-Net training seconds (default 120; 10 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="U-Net step limit (instead of, or with, --budget)")
    parser.add_argument("--device", default="auto", help="engine device: auto, cpu, cuda, mps")
    parser.add_argument("--fraction", type=float, default=None,
                        help="painted share of each training image (default: 0.015; DSB 0.02)")
    parser.add_argument("--eval", type=int, default=None, help="at most this many evaluation images (2 with --quick)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="U-Net trainings per (style, seed) on the same strokes, training seeds differing")
    parser.add_argument("--variant", nargs=2, default=None, metavar=("NAME", "JSON"),
                        help="train the U-Net with these TrainConfig fields, named NAME in the table")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 s budget, 2 evaluation images")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every run as JSON to FILE")
    add_data_argument(parser)
    args = parser.parse_args(argv)
    if args.budget is None and args.steps is None:
        args.budget = 10.0 if args.quick else 120.0
    if args.eval is None and args.quick:
        args.eval = 2
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1.")
    unet_name, variant = "U-Net", {}
    if args.variant:
        unet_name = args.variant[0]
        try:
            variant = json.loads(args.variant[1])
        except json.JSONDecodeError as err:
            raise SystemExit(f"--variant {unet_name}: options must be a JSON object ({err}).")

    build, folder = DATASETS[args.dataset]
    root = require_data(folder, args.data)
    data = build(root, args.split, args.eval)
    print(f"{data.name}, split {args.split}: train on {', '.join(data.train_names)}; "
          f"score {len(data.eval_names)} images: {', '.join(data.eval_names)}", flush=True)

    runs = [run_one(data, style, seed, args, variant) for style in args.styles for seed in args.seeds]

    cost = " / ".join(([f"{args.steps} steps"] if args.steps else []) + ([f"{args.budget:g} s"] if args.budget else []))
    print()
    print(table(data, runs, args, unet_name))
    print()
    print(f"Split {args.split} ({'for choosing defaults' if args.split == 'tune' else 'held out: report once'}): "
          f"trained on {', '.join(data.train_names)}; scored on {len(data.eval_names)} images never trained on "
          f"({', '.join(data.eval_names)}).")
    print(f"Mean ± sd over seeds {args.seeds} per style (sample sd), and over every (style, seed) in 'all styles'. "
          f"{unet_name}: {cost}, device {args.device}"
          + (f", TrainConfig {variant}" if variant else ", engine defaults")
          + (f"; {args.repeats} trainings per strokes (seeds s, s + 1000, ...), scores averaged" if args.repeats > 1 else "")
          + ". Forest: 50 trees, depth 10, multiscale_basic_features σ 1-16, same strokes.")
    for note in data.notes + [TIMING_NOTE]:
        print(note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dataset": data.name, "split": args.split, "train": data.train_names, "eval": data.eval_names,
                       "unet": unet_name, "variant": variant, "budget": args.budget, "steps": args.steps,
                       "runs": runs}, f, indent=2)
        print(f"runs written to {args.json}")


if __name__ == "__main__":
    main()
