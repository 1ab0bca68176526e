"""`segment`: the one front door for prediction. Whatever the model's `Task` (classes or
objects, 2D or 3D) and whatever is asked (an image, a plane of a stack, a region, a big image
streamed into a file), the decision is made here; `UNetModel.segment` calls it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from . import io as image_io
from .config import TileConfig
from .errors import InputError
from .images import ImageView
from .objects import predict_objects

__all__ = ["PLANE_CONTEXT", "Segmentation", "segment"]

#: A 3D network segments one plane of a stack from a slab of this many planes on each side of it.
PLANE_CONTEXT = 8


@dataclass
class Segmentation:
    """What `UNetModel.segment` returns.

    Attributes
    ----------
    labels : ndarray
        Class ids (the ids the user painted), or in objects mode one id per object (0 =
        background); the image's shape less its channel axis (one plane or a region of it
        when asked). The written array (a memory map, a zarr array) when the result was streamed.
    metadata : dict
        What a TIFF of ``labels`` should carry: class ids and names, or ``{"mode": "objects"}``.
    classes : ndarray or None
        Objects mode with ``semantic=True``: the predicted classes (background, interior, boundary).
    probabilities : ndarray or None
        With ``probabilities=True``: class probabilities ``(*stack, K, H, W)``.
    streamed_to : Path or None
        The TIFF or zarr label group the labels were written into, band by band.
    """

    labels: np.ndarray
    metadata: dict
    classes: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    streamed_to: Path | None = None


def segment(model, image, *, channel_axis: int | None = None, plane: tuple[int, ...] | None = None,
            region: tuple[int, int, int, int] | None = None, stream_to=None, overwrite: bool = False,
            tile: TileConfig | None = None, argmax: bool = False, semantic: bool = False,
            probabilities: bool = False, progress: Callable[[int, int], None] | None = None, cancel=None,
            notice: Callable[[str], None] | None = None) -> Segmentation:
    """Segment an image, one plane of a stack, or a region, the way this model's `task` wants.

    The one front door for prediction: objects or classes, 2D or 3D, in memory or streamed,
    is decided here.

    Parameters
    ----------
    model : UNetModel
        The trained model; its `task` says classes or objects, 2D or 3D.
    image : array-like
        NumPy, dask, zarr or memory-mapped; 2D, with a channel axis, or a stack.
    channel_axis : int, optional
        Channel axis of ``image`` (``-1`` for RGB); None for grey.
    plane : tuple of int, optional
        Segment only this plane of a stack (its position along the stack axes); a 3D model
        reads `PLANE_CONTEXT` planes on each side of it.
    region : (y0, y1, x0, x1), optional
        Only this window (with the whole image's normalisation and real context around it).
    stream_to : path or `omezarr.OmeZarrLabels`, optional
        A path: when the image has more than `io.STREAM_PIXELS` pixels (classes mode, whole
        image), the labels are written band by band into an uncompressed TIFF there, complete
        or absent; smaller images are segmented in memory and nothing is written. An OME-Zarr
        label target (anything with ``open_labels``): the labels of every image are streamed
        into its chunked array, complete or absent (classes mode, whole image).
    overwrite : bool
        Whether ``stream_to`` may replace an existing file.
    tile : TileConfig, optional
        Default: `default_tile` for the model's device.
    argmax : bool
        The most likely class per pixel, even for a model that `separates_regions`.
    semantic : bool
        Objects mode: also return the predicted classes.
    probabilities : bool
        Also return the class probabilities (not when streaming).
    progress, cancel, notice
        As for `predict`.
    """
    view = ImageView(image, channel_axis)
    objects = model.task.objects
    metadata = model.labels_metadata()
    options = dict(tile=tile, progress=progress, cancel=cancel, notice=notice)
    if plane is not None:
        image, channel_axis, at = _plane_source(model, view, tuple(int(i) for i in plane))
        if at is not None:  # a 3D model: a slab of planes around the one asked for
            labels, probs = model.predict(image, channel_axis=channel_axis, region=region, probabilities=True,
                                         **options)
            return Segmentation(labels[at], metadata, probabilities=probs[at] if probabilities else None)
        view = ImageView(image, channel_axis)
    if objects:
        instances, classes, probs = predict_objects(model, image, channel_axis=channel_axis, region=region,
                                                    **options)
        return Segmentation(instances, metadata, classes=classes if semantic else None,
                            probabilities=probs if probabilities else None)
    separate = False if argmax else None
    big = int(np.prod(view.shape, dtype=np.int64)) > image_io.STREAM_PIXELS
    sink = getattr(stream_to, "open_labels", None)  # a zarr label group: always streamed, it is chunked anyway
    if stream_to is not None and (big or sink is not None) and plane is None and region is None \
            and not probabilities:
        if sink is None:
            sink = partial(image_io.StreamedLabels, stream_to)
        with sink(view.shape, model.class_map.dtype, overwrite=overwrite, metadata=metadata) as streamed:
            model.predict(image, channel_axis=channel_axis, out=streamed.array, separate=separate, **options)
        return Segmentation(streamed.array, metadata, streamed_to=Path(streamed.path))
    if probabilities:
        labels, probs = model.predict(image, channel_axis=channel_axis, region=region, probabilities=True,
                                     separate=separate, **options)
        return Segmentation(labels, metadata, probabilities=probs)
    labels = model.predict(image, channel_axis=channel_axis, region=region, separate=separate, **options)
    return Segmentation(labels, metadata)

def _plane_source(model, view: ImageView, plane: tuple[int, ...]):
    """``(image, channel_axis, at)`` to segment ``plane`` of ``view``: the plane itself for a
    2D model (``at`` None), a slab around it for a 3D one (``at``: the plane's place in it)."""
    stack = view.stack_shape
    if len(plane) != len(stack) or not all(0 <= p < n for p, n in zip(plane, stack)):
        raise InputError(f"Plane {plane} is not a plane of a stack of shape {stack}.")
    axes = [a for a in range(len(view.source.shape)) if a != view.channel_axis][:len(stack)]
    index: list = [slice(None)] * len(view.source.shape)
    at = None
    if model.config.dims == 3:
        z = plane[0]
        z0, z1 = max(0, z - PLANE_CONTEXT), min(stack[0], z + PLANE_CONTEXT + 1)
        index[axes[0]], at = slice(z0, z1), z - z0
    else:
        for axis, p in zip(axes, plane):
            index[axis] = p
    channel_axis = view.channel_axis
    if channel_axis is not None:
        channel_axis -= sum(1 for a in axes if a < channel_axis and isinstance(index[a], int))
    return view.source[tuple(index)], channel_axis, at
