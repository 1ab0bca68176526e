"""Does a self-supervised warm start help training from strokes? ISBI 2012, protocol.py's splits.

A user paints for a minute or more before clicking *Train*; the network could learn the image
meanwhile. Here it does, in the way of Noise2Void (Krull et al. 2019): the network's last decoder
features, through a throw-away 1×1 head, reconstruct pixels replaced by a random neighbour, on
random patches of the training slices (no labels). Training from the strokes then starts from
those weights instead of random ones (engine defaults otherwise). Beside it, in the same run and
on the same strokes: the engine's default new network and the random forest. The warm start is
not counted in the training time (it would run while the user paints).

Example
-------
python bench/warm_start.py --split tune --styles traced centreline thick --seeds 0 --steps 1500 --warm-steps 1000 --device cpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import TIMING_NOTE, markdown_table, mean_sd, require_data
from bench.protocol import (
    add_isbi_lever_arguments,
    isbi,
    isbi_lever_start,
    isbi_style_rows,
)


def warm_start(trainer, steps: int, seed: int, patch: int = 128, batch: int = 4, masked: float = 0.02,
               lr: float = 2e-3) -> float:
    """Train ``trainer``'s new network ``steps`` steps to reconstruct masked pixels of its own training
    images (no labels); return the seconds it took."""
    model = trainer.model
    net, norm = model.net, model.normalization
    planes = [norm.read(view, s, norm.stats(view)) for view in trainer.data.views for s in range(view.n_slices)]
    rng = np.random.default_rng(seed)
    channels = planes[0].shape[0]
    with torch.random.fork_rng():  # the throw-away head's weights from the seed, not from torch's global state
        torch.manual_seed(seed)
        head = torch.nn.Conv2d(net.config.base_width, channels, 1)
    params = [*net.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    n = int(masked * patch * patch)
    net.train()
    t0 = time.perf_counter()
    for step in range(steps):
        crops = []
        for _ in range(batch):
            plane = planes[rng.integers(len(planes))]
            y, x = rng.integers(0, plane.shape[1] - patch + 1), rng.integers(0, plane.shape[2] - patch + 1)
            crop = np.rot90(plane[:, y:y + patch, x:x + patch], rng.integers(4), axes=(1, 2))
            crops.append(np.ascontiguousarray(crop[:, :, ::-1] if rng.random() < 0.5 else crop))
        target = torch.from_numpy(np.stack(crops))
        noisy, mask = target.clone(), torch.zeros(batch, 1, patch, patch)
        for b in range(batch):  # each masked pixel takes the value of a random neighbour within 2 px
            ys, xs = rng.integers(0, patch, n), rng.integers(0, patch, n)
            dy, dx = rng.integers(-2, 3, n), rng.integers(-2, 3, n)
            dx[(dy == 0) & (dx == 0)] = 1
            noisy[b, :, ys, xs] = target[b, :, np.clip(ys + dy, 0, patch - 1), np.clip(xs + dx, 0, patch - 1)]
            mask[b, 0, ys, xs] = 1
        for group in opt.param_groups:  # the engine's schedule: 10-step warm-up, cosine to 5 %
            group["lr"] = lr * min(1.0, (step + 1) / 10) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        opt.zero_grad(set_to_none=True)
        with model._autocast():
            features = net.features(noisy)
        loss = (((head(features.float()) - target) ** 2) * mask).sum() / (mask.sum() * channels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    net.eval()
    return time.perf_counter() - t0


def run_one(data, style, seed, args):
    """Forest, new network and warm-started network on the strokes of one style and seed."""
    from src_models import Task, TrainConfig, make_trainer

    strokes, run = isbi_lever_start(data, style, seed)
    for name, warm_steps in (("new", 0), ("warm", args.warm_steps)):
        trainer = make_trainer(list(data.train_images), strokes, task=Task("classes"),
                               config=TrainConfig(steps=args.steps, device=args.device, seed=seed))
        warm_s = warm_start(trainer, warm_steps, seed) if warm_steps else 0.0
        t0 = time.perf_counter()
        for _ in trainer.run():
            pass
        model = trainer.result.model
        run[name] = data.score(data.eval_truths, [np.asarray(model.segment(im).labels) for im in data.eval_images])
        run[name + "_s"] = {"warm": warm_s, "train": time.perf_counter() - t0}
    print(f"  {style:10s} seed {seed}: " + "; ".join(
        f"{m} " + " / ".join(f"{run[m][k]:.3f}" for k in ("f1", "rand_error", "share")) for m in ("new", "warm", "forest"))
        + f"; warm start {run['warm_s']['warm']:.0f} s", flush=True)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_isbi_lever_arguments(parser, "training steps from the strokes (default 1500)")
    parser.add_argument("--warm-steps", type=int, default=1000, help="self-supervised steps before (default 1000)")
    args = parser.parse_args(argv)
    data = isbi(require_data("isbi2012", args.data), args.split, None)
    runs = [run_one(data, style, seed, args) for style in args.styles for seed in args.seeds]
    body = isbi_style_rows(runs, args.styles, ("new", "warm", "forest"))
    print()
    print(markdown_table(["style", "U-Net, new network", f"U-Net, {args.warm_steps} warm-start steps", "forest"], body))
    print()
    print(f"F1 / Rand error / membrane share, mean ± sd over seeds {args.seeds} (all styles: over every style and "
          f"seed); U-Net {args.steps} steps from the strokes on device {args.device}, engine defaults. Split "
          f"{args.split}: trained on {', '.join(data.train_names)}, scored on {', '.join(data.eval_names)}.")
    print(f"Warm start took {mean_sd([r['warm_s']['warm'] for r in runs], '{:.0f}')} s. " + TIMING_NOTE)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
