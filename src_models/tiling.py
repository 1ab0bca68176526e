"""Overlap-tile prediction (Ronneberger et al. 2015, Fig. 2).

The image is cut into tiles: a core plus a halo of context on every side. Outside the
image the context is mirrored. Each tile's output counts over its core and, fading
out, a ``blend`` band of its halo, so neighbouring tiles meet without seams. Tile
starts are multiples of the network's pooling factor, so with a halo that covers the
receptive field and ``blend=0`` the result equals one whole-image pass.
Only one batch of tiles is in memory at a time besides the output region.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .errors import Cancelled

__all__ = ["tile_starts", "blend_weights", "tile_layout", "predict_tiled", "read_mirrored", "predict_volume_tiled",
           "count_volume_blocks", "mirror_indices", "count_tiles", "tile_grid"]


def tile_starts(length: int, core: int) -> list[int]:
    """Start of each core so that cores of size ``core`` cover ``[0, length)``; the last is clamped.

    ``length`` and ``core`` are expected to be multiples of the pooling factor, which the
    starts then are too.
    """
    if length <= core:
        return [0]
    starts = list(range(0, length - core, core))
    starts.append(length - core)
    return starts


def blend_weights(core: int, halo: int, blend: int) -> np.ndarray:
    """1D weights over a tile (``core + 2 * halo`` long): 1 on the core, a linear ramp over
    ``blend`` pixels of the halo on each side, 0 beyond."""
    w = np.zeros(core + 2 * halo, dtype=np.float32)
    w[halo:halo + core] = 1.0
    for d in range(1, blend + 1):
        value = 1.0 - d / (blend + 1)
        w[halo - d] = value
        w[halo + core + d - 1] = value
    return w


def tile_layout(height: int, width: int, tile_size: int, halo: int, multiple: int) -> tuple:
    """Return ``(canvas_h, canvas_w, core_h, core_w, halo)`` for an image and a network.

    The canvas is the image rounded up to ``multiple``; cores are multiples of ``multiple``;
    the halo is rounded up so that every tile (core + 2 halo) is a multiple too. ``tile_size``
    is the largest tile: when the image is not a whole number of cores wide, the cores shrink
    to share it evenly (2048 px with at most 448-px cores: five 416-px cores, not five of 448
    with the last one mostly overlapping its neighbour), which saves work.
    """
    half = max(1, multiple // 2)
    halo = int(math.ceil(halo / half) * half)
    canvas_h = int(math.ceil(height / multiple) * multiple)
    canvas_w = int(math.ceil(width / multiple) * multiple)
    core = max(multiple, (tile_size - 2 * halo) // multiple * multiple)

    def even(canvas: int) -> int:
        n = math.ceil(canvas / core)
        return min(canvas, int(math.ceil(canvas / n / multiple) * multiple))

    return canvas_h, canvas_w, even(canvas_h), even(canvas_w), halo


def read_mirrored(read: Callable, height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Read window ``[y0, y1) x [x0, x1)`` of an image, mirroring it where the window leaves it.

    ``read(ys, xs)`` returns ``(C, h, w)`` for in-bounds slices.
    """
    cy0, cy1 = max(0, y0), min(height, y1)
    cx0, cx1 = max(0, x0), min(width, x1)
    block = read(slice(cy0, cy1), slice(cx0, cx1))
    pads = ((0, 0), (cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1))
    if any(p for pair in pads for p in pair):
        block = np.pad(block, pads, mode="reflect" if min(block.shape[1:]) > 1 else "edge")
    return block


