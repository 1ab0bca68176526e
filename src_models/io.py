"""Reading images and writing label masks (TIFF, compressed, readable by Fiji and tifffile)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from .errors import InputError

__all__ = ["STREAM_PIXELS", "create_labels_tiff", "labels_dtype", "open_image_lazily", "read_image", "write_labels_tiff"]

#: Images with more pixels than this are best predicted tile by tile from their source into a
#: memory-mapped TIFF (`create_labels_tiff`) rather than into memory: the CLI and the plugin do so.
STREAM_PIXELS = 64 * 2**20


def read_image(path) -> np.ndarray:
    """Read an image or labels file (TIFF via tifffile, other formats via scikit-image).

    Raises `InputError` with a sentence when the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"File not found: {path}. Check the path and spelling.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return tifffile.imread(path)
        from skimage import io as skio
        return np.asarray(skio.imread(path))
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"Cannot read {path} as an image ({reason}); use a TIFF, PNG or JPEG file.") from None


def open_image_lazily(path):
    """Open an image without reading it all: for images too large for memory.

    Uncompressed TIFFs come back as a read-only `tifffile.memmap`; other TIFFs (compressed,
    tiled, OME pyramids: level 0) as a `zarr` array that decodes chunks on demand; ``.zarr``
    folders via `zarr.open`; anything else (PNG, JPEG) is read whole with `read_image`.
    Every result has ``shape``, ``dtype`` and NumPy slicing, so `UNetModel.predict` takes it.
    """
    path = Path(path)
    if path.suffix.lower() == ".zarr" and path.is_dir():
        import zarr
        return zarr.open(str(path), mode="r")
    if not path.is_file():
        raise InputError(f"File not found: {path}. Check the path and spelling.")
    if path.suffix.lower() not in (".tif", ".tiff"):
        return read_image(path)
    try:
        return tifffile.memmap(path, mode="r")
    except ValueError:  # compressed, tiled or otherwise not contiguous: decode chunk by chunk
        pass
    try:
        import zarr
        store = tifffile.imread(path, aszarr=True)
        z = zarr.open(store, mode="r")
        return z if hasattr(z, "shape") else z["0"]  # multiscale group: the full resolution
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"Cannot read {path} as an image ({reason}); use a TIFF, PNG or JPEG file.") from None


def create_labels_tiff(path, shape, dtype=np.uint8, *, overwrite: bool = False,
                       metadata: dict | None = None) -> np.memmap:
    """Create an uncompressed TIFF of ``shape`` and return it as a writable memory map.

    For outputs too large for memory: `UNetModel.predict(..., out=...)` fills it band by
    band; call ``.flush()`` (or drop the reference) when done. Raises `InputError` when the
    file exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; choose another folder or allow overwriting (--overwrite).")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    big = np.prod(shape, dtype=np.int64) * np.dtype(dtype).itemsize > 2**32 - 2**25
    return tifffile.memmap(path, shape=tuple(shape), dtype=dtype, bigtiff=bool(big),
                           photometric="minisblack", metadata=metadata or {})


def labels_dtype(labels) -> np.dtype:
    """uint8 when every id fits, else uint16, else uint32."""
    top = int(np.max(labels)) if np.size(labels) else 0
    if top <= 255:
        return np.dtype(np.uint8)
    if top <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def write_labels_tiff(path, labels, *, overwrite: bool = False, metadata: dict | None = None,
                      min_dtype=np.uint8) -> Path:
    """Write a labels array as a zlib-compressed TIFF in the smallest unsigned dtype (at least ``min_dtype``).

    Raises `InputError` when the file exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; choose another folder or allow overwriting (--overwrite).")
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0:
        raise InputError("Labels to write must not be negative.")
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.promote_types(labels_dtype(labels), min_dtype)
    tifffile.imwrite(path, labels.astype(dtype, copy=False), compression="zlib", photometric="minisblack",
                     metadata=metadata or {})
    return path
