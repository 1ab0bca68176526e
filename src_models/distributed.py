"""Prediction on a dask.distributed cluster: big images cut into blocks, written by the workers.

The client opens the image lazily, computes its intensity scaling once (`Normalization.stats`)
and creates the output OME-Zarr array with one chunk per block; each block is a dask task that
predicts its region with the whole image's tile grid and context around it (`UNetModel.predict`
with ``region``: the tiles that reach into the block, halo and blending included, are run
exactly as a whole-image pass runs them), so classes-mode labels equal single-process
prediction bit for bit. Workers write their block into the store and return a small status;
nothing is gathered on the client. Each worker loads the model once (`_WorkerCache`).

Objects mode runs in two passes. First each block finds objects on its region widened by
`OBJECT_MARGIN` pixels, keeps its own pixels (ids local to the block, 1..n) and records the
ids on both sides of its borders; the client joins ids that continue across a border
(connected components over those border pixels only) into one id per object, and a second
pass of tasks writes the final ids.

Resumable, and complete or absent: the store is built in a hidden ``.<name>.partial`` folder
beside its place, with a ``done`` flag per block set after the block's data; a re-run with
the same image, model and blocks predicts only blocks not yet done. When every block is done
the helper arrays are removed, the OME-Zarr metadata written and the folder renamed into place.

`distributed` is imported only when a cluster is asked for.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import zarr

from .config import TileConfig
from .errors import InputError
from .images import ImageView
from .objects import instances_from_probabilities, instance_defaults
from .omezarr import OmeZarrLabels, _dimension_names, _group_attrs, labels_store
from .separation import separate_regions

__all__ = ["DEFAULT_BLOCK", "MIN_BLOCK", "OBJECT_MARGIN", "SEPARATION_MARGIN", "ClusterReport", "block_grid",
           "connect", "mask_store", "parse_cluster", "predict_on_cluster", "worker_stats"]

log = logging.getLogger(__name__)

#: Block side in pixels (one task, one chunk of the output). Larger blocks re-run fewer shared tiles
#: at their borders (see bench/README.md); 2048 keeps a block's probabilities under 100 MB.
DEFAULT_BLOCK = 2048
#: Smallest block side accepted.
MIN_BLOCK = 64
#: Objects mode: pixels of context around a block for finding its objects (larger than the objects).
OBJECT_MARGIN = 64
#: Models that draw separators between regions: rows of context around a block for the watershed
#: (as `separation.separate_regions_in_rows` uses for images in bands).
SEPARATION_MARGIN = 64

_CLUSTER = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss)://[^\s/:]+:\d{1,5}$")
_HELPERS = ("done", "raw", "ring", "count", "relabelled")


def _distributed():
    try:
        import distributed
    except ImportError:
        raise InputError("Prediction on a cluster needs the dask.distributed package; install "
                         "napari-unet-strokes[cluster].", setting="cluster") from None
    return distributed


def parse_cluster(text: str) -> tuple[str, object]:
    """``("local", n_workers)`` for ``local:N``, ``("address", text)`` for ``tcp://HOST:PORT``."""
    text = str(text).strip()
    local = _CLUSTER.match(text)
    if local and 1 <= int(local.group(1)) <= 1024:
        return "local", int(local.group(1))
    if _ADDRESS.match(text):
        return "address", text
    raise InputError(f"{text!r} is not a cluster: give local:N (N worker processes on this machine, 1 to 1024) "
                     "or a dask scheduler's address such as tcp://HOST:8786.", setting="cluster")


@contextlib.contextmanager
def connect(cluster: str):
    """A `distributed.Client` for ``local:N`` (a `LocalCluster` of N single-threaded worker
    processes, closed on exit) or for the scheduler at ``tcp://HOST:PORT``."""
    kind, value = parse_cluster(cluster)
    distributed = _distributed()
    local = None
    if kind == "local":
        local = distributed.LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                         dashboard_address=None)
        client = distributed.Client(local)
    else:
        try:
            client = distributed.Client(value, timeout="20s")
        except (OSError, TimeoutError):
            raise InputError(f"No dask scheduler answers at {value}; start one (dask scheduler) or check the "
                             "address.", setting="cluster") from None
    try:
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()


def mask_store(out_dir, image_path) -> Path:
    """Where a cluster writes the mask of ``image_path``: ``<out_dir>/<stem>_mask.ome.zarr``, for
    TIFF and other files too (workers write blocks into a chunked store; a TIFF would need them
    gathered in one place)."""
    from .omezarr import zarr_stem

    return Path(out_dir) / f"{zarr_stem(image_path)}_mask.ome.zarr"


