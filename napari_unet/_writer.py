"""npe2 writer: a labels layer to a compressed TIFF that tifffile reads back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_labels"]

log = logging.getLogger(__name__)

_SUFFIXES = (".tif", ".tiff")


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """Write one labels layer as uint8 (uint16 when ids exceed 255) zlib-compressed TIFF.

    napari asks before overwriting, so an existing file is replaced.
    A path without a TIFF suffix gets ``.tif``.
    """
    from src_models.io import write_labels_tiff

    target = Path(path)
    if target.suffix.lower() not in _SUFFIXES:
        target = target.with_name(target.name + ".tif")
    from ._layers import tiff_metadata

    write_labels_tiff(str(target), np.asarray(data), overwrite=True,
                      metadata=tiff_metadata(attributes.get("metadata", {})))
    log.info("wrote labels layer %r to %s", attributes.get("name"), target)
    return [str(target)]
