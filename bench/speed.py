"""Speed and scale of the engine: one table, each figure beside its reference.

    python bench/speed.py                      # the machine's default device, --big 4096
    python bench/speed.py --device cpu --quick # smoke run, a minute or two
    python bench/speed.py --big 16384          # the target size: 268 Mpx, ~2 min at 2 Mpx/s, far longer on a busy CPU
    python bench/speed.py --big 0 --stack 200  # a 200 x 2048² stack (800 Mpx)

Rows: bare train step (the engine's default model for the device, `UNetModel.new(preset="auto")`,
forward + backward + AdamW, channels-last and bf16 autocast as the engine uses them), the engine's
whole loop (`Trainer.run`: sampling + augmentation + step), bare forward vs tiled
`UNetModel.predict`, FLOPs per step (`torch.utils.flop_counter`), Trainer construction to first
preview, and peak resident memory of streaming prediction of a big memory-mapped uint16 TIFF into a
memory-mapped TIFF (measured in a fresh subprocess). Every timing is a median after warm-up.
CPU: batch 4 of 256², predict on 2048²; CUDA: batch 8 of 512² (the GPU reference),
predict on 4096².
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.flop_counter import FlopCounterMode

from src_models import (
    ClassMap,
    TileConfig,
    TrainConfig,
    Trainer,
    UNetModel,
    pick_device,
)
from src_models.device import PRECISION_CHOICES, cpu_has_native_bf16
from evaluation.strokes import simulate_strokes

#: The target figures. CPU: 2 cores, base 16 depth 3, batch 4 of 256².
#: CUDA: one H100, base 32 depth 4, bf16 + channels-last, batch 8 of 512² (379 img/s).
REFERENCE = {
    "cpu": {"train": 3.3, "predict": 2.5, "preview": 15.0},
    "cuda": {"train": 379 / 8, "predict": None, "preview": None},
}
TARGET_NOTE = ("targets: CPU train >= 3 steps/s, predict >= 2 Mpx/s, loop >= 0.9x bare, predict >= 0.8x bare "
               "forward (GPU), first preview <= 15 s, streaming peak RSS <= 2 GB")
H100_BF16_DENSE_FLOPS = 989e12


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup, repeats):
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def synthetic(size, seed=0):
    """A grey image of bright blobs on a gradient, its two-class truth and simulated strokes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.ones((size, size), np.uint8)
    for _ in range(size * size // 4000):
        cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(5, 15)
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, size), max(cx - r, 0), min(cx + r + 1, size)
        disk = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        truth[y0:y1, x0:x1][disk] = 2
    image = (truth.astype(np.float32) * 1000 + rng.normal(0, 300, truth.shape) + xx * 0.2).clip(0, 65535).astype(np.uint16)
    strokes = simulate_strokes(truth, [1, 2], 0.015, rng=seed)
    return image, truth, strokes


def new_model(device, precision, seed=0):
    model = UNetModel.new(1, ClassMap((1, 2)), preset="auto", device=device, seed=seed)
    model.precision = precision
    return model


def first_preview(device, precision, size=1024):
    """Seconds from `Trainer(...)` on a ``size``² image with strokes to a predicted 512² preview."""
    image, _, strokes = synthetic(size)
    sync(device)
    t = time.perf_counter()
    trainer = Trainer(image, strokes, config=TrainConfig(steps=1, time_budget=None, batch_size=4, patch_size=256,
                                                         device=str(device), class_prior=False, precision=precision))
    for _ in trainer.run():
        break
    lo, hi = size // 2 - 256, size // 2 + 256
    trainer.model.predict(image, region=(lo, hi, lo, hi))
    sync(device)
    return time.perf_counter() - t


def bare_step(model, batch, patch, device):
    """A closure doing forward + backward + AdamW on a fixed random batch, as the engine does."""
    net = model.net
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.randn(batch, 1, patch, patch, device=device)
    if model.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch, patch, patch), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with model._autocast():
            logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
    return step