def block_grid(height: int, width: int, block: int) -> list[tuple[int, int, int, int, int, int]]:
    """``(by, bx, y0, y1, x0, x1)`` of every block, row by row; edge blocks are smaller."""
    return [(by, bx, y0, min(height, y0 + block), x0, min(width, x0 + block))
            for by, y0 in enumerate(range(0, height, block))
            for bx, x0 in enumerate(range(0, width, block))]


@dataclass(frozen=True)
class _Job:
    """What a worker needs for the blocks of one image (small, sent with every task)."""

    model: str
    model_key: tuple
    image: str
    level: int
    store: str
    block: int
    height: int
    width: int
    stats: tuple
    tile: TileConfig
    separate: bool
    hidden: tuple
    objects: bool
    instance_options: dict = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "auto"


@dataclass
class ClusterReport:
    """What `predict_on_cluster` did for one image.

    Attributes
    ----------
    path : Path
        The OME-Zarr labels store written.
    shape : tuple
    blocks : int
        Blocks of the image.
    predicted, skipped : int
        Blocks predicted now, and blocks found done by an earlier run.
    objects : int or None
        Objects mode: objects in the mask.
    seconds : float
    """

    path: Path
    shape: tuple
    blocks: int
    predicted: int
    skipped: int
    objects: int | None = None
    seconds: float = 0.0


