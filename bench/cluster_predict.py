"""Throughput of prediction on a dask.distributed LocalCluster against one process: one table.

    python bench/cluster_predict.py                          # 4096² synthetic image, blocks 1024 and 2048
    python bench/cluster_predict.py --size 2048 --quick      # smoke run

The same uint8 zarr image (chunks 1024²) is segmented into an OME-Zarr labels store (a) by one
process with 2 torch threads (`segment_file`, streamed chunk by chunk) and (b) by
`src_models.distributed.predict_on_cluster` on a LocalCluster of 1 and 2 worker processes of one
thread each. The model is the engine's untrained small preset (speed does not depend on the
weights). Time of (b) includes the model load on each worker but not the cluster start-up.
Memory: peak resident set of the process (a) and of the largest worker (b). Each single-process run
is timed before and after the cluster runs (the best counts), after a warm-up. The load average
of the machine is printed below the table: the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import zarr  # noqa: E402

from napari_unet._sample_data import synthetic_nuclei  # noqa: E402
from src_models import ClassMap, UNetModel, segment_file  # noqa: E402
from src_models.distributed import block_grid, connect, predict_on_cluster, worker_stats  # noqa: E402
from src_models.tiling import count_tiles  # noqa: E402


def make_input(folder: Path, size: int) -> Path:
    """A ``size``² zarr array of synthetic nuclei (a 1024² sample tiled up), chunks 1024²."""
    tile, _ = synthetic_nuclei((1024, 1024), n_nuclei=400, seed=0)
    image = np.tile(tile, (size // 1024 + 1, size // 1024 + 1))[:size, :size]
    path = folder / "big.zarr"
    array = zarr.create_array(str(path), shape=image.shape, dtype=image.dtype, chunks=(1024, 1024))
    array[...] = image
    return path


def tiles_run(model, size: int, block: int | None) -> int:
    """Network tiles run for a ``size``² image, whole or in blocks (a block runs every tile reaching it)."""
    tile, multiple = model.default_tile(), model.config.size_multiple
    regions = [None] if block is None else [(y0, y1, x0, x1) for _, _, y0, y1, x0, x1 in block_grid(size, size, block)]
    return sum(count_tiles(size, size, tile.tile_size, tile.halo, tile.blend, multiple, r) for r in regions)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="image side in pixels (default 4096)")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the single process (default 2)")
    parser.add_argument("--quick", action="store_true", help="2048² and blocks of 1024 only")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.block_sizes = 2048, [1024]
    load_before = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    rows = []
    try:
        image = make_input(folder, args.size)
        model_path = folder / "model.safetensors"
        UNetModel.new(1, ClassMap((1, 2)), preset="small", device="cpu", seed=0).save(model_path)
        mpx = args.size * args.size / 1e6

        torch.set_num_threads(args.threads)
        model = UNetModel.load(model_path, device="cpu")
        model.segment(np.zeros((512, 512), np.uint8))  # warm-up: kernels chosen, caches filled

        def single_process(name: str) -> float:
            t0 = time.perf_counter()
            segment_file(model, image, folder / f"{name}_mask.ome.zarr")
            return time.perf_counter() - t0

        first = single_process("single")
        reference = zarr.open_array(str(folder / "single_mask.ome.zarr" / "0"), mode="r")[...]

        for workers in args.workers:
            with connect(f"local:{workers}") as client:
                for block in args.block_sizes:
                    target = folder / f"w{workers}_b{block}_mask.ome.zarr"
                    t0 = time.perf_counter()
                    predict_on_cluster(client, model_path, image, target, block_size=block)
                    seconds = time.perf_counter() - t0
                    got = zarr.open_array(str(target / "0"), mode="r")[...]
                    if not np.array_equal(got, reference):
                        print(f"warning: {workers} worker(s), blocks {block}: labels differ from one process",
                              file=sys.stderr)
                    peak = max(s["peak_rss"] for s in worker_stats(client).values()) / 2**20
                    extra = tiles_run(model, args.size, block) / tiles_run(model, args.size, None)
                    rows.append((f"LocalCluster {workers} x 1 thread", str(block), seconds, mpx / seconds,
                                 None, peak, f"{extra:.2f}"))
        again = single_process("again")  # the machine may be shared: the single process before and after
        single = min(first, again)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.insert(0, (f"single process, {args.threads} threads (best of 2: {first:.1f}, {again:.1f} s)", "-",
                        single, mpx / single, 1.0, rss, "1.00"))
        rows[1:] = [(name, block, seconds, rate, single / seconds, peak, extra)
                    for name, block, seconds, rate, _, peak, extra in rows[1:]]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"{args.size}² uint8 image ({mpx:.1f} Mpx), small preset, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs\n")
    print("| run | block | seconds | Mpx/s | throughput vs single process | tiles run vs single process "
          "| peak RSS per process (MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, block, seconds, rate, ratio, peak, extra in rows:
        print(f"| {name} | {block} | {seconds:.1f} | {rate:.2f} | {ratio:.2f} | {extra} | {peak:.0f} |")
    print(f"\nload average (1, 5, 15 min) before: {', '.join(f'{v:.1f}' for v in load_before)}; "
          f"after: {', '.join(f'{v:.1f}' for v in load_after)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