def predict_tiled(
    predict_batch: Callable[[np.ndarray], np.ndarray],
    read: Callable,
    height: int,
    width: int,
    n_out: int,
    *,
    tile_size: int = 256,
    halo: int = 32,
    blend: int = 16,
    batch_size: int = 4,
    multiple: int = 1,
    region: tuple[int, int, int, int] | None = None,
    progress: Callable[[int], None] | None = None,
    cancel=None,
    carry: dict | None = None,
) -> np.ndarray:
    """Predict an image tile by tile and blend the tiles.

    Parameters
    ----------
    predict_batch : callable
        ``(B, C, th, tw) float32 -> (B, n_out, th, tw) float32``; a point-wise function is
        reproduced exactly.
    read : callable
        ``read(ys, xs) -> (C, h, w)`` float32 for in-bounds slices of the image.
    height, width : int
        Image size.
    n_out : int
        Output channels of ``predict_batch``.
    tile_size, halo, blend, batch_size : int
        See `TileConfig`. ``blend`` is capped at the (rounded) halo.
    multiple : int
        Pooling factor of the network (``2 ** depth``); tiles are aligned to it.
    region : (y0, y1, x0, x1), optional
        Part of the image to produce (whole image by default); context still comes from
        the whole image.
    progress : callable, optional
        Called with the number of tiles finished after each batch.
    cancel : threading.Event, optional
        Checked before each batch; raises `Cancelled` when set.
    carry : dict, optional
        For regions predicted as bands of rows, top to bottom, with the same settings: the
        outputs of the tiles the band above shares with this one (empty for the first band).
        Those tiles are not run again (``progress`` counts only the tiles run); on return it
        holds this band's tiles whose output reaches below ``region``, for the next band.
        The result is the same as without it.

    Returns
    -------
    ndarray ``(n_out, y1 - y0, x1 - x0)`` float32
    """
    if height < 1 or width < 1:
        raise ValueError(f"Cannot tile an empty image of size {height}x{width}.")
    y0r, y1r, x0r, x1r = region if region is not None else (0, height, 0, width)
    if not (0 <= y0r < y1r <= height and 0 <= x0r < x1r <= width):
        raise ValueError(f"Region {region} lies outside the {height}x{width} image.")
    tiles, core_h, core_w, halo, blend = tile_grid(height, width, tile_size, halo, blend, multiple,
                                                   (y0r, y1r, x0r, x1r))
    wy = blend_weights(core_h, halo, blend)
    wx = blend_weights(core_w, halo, blend)
    weight2d = wy[:, None] * wx[None, :]
    out = np.zeros((n_out, y1r - y0r, x1r - x0r), dtype=np.float32)
    norm = np.zeros((y1r - y0r, x1r - x0r), dtype=np.float32)

    def add(sy: int, sx: int, result: np.ndarray) -> None:
        # tile pixel (i, j) sits at image pixel (sy - halo + i, sx - halo + j)
        ty0, ty1 = max(y0r, sy - halo), min(y1r, sy + core_h + halo)
        tx0, tx1 = max(x0r, sx - halo), min(x1r, sx + core_w + halo)
        if ty0 >= ty1 or tx0 >= tx1:
            return
        tile_ys = slice(ty0 - (sy - halo), ty1 - (sy - halo))
        tile_xs = slice(tx0 - (sx - halo), tx1 - (sx - halo))
        w = weight2d[tile_ys, tile_xs]
        out[:, ty0 - y0r:ty1 - y0r, tx0 - x0r:tx1 - x0r] += result[:, tile_ys, tile_xs] * w
        norm[ty0 - y0r:ty1 - y0r, tx0 - x0r:tx1 - x0r] += w

    carried = {} if carry is None else carry
    kept = {}

    def keep(sy: int, sx: int, result: np.ndarray) -> None:
        if carry is not None and y1r < height and sy + core_h + blend > y1r:  # the band below needs it
            kept[(sy, sx)] = result if (sy, sx) in carried else result.copy()  # not a view of the batch

    # tiles run in row order and the carried ones form the first row, so the sums add up in
    # the same order as without a carry
    for sy, sx in tiles:
        if (sy, sx) in carried:
            add(sy, sx, carried[(sy, sx)])
            keep(sy, sx, carried[(sy, sx)])
    todo = [t for t in tiles if t not in carried]
    done = 0
    for b in range(0, len(todo), batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Prediction was cancelled.")
        batch = todo[b:b + batch_size]
        inputs = np.stack([
            read_mirrored(read, height, width, sy - halo, sy + core_h + halo, sx - halo, sx + core_w + halo)
            for sy, sx in batch
        ])
        outputs = predict_batch(inputs)
        for (sy, sx), result in zip(batch, outputs):
            add(sy, sx, result)
            keep(sy, sx, result)
        done += len(batch)
        if progress is not None:
            progress(done)
    if carry is not None:
        carry.clear()
        carry.update(kept)
    out /= np.maximum(norm, 1e-12)
    return out


def tile_grid(height: int, width: int, tile_size: int, halo: int, blend: int, multiple: int,
              region: tuple[int, int, int, int] | None = None):
    """Core starts ``[(sy, sx), ...]`` of the tiles whose output reaches ``region``, with
    ``core_h, core_w``, the rounded halo and the capped blend."""
    y0r, y1r, x0r, x1r = region if region is not None else (0, height, 0, width)
    canvas_h, canvas_w, core_h, core_w, halo = tile_layout(height, width, tile_size, halo, multiple)
    blend = min(blend, halo)  # how far a tile's output extends beyond its core
    tiles = [
        (sy, sx)
        for sy in tile_starts(canvas_h, core_h)
        if sy - blend < y1r and sy + core_h + blend > y0r
        for sx in tile_starts(canvas_w, core_w)
        if sx - blend < x1r and sx + core_w + blend > x0r
    ]
    return tiles, core_h, core_w, halo, blend


def count_tiles(height: int, width: int, tile_size: int, halo: int, blend: int, multiple: int,
                region: tuple[int, int, int, int] | None = None, after=None) -> int:
    """Number of tiles `predict_tiled` runs for ``region`` (the whole image by default);
    with ``after`` (the region of the band above, predicted with a ``carry``), less the
    tiles carried over from it."""
    tiles = set(tile_grid(height, width, tile_size, halo, blend, multiple, region)[0])
    if after is not None:
        tiles -= set(tile_grid(height, width, tile_size, halo, blend, multiple, after)[0])
    return len(tiles)




def mirror_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices ``start..stop-1`` folded into ``[0, length)`` by mirroring (``-1 -> 1``)."""
    idx = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(idx)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx)


def predict_volume_tiled(
    predict_block: Callable[[np.ndarray], np.ndarray],
    read_plane: Callable,
    depth: int,
    height: int,
    width: int,
    write: Callable,
    *,
    tile_size: int = 128,
    halo: int = 16,
    z_tile: int = 16,
    z_halo: int = 4,
    multiple: int = 1,
    z_multiple: int = 1,
    region: tuple[int, int, int, int] | None = None,
    progress: Callable[[int], None] | None = None,
    cancel=None,
) -> int:
    """Predict a volume block by block for a 3D network (overlap-tile in three dimensions).

    Each block is a core plus a halo on every side (``halo`` in-plane, ``z_halo`` along Z),
    mirrored where it leaves the volume; only the cores are kept, so the blocks do not
    overlap in the output and nothing needs blending.

    Parameters
    ----------
    predict_block : callable
        ``(1, C, bz, by, bx) float32 -> (1, K, bz, by, bx) float32`` probabilities.
    read_plane : callable
        ``read_plane(z, ys, xs) -> (C, h, w)`` float32 for in-bounds slices of plane ``z``.
    depth, height, width : int
        Volume size.
    write : callable
        ``write(zs, ys, xs, probs)`` receives each core's probabilities ``(K, dz, dy, dx)``
        with its position (slices relative to ``region``).
    tile_size, halo, z_tile, z_halo : int
        Block side in-plane and along Z, halo included.
    multiple, z_multiple : int
        Pooling factors of the network in-plane and along Z; block sizes are multiples.
    region : (y0, y1, x0, x1), optional
        In-plane part to produce, for every plane.

    Returns
    -------
    int
        Number of blocks.
    """
    y0r, y1r, x0r, x1r = region if region is not None else (0, height, 0, width)
    if not (0 <= y0r < y1r <= height and 0 <= x0r < x1r <= width):
        raise ValueError(f"Region {region} lies outside the {height}x{width} image.")
    _, _, core_h, core_w, halo = tile_layout(height, width, tile_size, halo, multiple)
    z_core = max(1, min(depth, z_tile - 2 * z_halo))
    pad_z = (-(z_core + 2 * z_halo)) % z_multiple  # what even halos cannot fill goes after the block
    blocks = [(sz, sy, sx)
              for sz in range(0, depth, z_core)
              for sy in range(y0r - y0r % core_h, y1r, core_h)
              for sx in range(x0r - x0r % core_w, x1r, core_w)]
    for n, (sz, sy, sx) in enumerate(blocks, start=1):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Prediction was cancelled.")
        planes = mirror_indices(sz - z_halo, sz + z_core + z_halo + pad_z, depth)
        block = np.stack([read_mirrored(lambda ys, xs, z=int(z): read_plane(z, ys, xs), height, width,
                                        sy - halo, sy + core_h + halo, sx - halo, sx + core_w + halo)
                          for z in planes], axis=1)
        probs = predict_block(block[None])[0]
        ez, ey, ex = min(depth, sz + z_core), min(y1r, sy + core_h), min(x1r, sx + core_w)
        by, bx = max(y0r, sy), max(x0r, sx)
        core = probs[:, z_halo:z_halo + ez - sz, halo + by - sy:halo + ey - sy, halo + bx - sx:halo + ex - sx]
        write(slice(sz, ez), slice(by - y0r, ey - y0r), slice(bx - x0r, ex - x0r), core)
        if progress is not None:
            progress(n)
    return len(blocks)


def count_volume_blocks(depth: int, height: int, width: int, tile_size: int, halo: int, z_tile: int, z_halo: int,
                        multiple: int, region=None) -> int:
    """How many blocks `predict_volume_tiled` will run (for progress bars)."""
    y0r, y1r, x0r, x1r = region if region is not None else (0, height, 0, width)
    _, _, core_h, core_w, _ = tile_layout(height, width, tile_size, halo, multiple)
    z_core = max(1, min(depth, z_tile - 2 * z_halo))
    return (math.ceil(depth / z_core) * len(range(y0r - y0r % core_h, y1r, core_h))
            * len(range(x0r - x0r % core_w, x1r, core_w)))