class _WorkerCache:
    """Per worker process: models by file (loaded once), images opened once."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.models: dict = {}
        self.images: dict = {}
        self.loads: dict = {}  # model file -> times loaded here
        self.blocks: dict = {}  # model file -> blocks predicted here

    def model(self, job: _Job):
        key = (job.model, job.model_key, job.device)
        if key not in self.models:
            from .segmenter import UNetModel

            self.models = {key: UNetModel.load(job.model, device=job.device)}  # one model per worker at a time
            self.loads[job.model] = self.loads.get(job.model, 0) + 1
        self.blocks[job.model] = self.blocks.get(job.model, 0) + 1
        model = self.models[key]
        model.precision = job.precision
        return model

    def image(self, job: _Job, model):
        key = (job.image, job.level)
        if key not in self.images:
            from .batch import open_for_segmentation

            image, axis, _ = open_for_segmentation(model, job.image, job.level)
            self.images = {key: (image, axis)}
        return self.images[key]


def _cache() -> _WorkerCache:
    from distributed import get_worker

    worker = get_worker()
    cache = getattr(worker, "napari_unet_cache", None)
    if cache is None:
        cache = worker.napari_unet_cache = _WorkerCache(worker.state.nthreads)
    return cache


def _stats_here(dask_worker=None) -> dict:
    cache = getattr(dask_worker, "napari_unet_cache", None)
    return {"model_loads": {} if cache is None else dict(cache.loads),
            "blocks": {} if cache is None else dict(cache.blocks),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def worker_stats(client) -> dict:
    """``{worker address: {"model_loads": {model file: n}, "blocks": {model file: n}, "peak_rss": bytes}}``
    of every worker: how often each model was loaded there, how many blocks it predicted, peak memory."""
    return client.run(_stats_here)


def _array(job: _Job, name: str):
    return zarr.open_array(str(Path(job.store) / name), mode="r+")


def _write(job: _Job, name: str, ys: slice, xs: slice, values) -> None:
    array = _array(job, name)
    array[(0,) * len(job.hidden) + (ys, xs)] = values


def _region(job: _Job, y0, y1, x0, x1, margin):
    return max(0, y0 - margin), min(job.height, y1 + margin), max(0, x0 - margin), min(job.width, x1 + margin)


def _predict_block(job: _Job, by: int, bx: int, y0: int, y1: int, x0: int, x1: int) -> dict:
    """Task: predict one block and write it (objects mode: its local ids and border ids)."""
    t0 = time.perf_counter()
    cache = _cache()
    model = cache.model(job)
    image, axis = cache.image(job, model)
    stats = tuple(np.asarray(s, np.float32) for s in job.stats)
    ys, xs = slice(y0, y1), slice(x0, x1)
    if job.objects or job.separate:
        margin = OBJECT_MARGIN if job.objects else SEPARATION_MARGIN
        ey0, ey1, ex0, ex1 = _region(job, y0, y1, x0, x1, margin)
        _, probs = model.predict(image, channel_axis=axis, tile=job.tile, region=(ey0, ey1, ex0, ex1),
                                 probabilities=True, separate=False, stats=stats)
        core = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
        if job.separate:
            separated = separate_regions(probs, ridge=model.separator_ridge)
            _write(job, "0", ys, xs, model.class_map.to_ids(separated)[core])
        else:
            inst = instances_from_probabilities(probs, list(model.class_map.ids), **job.instance_options)
            _write_objects(job, by, bx, inst.astype(np.int64), core)
    else:
        labels = model.predict(image, channel_axis=axis, tile=job.tile, region=(y0, y1, x0, x1), separate=False,
                               stats=stats)
        _write(job, "0", ys, xs, labels)
    _array(job, "done")[by, bx] = True  # after the data: a block is done only once written
    return {"block": (by, bx), "pixels": (y1 - y0) * (x1 - x0), "seconds": time.perf_counter() - t0}


def _write_objects(job: _Job, by: int, bx: int, inst: np.ndarray, core: tuple) -> None:
    """Objects mode: the block's own pixels with ids 1..n, and on each side the ids of its first
    row or column and of the row or column just beyond it (as this block sees them)."""
    own = inst[core]
    ids, inverse = np.unique(own, return_inverse=True)
    lut = np.zeros(int(inst.max()) + 1, np.int64)  # extended-region id -> block id (0: not in the block)
    nonzero = ids[ids > 0]
    lut[nonzero] = np.arange(1, len(nonzero) + 1)
    local = lut[own]
    (cy, cx), (h, w) = (core[0].start, core[1].start), own.shape
    beyond = [inst[cy - 1, cx:cx + w] if cy > 0 else None, inst[cy + h, cx:cx + w] if cy + h < inst.shape[0]
              else None, inst[cy:cy + h, cx - 1] if cx > 0 else None,
              inst[cy:cy + h, cx + w] if cx + w < inst.shape[1] else None]
    ring = np.zeros((8, job.block), np.uint32)
    for side, line in enumerate((local[0], local[-1], local[:, 0], local[:, -1])):
        ring[side, :len(line)] = line
    for side, line in enumerate(beyond):
        if line is not None:
            ring[4 + side, :len(line)] = lut[line]
    raw = _array(job, "raw")
    y0, x0 = by * job.block, bx * job.block
    raw[y0:y0 + h, x0:x0 + w] = local.astype(np.uint32)
    _array(job, "ring")[by, bx] = ring
    _array(job, "count")[by, bx] = len(nonzero)


def _relabel_block(job: _Job, by: int, bx: int, y0: int, y1: int, x0: int, x1: int, lut: np.ndarray) -> dict:
    """Task: objects mode, second pass: the block's final ids from its local ones."""
    raw = _array(job, "raw")[y0:y1, x0:x1]
    _write(job, "0", slice(y0, y1), slice(x0, x1), lut[raw])
    _array(job, "relabelled")[by, bx] = True
    return {"block": (by, bx)}