def loop_steps_per_s(device, precision, batch, patch, steps, warmup):
    """Median step rate of `Trainer.run` (sampling + augmentation + step) on a 1024² image."""
    image, _, strokes = synthetic(1024, seed=1)
    trainer = Trainer(image, strokes, config=TrainConfig(steps=steps + warmup, time_budget=None, batch_size=batch,
                                                         patch_size=patch, device=str(device), class_prior=False,
                                                         precision=precision))
    stamps = []
    gen = trainer.run()
    for _ in gen:
        sync(device)
        stamps.append(time.perf_counter())
    gaps = np.diff(stamps)[warmup - 1:] if warmup else np.diff(stamps)
    return 1.0 / float(np.median(gaps))


def step_flops(model, batch, patch, device):
    step = bare_step(model, batch, patch, device)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def forward_mpx_per_s(model, tile: TileConfig, device, warmup, repeats):
    net = model._inference_net()  # what predict runs: eval mode, batch-norm folded into the convolutions
    x = torch.randn(tile.batch_size, 1, tile.tile_size, tile.tile_size, device=device)
    if model.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def fwd():
        with model._autocast():
            net(x).float().softmax(1)
    seconds = timed(fwd, device, warmup, repeats)
    return tile.batch_size * tile.tile_size ** 2 / seconds / 1e6


def predict_mpx_per_s(model, size, tile, device, warmup, repeats):
    image = synthetic(size, seed=2)[0]
    seconds = timed(lambda: model.predict(image, tile=tile), device, warmup, repeats)
    return size * size / seconds / 1e6


STREAM_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from src_models import ClassMap, UNetModel
from src_models.io import StreamedLabels, open_image_lazily
def peak_mb():  # VmHWM: ru_maxrss would include the parent's memory (it survives fork + exec)
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
image = open_image_lazily(sys.argv[2])
model = UNetModel.new(1, ClassMap((1, 2)), preset="auto", device=sys.argv[4], seed=0)
model.separates_regions = sys.argv[5] == "1"  # a membrane model's thin separators (src_models.separation)
model.precision = sys.argv[6]
baseline = peak_mb()
t = time.perf_counter()
with StreamedLabels(sys.argv[3], image.shape, model.class_map.dtype, overwrite=True) as out:
    model.predict(image, out=out.array)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "maxrss_mb": peak_mb(),
                  "baseline_mb": baseline,
                  "type": type(image).__name__}))
