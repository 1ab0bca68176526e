"""Does averaging two networks help training from strokes? ISBI 2012, protocol.py's splits.

Two networks train on the same strokes with different training seeds (``seed`` and
``seed + 1000``, engine defaults otherwise); their membrane probabilities are averaged and
drawn as the engine draws one model's: thin separators at a ridge fitted on the averaged
probabilities of the training slices (`separation.fit_ridge` with the model's
``separator_keep``). The same again with each network at half the steps, which costs what one
network costs. Beside them, in the same run and on the same strokes: each network alone and the
random forest.

Example
-------
python bench/ensemble.py --split tune --styles traced centreline thick --seeds 0 --steps 1500 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import (
    TIMING_NOTE,
    markdown_table,
    require_data,
    train_engine,
)
from bench.protocol import (
    add_isbi_lever_arguments,
    isbi,
    isbi_lever_start,
    isbi_style_rows,
)

#: Table columns: (key, heading).
COLUMNS = (("first", "U-Net, seed s"), ("second", "U-Net, seed s + 1000"), ("mean", "mean of the two"),
           ("mean_half", "mean of two at half the steps"), ("forest", "forest"))


def averaged_labels(models, images, train_images):
    """Labels of the averaged probabilities of ``models``, drawn as the engine draws one model's."""
    from src_models.separation import fit_ridge, separate_regions

    def mean_probs(image):
        return np.mean([m.segment(image, probabilities=True).probabilities for m in models], axis=0)

    model = models[0]
    keep = model.info["train_config"].get("separator_keep")
    ridge = fit_ridge([mean_probs(im) for im in train_images], keep) if keep else model.separator_ridge
    labels = []
    for image in images:
        probs = mean_probs(image)
        index = separate_regions(probs, ridge=ridge) if model.separates_regions else probs.argmax(0)
        labels.append(model.class_map.to_ids(index))
    return labels


def run_one(data, style, seed, args):
    """Strokes of one style and seed; the networks, their averages and the forest on them."""
    strokes, run = isbi_lever_start(data, style, seed)

    def networks(steps):
        return [train_engine(data.train_images, strokes, steps=steps, device=args.device, seed=seed + s).model
                for s in (0, 1000)]

    full, half = networks(args.steps), networks(max(1, args.steps // 2))
    for name, model in zip(("first", "second"), full):
        run[name] = data.score(data.eval_truths, [np.asarray(model.segment(im).labels) for im in data.eval_images])
    for name, models in (("mean", full), ("mean_half", half)):
        run[name] = data.score(data.eval_truths, averaged_labels(models, data.eval_images, data.train_images))
    print(f"  {style:10s} seed {seed}: " + "; ".join(
        f"{key} " + " / ".join(f"{run[key][k]:.3f}" for k in ("f1", "rand_error", "share")) for key, _ in COLUMNS),
        flush=True)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_isbi_lever_arguments(parser, "training steps of each network (default 1500)")
    args = parser.parse_args(argv)
    data = isbi(require_data("isbi2012", args.data), args.split, None)
    runs = [run_one(data, style, seed, args) for style in args.styles for seed in args.seeds]
    body = isbi_style_rows(runs, args.styles, [key for key, _ in COLUMNS])
    print()
    print(markdown_table(["style", *(heading for _, heading in COLUMNS)], body))
    print()
    print(f"F1 / Rand error / membrane share, mean ± sd over seeds {args.seeds} (all styles: over every style and "
          f"seed); each U-Net {args.steps} steps ({args.steps // 2} in the last U-Net column) from the strokes on "
          f"device {args.device}, engine defaults. Split {args.split}: trained on {', '.join(data.train_names)}, "
          f"scored on {', '.join(data.eval_names)}. " + TIMING_NOTE)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