def _stitch(ring: np.ndarray, counts: np.ndarray, grid) -> tuple[np.ndarray, np.ndarray, int]:
    """``(offsets, final ids per global id, number of objects)``: ids joined where an object
    continues across a block border, as either block sees it (ids on both sides of it)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    offsets = np.concatenate([[0], np.cumsum(counts.ravel())])[:-1].reshape(counts.shape)
    total = int(counts.sum())
    pairs = []
    ny, nx = counts.shape
    for by, bx, y0, y1, x0, x1 in grid:
        for (nb_y, nb_x, length, mine_in, mine_out, their_in, their_out) in (
                (by + 1, bx, x1 - x0, 1, 5, 0, 4), (by, bx + 1, y1 - y0, 3, 7, 2, 6)):
            if nb_y >= ny or nb_x >= nx:
                continue
            a, b = ring[by, bx].astype(np.int64), ring[nb_y, nb_x].astype(np.int64)
            for ours, theirs in ((a[mine_out, :length], b[their_in, :length]),
                                 (a[mine_in, :length], b[their_out, :length])):
                both = (ours > 0) & (theirs > 0)
                pairs.append(np.stack([ours[both] + offsets[by, bx], theirs[both] + offsets[nb_y, nb_x]]))
    edges = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), np.int64)
    graph = coo_matrix((np.ones(edges.shape[1], np.int8), (edges[0], edges[1])), shape=(total + 1, total + 1))
    _, component = connected_components(graph, directed=False)
    _, final = np.unique(component[1:], return_inverse=True)
    lut = np.concatenate([[0], final + 1]).astype(np.int64)
    return offsets, lut, int(final.max()) + 1 if total else 0


def _record(model_path: Path, image_path, level: int, block: int, shape, objects: bool, tile: TileConfig,
            separate: bool) -> dict:
    """What a partial store was made for; a re-run resumes it only if everything matches."""
    st = model_path.stat()
    return {"model": str(model_path.resolve()), "model_size": st.st_size, "model_mtime_ns": st.st_mtime_ns,
            "image": str(Path(image_path).resolve()), "level": level, "block": block, "shape": list(shape),
            "objects": objects, "tile": tile.to_dict() if hasattr(tile, "to_dict") else repr(tile),
            "separate": separate}


def _open_partial(target: OmeZarrLabels, record: dict, shape, dtype, block: int, grid_shape, objects: bool):
    """The hidden partial store for ``target``: resumed when it was made for the same work, else new."""
    partial = target.folder.parent / f".{target.folder.name}.partial"
    if partial.exists():
        try:
            group = zarr.open_group(str(partial), mode="r+")
            if dict(group.attrs).get("napari-unet-partial") == json.loads(json.dumps(record)):
                return partial, group
        except Exception:  # unreadable leftovers: start again
            pass
        shutil.rmtree(partial)
    group = zarr.open_group(str(partial), mode="w-", zarr_format=target.zarr_format)
    full = [int(s) for s in shape]
    chunks = [block, block]
    for axis in target.hidden:
        full.insert(axis, 1)
        chunks.insert(axis, 1)
    names = _dimension_names(target)
    if not objects:
        group.create_array("0", shape=tuple(full), dtype=dtype, chunks=tuple(min(c, s) for c, s in zip(chunks, full)),
                           fill_value=0, **names)
    else:
        group.create_array("raw", shape=tuple(shape), dtype=np.uint32, chunks=(block, block), fill_value=0)
        group.create_array("ring", shape=(*grid_shape, 8, block), dtype=np.uint32, chunks=(1, 1, 8, block),
                           fill_value=0)
        group.create_array("count", shape=grid_shape, dtype=np.int64, chunks=(1, 1), fill_value=0)
        group.create_array("relabelled", shape=grid_shape, dtype=bool, chunks=(1, 1), fill_value=False)
    group.create_array("done", shape=grid_shape, dtype=bool, chunks=(1, 1), fill_value=False)
    group.attrs["napari-unet-partial"] = record
    return partial, group


def _run(client, tasks: list, progress, start: int, total: int) -> None:
    """Submit ``tasks`` (``(function, *args)``), wait for all, report each one done."""
    distributed = _distributed()
    futures = [client.submit(fn, *args, pure=False) for fn, *args in tasks]
    done = start
    for future in distributed.as_completed(futures):
        future.result()  # a worker's error is raised here
        done += 1
        if progress is not None:
            progress(done, total)


def predict_on_cluster(client, model_path, image_path, target, *, level: int = 0, block_size: int = DEFAULT_BLOCK,
                       tile: TileConfig | None = None, argmax: bool = False, overwrite: bool = False,
                       device: str = "cpu", precision: str = "auto",
                       progress: Callable[[int, int], None] | None = None) -> ClusterReport:
    """Segment one 2D image (file or zarr) on a dask cluster into a new OME-Zarr labels store.

    Parameters
    ----------
    client : distributed.Client
    model_path : path-like
        The model file; every worker reads it (a path all workers see).
    image_path : path-like
        An image file or (OME-)zarr image, read lazily by the client and the workers.
    target : path-like
        The store to write (``DIR/<stem>_mask.ome.zarr``), complete or absent.
    level : int
        Resolution level of an OME-Zarr image.
    block_size : int
        Block side in pixels: one task and one output chunk per block.
    tile : TileConfig, optional
        Default: `UNetModel.default_tile` on the CPU.
    argmax : bool
        The most likely class, even for a model that `separates_regions`.
    overwrite : bool
        Replace an existing store.
    device, precision : str
        Where and how the workers run the network (`UNetModel.load`, `UNetModel.precision`).
    progress : callable ``(done_blocks, total_blocks)``, optional
        Blocks found done by an earlier run count as done at the start.
    """
    from .batch import open_for_segmentation
    from .segmenter import UNetModel

    t0 = time.perf_counter()
    if not MIN_BLOCK <= int(block_size) <= 65536:
        raise InputError(f"The block size must be from {MIN_BLOCK} to 65536 pixels, got {block_size}.",
                         setting="block_size")
    block = int(block_size)
    model_path = Path(model_path)
    model = UNetModel.load(model_path, device="cpu")
    image, axis, zimage = open_for_segmentation(model, image_path, level)
    view = ImageView(image, axis)
    if model.config.dims != 2 or view.stack_shape:
        raise InputError(f"{image_path}: prediction on a cluster takes 2D images with a 2D model; this image has "
                         f"shape {view.shape} without channels; predict it without a cluster.")
    if view.n_channels != model.image_channels:
        raise InputError(f"{image_path}: the model expects {model.image_channels} channel(s) but the image has "
                         f"{view.n_channels}.")
    target = labels_store(target, zimage)
    target.check(overwrite=overwrite)
    tile = tile or model.default_tile()
    objects = model.task.objects
    separate = not objects and not argmax and model.separates_regions
    height, width = view.height, view.width
    grid = block_grid(height, width, block)
    grid_shape = (grid[-1][0] + 1, grid[-1][1] + 1)
    record = _record(model_path, image_path, level, block, (height, width), objects, tile, separate)
    partial, group = _open_partial(target, record, (height, width), model.class_map.dtype, block, grid_shape,
                                   objects)
    stats = tuple(s.tolist() for s in model.normalization.stats(view))  # once, for every block
    st = model_path.stat()
    job = _Job(str(model_path.resolve()), (st.st_size, st.st_mtime_ns), str(Path(image_path).resolve()), level,
               str(partial), block, height, width, stats, tile, separate, target.hidden, objects,
               instance_defaults(model) if objects else {}, device, precision)
    done = group["done"][...]
    todo = [b for b in grid if not done[b[0], b[1]]]
    log.info("%s: %d blocks, %d done before", image_path, len(grid), len(grid) - len(todo))
    passes = 2 if objects else 1
    if progress is not None:
        progress(len(grid) - len(todo), passes * len(grid))
    _run(client, [(_predict_block, job, *b) for b in todo], progress, len(grid) - len(todo), passes * len(grid))
    n_objects = None
    if objects:
        offsets, lut, n_objects = _stitch(group["ring"][...], group["count"][...], grid)
        dtype = np.uint16 if n_objects <= np.iinfo(np.uint16).max else np.uint32
        if "0" not in group:
            full = [height, width]
            chunks = [block, block]
            for axis_ in target.hidden:
                full.insert(axis_, 1)
                chunks.insert(axis_, 1)
            group.create_array("0", shape=tuple(full), dtype=dtype, chunks=tuple(min(c, s) for c, s in
                               zip(chunks, full)), fill_value=0, **_dimension_names(target))
        relabelled = group["relabelled"][...]
        counts = group["count"][...]
        second = [b for b in grid if not relabelled[b[0], b[1]]]
        tasks = []
        for b in second:
            off, n = int(offsets[b[0], b[1]]), int(counts[b[0], b[1]])
            tasks.append((_relabel_block, job, *b, np.concatenate([[0], lut[off + 1:off + n + 1]]).astype(dtype)))
        _run(client, tasks, progress, 2 * len(grid) - len(second), 2 * len(grid))
    _commit(target, partial, group, model.labels_metadata(), overwrite)
    return ClusterReport(target.folder, (height, width), len(grid), len(todo), len(grid) - len(todo), n_objects,
                         time.perf_counter() - t0)


def _commit(target: OmeZarrLabels, partial: Path, group, metadata: dict, overwrite: bool) -> None:
    """Remove the helper arrays, write the OME-Zarr metadata and rename the store into place."""
    for name in _HELPERS:
        if name in group:
            shutil.rmtree(partial / name)
    attrs = dict(group.attrs)
    attrs.pop("napari-unet-partial", None)
    group = zarr.open_group(str(partial), mode="r+")
    group.attrs.put({**attrs, **_group_attrs(target, metadata)})
    old = None
    if target.folder.exists():
        if not overwrite:
            raise InputError(f"{target.folder} already exists; choose another folder, or allow overwriting.",
                             setting="overwrite")
        old = target.folder.parent / f".{target.folder.name}.{secrets.token_hex(4)}.old"
        os.replace(target.folder, old)
    os.replace(partial, target.folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
