"""Reading images and writing label masks (TIFF, compressed, readable by Fiji and tifffile)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from .errors import InputError

__all__ = ["read_image", "write_labels_tiff", "labels_dtype"]


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


def labels_dtype(labels) -> np.dtype:
    """uint8 when every id fits, else uint16, else uint32."""
    top = int(np.max(labels)) if np.size(labels) else 0
    if top <= 255:
        return np.dtype(np.uint8)
    if top <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def write_labels_tiff(path, labels, *, overwrite: bool = False, metadata: dict | None = None) -> Path:
    """Write a labels array as a zlib-compressed TIFF in the smallest unsigned dtype.

    Raises `InputError` when the file exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; choose another folder or allow overwriting (--overwrite).")
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0:
        raise InputError("Labels to write must not be negative.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, labels.astype(labels_dtype(labels), copy=False), compression="zlib",
                     metadata=metadata or {})
    return path
