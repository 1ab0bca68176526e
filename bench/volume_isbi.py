"""ISBI 2012 as a volume: a 2D U-Net on the painted slices vs a 3D U-Net on blocks.

Protocol
--------
* Data: the 20 ISBI 2012 slices of ``../shared/data/isbi2012`` stacked as one volume
  (20 x 512 x 512; serial sections of 50 nm under 4 nm pixels, so ``--z-ratio 12.5``).
  Painted 1 = membrane, 2 = interior, as in ``strokes_isbi.py``.
* Strokes: the same simulated strokes as ``strokes_isbi.py`` (``--slices-train`` planes spread
  over 0-9, seed ``(seed, slice)``, ~1.5 % of each painted plane); every other plane unpainted.
* Training: both models see the whole volume and its strokes. The 2D model trains on patches
  of the painted planes; the 3D model on blocks of ``--patch-depth`` planes around painted
  voxels (``TrainConfig(dims=3, z_ratio=...)``). Same budget, same device.
* Evaluation: planes 10-19 (never painted), predicted as part of the volume (the 3D model
  uses the neighbouring planes as context), scored like ``strokes_isbi.py``.

Examples
--------
python bench/volume_isbi.py --budget 120 --device cpu
python bench/volume_isbi.py --steps 200 --device cpu
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import Row, add_data_argument, budget_label, print_report, require_data
from bench.strokes_isbi import HELD_OUT, INTERIOR, MEMBRANE, load, score, train_slices


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=None, help="training seconds per model (default 120)")
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead of a budget")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--slices-train", type=int, default=3, help="painted planes, spread over 0-9")
    parser.add_argument("--z-ratio", type=float, default=12.5, help="Z voxel size / XY voxel size (ISBI: 50/4)")
    parser.add_argument("--patch-depth", type=int, default=4, help="planes per 3D training block")
    parser.add_argument("--fraction", type=float, default=0.015)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["unet-2d", "unet-3d"], choices=["unet-2d", "unet-3d"])
    parser.add_argument("--json", default=None)
    add_data_argument(parser)
    args = parser.parse_args(argv)
    budget = args.budget if args.budget is not None else (None if args.steps else 120.0)

    from src_models import TrainConfig, fit
    from evaluation.strokes import simulate_strokes

    root = require_data("isbi2012", args.data)
    planes = [load(root, i) for i in range(20)]
    volume = np.stack([image for image, _ in planes])
    truth = np.stack([t for _, t in planes])
    painted_ids = train_slices(args.slices_train)
    strokes = np.zeros_like(truth)
    for i in painted_ids:
        strokes[i] = simulate_strokes(truth[i], (MEMBRANE, INTERIOR), args.fraction, np.random.default_rng([args.seed, i]))
    share = np.mean([np.mean(strokes[i] > 0) for i in painted_ids])
    print(f"volume {volume.shape}; painted planes {painted_ids} ({100 * share:.2f} % each); "
          f"scored planes {HELD_OUT[0]}-{HELD_OUT[-1]}", flush=True)

    rows = []
    for name in args.methods:
        extra = {"dims": 3, "z_ratio": args.z_ratio, "patch_depth": args.patch_depth} if name == "unet-3d" else {}
        config = TrainConfig(time_budget=budget, steps=args.steps, device=args.device, seed=args.seed, **extra)
        result = fit(volume, strokes, config=config)
        model = result.model
        start = time.perf_counter()
        pred = model.predict(volume)
        predict_s = time.perf_counter() - start
        scores = [score(truth[z], pred[z]) for z in HELD_OUT]
        means = {key: float(np.nanmean([s[key] for s in scores])) for key in scores[0]}
        info = (f"{result.steps} steps in {result.elapsed:.0f} s; network {model.config.dims}D"
                + (f", Z pooling {model.config.z_pooling}" if model.config.dims == 3 else ""))
        print(f"  {name}: {info}", flush=True)
        rows.append(Row(method=name, data="isbi2012 volume", strokes=f"{len(painted_ids)} planes, {100 * share:.1f}%",
                        budget=budget_label(name, budget, args.steps), device=str(model.device),
                        train_s=result.elapsed, predict_s=predict_s, info=info, **means))
    print_report(rows, notes=[
        f"Scores averaged over planes {HELD_OUT[0]}-{HELD_OUT[-1]} (never painted); predict s = the whole "
        f"20-plane volume.",
        "F1 / IoU: membrane; Rand error: adapted Rand error of interior components; pixel error and mIoU over "
        "both classes."], json_path=args.json)


if __name__ == "__main__":
    main()