"""


def stream_big(shape, device, precision, separate=False):
    """Peak RSS (MB, VmHWM) and seconds of predicting a uint16 memory-mapped TIFF of ``shape``
    (``(H, W)`` or a stack ``(Z, H, W)``) in a fresh process (``separate``: with thin separators)."""
    import tifffile
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "big.tif", Path(tmp) / "big_mask.tif"
        n_bytes = int(np.prod(shape, dtype=np.int64)) * 2
        big = tifffile.memmap(src, shape=shape, dtype=np.uint16, bigtiff=n_bytes > 2**31, photometric="minisblack")
        planes = big.reshape(-1, *shape[-2:])
        tile = synthetic(1024, seed=3)[0]
        h, w = shape[-2:]
        for plane in planes:  # written block by block: this process never holds the whole image
            for y in range(0, h, 1024):
                for x in range(0, w, 1024):
                    plane[y:y + 1024, x:x + 1024] = tile[:min(1024, h - y), :min(1024, w - x)]
            big.flush()
        del big, planes
        proc = subprocess.run([sys.executable, "-c", STREAM_CHILD, str(Path(__file__).resolve().parents[1]),
                               str(src), str(dst), str(device), str(int(separate)), precision],
                              capture_output=True, text=True,
                              check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])


def machine(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads, hardware bf16 {'yes' if cpu_has_native_bf16() else 'no'}, " \
           f"load average {os.getloadavg()[0]:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes (smoke test)")
    parser.add_argument("--big", type=int, default=4096, help="side of the streamed uint16 TIFF (0: skip)")
    parser.add_argument("--stack", type=int, default=0,
                        help="also stream a stack of this many 2048² uint16 slices (200: ~5 min on 2 cores)")
    parser.add_argument("--separate", action="store_true",
                        help="also stream the --big image with a model that draws thin separators (membranes)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="bf16 autocast or fp32 (auto: bf16 on CUDA and on CPUs with hardware bf16)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    ref = REFERENCE["cuda" if cuda else "cpu"]
    batch, patch = (8, 512) if cuda else (4, 256)
    warm, reps = (1, 3) if args.quick else (2, 6)
    if cuda:
        warm, reps = warm * 5, reps * 10
    pred_size = 1024 if args.quick else (4096 if cuda else 2048)
    rows = []

    def row(figure, measured, unit, reference=None, ratio=None, note=""):
        if ratio is None and reference:
            ratio = measured / reference
        rows.append({"figure": figure, "measured": measured, "unit": unit, "reference": reference,
                     "ratio": ratio, "note": note})

    # First: time to first preview, while nothing is warm yet (the situation of a click on Train).
    preview = first_preview(device, args.precision)
    row("Trainer() -> 1 step -> 512² preview (1024² image)", preview, "s", ref["preview"],
        note="engine only; the plugin adds layer/thread overhead (not measured here)")

    model = new_model(device, args.precision)
    cfg = model.config
    step = bare_step(model, batch, patch, device)
    # Bare step and loop alternate over a few rounds, so a slow spell of a shared machine
    # lands on both rather than on one of them; each figure is the median of its rounds.
    bares, loops = [], []
    for _ in range(1 if args.quick else 3):
        bares.append(1.0 / timed(step, device, warm, reps))
        loops.append(loop_steps_per_s(device, args.precision, batch, patch, reps, warm))
    bare, loop = statistics.median(bares), statistics.median(loops)
    row(f"bare train step (base {cfg.base_width}, depth {cfg.depth}, batch {batch} of {patch}²)", bare, "steps/s",
        ref["train"], note=("bf16 autocast" if model.bf16 else "fp32") + " + channels-last")
    row("Trainer.run loop (sampling + augmentation + step)", loop, "steps/s", None, loop / bare,
        note="ratio to the bare step (target >= 0.9)")

    flops = step_flops(new_model(device, args.precision), batch, patch, device)
    row("model FLOPs per train step", flops / 1e9, "GFLOP", note="torch.utils.flop_counter, fwd + bwd")
    achieved = flops * bare
    row("achieved (bare step)", achieved / 1e9, "GFLOP/s", None,
        achieved / H100_BF16_DENSE_FLOPS if cuda else None,
        note="ratio: MFU of 989 TFLOP/s bf16 dense (H100)" if cuda else "")

    tile = model.default_tile()
    fwd = forward_mpx_per_s(model, tile, device, warm, reps)
    row(f"bare forward ({tile.batch_size} x {tile.tile_size}² tiles)", fwd, "Mpx/s")
    pred = predict_mpx_per_s(model, pred_size, tile, device, 1, 1 if args.quick else (5 if cuda else 2))
    row(f"UNetModel.predict ({pred_size}², halo {tile.halo})", pred, "Mpx/s", ref["predict"], note="")
    rows.append({"figure": "predict / bare forward", "measured": pred / fwd, "unit": "x", "reference": None,
                 "ratio": None, "note": "target >= 0.8 (GPU); the halo alone costs "
                 f"{1 - ((tile.tile_size - 2 * tile.halo) / tile.tile_size) ** 2:.0%} of the pixels"})

    streams = ([(args.big, args.big)] if args.big else []) + ([(args.stack, 2048, 2048)] if args.stack else [])
    for shape, separate in [(shape, False) for shape in streams] + \
            ([(streams[0], True)] if args.separate and streams else []):
        res = stream_big(shape, device, args.precision, separate)
        size = " x ".join(map(str, shape[:-2])) + (" x " if len(shape) > 2 else "") + f"{shape[-2]}²"
        size += ", thin separators" if separate else ""
        n_px = int(np.prod(shape, dtype=np.int64))
        row(f"streaming predict {size} uint16 memmap TIFF -> memmap TIFF: peak RSS", res["maxrss_mb"], "MB",
            2048, note=f"{res['baseline_mb']:.0f} MB before predicting (torch + model); {res['seconds']:.0f} s, "
            f"{n_px / res['seconds'] / 1e6:.2f} Mpx/s, input as {res['type']}; reference: the 2 GB limit")

    print(f"Machine: {machine(device)}; device {device}. Timings are wall-clock medians on a possibly shared "
          "machine: treat them as rough.")
    print(TARGET_NOTE)
    print()
    print("| figure | measured | reference | ratio | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        ref_s = "-" if r["reference"] is None else f"{r['reference']:.4g} {r['unit']}"
        ratio_s = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"| {r['figure']} | {r['measured']:.4g} {r['unit']} | {ref_s} | {ratio_s} | {r['note']} |")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
