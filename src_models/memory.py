"""Fitting prediction to the machine's memory: smaller retries after the device ran out of
memory, and giving back the pages of memory-mapped files that streaming has touched."""
from __future__ import annotations

import dataclasses
import logging
import mmap

import torch

from .config import TileConfig
from .errors import InputError

__all__ = ["release_file_pages", "smaller_after_out_of_memory"]

log = logging.getLogger(__name__)


def release_file_pages(*arrays) -> None:
    """Let the kernel drop the pages of memory-mapped files read or written so far.

    Streaming a big memory-mapped TIFF touches every page of the input and of the output;
    they count as this process's resident memory until the kernel needs them back. Written
    pages are flushed first, so nothing is lost; later reads fault them in again from disk.
    """
    for array in arrays:
        base = array
        while base is not None and getattr(base, "_mmap", None) is None:
            base = getattr(base, "base", None)
        mapped = getattr(base, "_mmap", None)
        if mapped is None or not hasattr(mapped, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            continue
        try:
            if getattr(base, "flags", None) is not None and base.flags.writeable:
                mapped.flush()
            mapped.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or not allowed here: only memory use is at stake
            pass


def smaller_after_out_of_memory(model, tile: TileConfig, original: TileConfig, notice=None) -> TileConfig:
    """The tile settings to retry with after ``model``'s device ran out of memory.

    Steps: half the tiles per batch (2D, down to 1), then half the tile side (while the core
    keeps at least two pooling multiples), then, for a 3D network, half the block depth
    (while it exceeds its halos), then the CPU with the original settings. On the CPU,
    with nothing smaller left, raises `InputError`.
    """
    where = "GPU" if model.device.type == "cuda" else model.device.type.upper()
    if model.device.type == "cuda":
        torch.cuda.empty_cache()
    smaller, shallower = tile.tile_size // 2, tile.z_tile // 2
    if model.config.dims == 2 and tile.batch_size > 1:  # a 3D network predicts one block at a time
        tile = dataclasses.replace(tile, batch_size=tile.batch_size // 2)
        message = f"{where} out of memory: retrying with {tile.batch_size} tile(s) per batch."
    elif smaller >= 2 * tile.halo + 2 * model.config.size_multiple:
        tile = dataclasses.replace(tile, tile_size=smaller)
        message = f"{where} out of memory: retrying with {smaller}-pixel tiles."
    elif model.config.dims == 3 and shallower > 2 * tile.z_halo:
        tile = dataclasses.replace(tile, z_tile=shallower)
        message = f"{where} out of memory: retrying with blocks of {shallower} planes."
    elif model.device.type != "cpu":
        model.to("cpu")
        tile = original
        message = f"{where} out of memory even with the smallest tiles: predicting on the CPU (slower)."
    else:
        raise InputError(f"Out of memory even with {tile.tile_size}-pixel tiles: close other programs, "
                         "or predict a smaller region or fewer planes at a time.")
    log.warning(message)
    if notice is not None:
        notice(message)
    return tile
