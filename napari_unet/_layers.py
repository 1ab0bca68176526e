"""Translate between napari layers and the arrays the engine takes and returns.

Everything that knows about napari layer types, names and colours lives here; the
widget only wires these helpers to buttons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels

__all__ = [
    "CLASSES_KEY",
    "DEFAULT_CLASSES",
    "OBJECT_CLASSES",
    "ImageInfo",
    "View",
    "accept_into",
    "annotation_name",
    "class_names_of",
    "current_view",
    "classes_tiff_metadata",
    "image_array",
    "image_source",
    "image_info",
    "labels_layer",
    "new_annotation_layer",
    "prediction_classes",
    "prediction_name",
    "show_labels",
    "tiff_metadata",
]

#: Classes of a new annotation layer: ``{label id: name}``; 0 stays "not painted".
DEFAULT_CLASSES: dict[int, str] = {1: "background", 2: "foreground"}
#: The class table of an annotation in objects mode: 1 is background, every other id one object.
OBJECT_CLASSES: dict[int, str] = {1: "background", 2: "object (other ids: one object each; 'new label' gives one)"}

#: Labels layer metadata: ``{id: class name}`` of the layer's classes.
CLASSES_KEY = "napari_unet_classes"


def annotation_name(image: Image) -> str:
    return f"{image.name} annotation"


def prediction_name(image: Image) -> str:
    return f"{image.name} prediction"


@dataclass(frozen=True)
class ImageInfo:
    """How the engine should read an image layer.

    ``channel_axis`` is -1 for RGB(A) layers and None for grey ones; ``spatial_shape`` is
    the data shape without the channel axis: ``(*stack, H, W)``.
    """

    channel_axis: int | None
    spatial_shape: tuple[int, ...]

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return self.spatial_shape[:-2]


def image_source(layer: Image):
    """The layer's full-resolution data as it is held (NumPy, dask, zarr, memory map): not read."""
    return layer.data[0] if layer.multiscale else layer.data


def image_array(layer: Image) -> np.ndarray:
    """The layer's full-resolution data as a NumPy array (reads dask/zarr data)."""
    return np.asarray(image_source(layer))


def image_info(layer: Image) -> ImageInfo:
    data = image_source(layer)
    shape = tuple(int(s) for s in data.shape)
    if layer.rgb:
        return ImageInfo(channel_axis=-1, spatial_shape=shape[:-1])
    return ImageInfo(channel_axis=None, spatial_shape=shape)


def class_names_of(layer: Labels) -> dict[int, str]:
    """``{id: name}`` kept in the labels layer's metadata (the defaults when absent)."""
    names = layer.metadata.get(CLASSES_KEY)
    if not names:
        names = dict(DEFAULT_CLASSES)
        layer.metadata[CLASSES_KEY] = names
    return names


def new_annotation_layer(viewer, image: Image, objects: bool = False) -> Labels:
    """Add an empty ``"<image> annotation"`` labels layer over ``image``, ready to paint.

    It has the image's spatial shape, scale and translation, the default classes and
    the brush set to the foreground class. With ``objects`` (objects mode) it is uint16,
    so that every object can have its own id, and its class table explains that.
    """
    info = image_info(image)
    classes = OBJECT_CLASSES if objects else DEFAULT_CLASSES
    layer = viewer.add_labels(
        np.zeros(info.spatial_shape, dtype=np.uint16 if objects else np.uint8),
        name=annotation_name(image),
        scale=image.scale,
        translate=image.translate,
        metadata={CLASSES_KEY: dict(classes)},
    )
    layer.selected_label = max(classes)
    layer.brush_size = 6
    layer.mode = "paint"
    return layer


def labels_layer(
    viewer,
    name: str,
    shape: tuple[int, ...],
    dtype=np.uint8,
    *,
    like: Labels | Image | None = None,
    below: Labels | None = None,
) -> Labels:
    """The labels layer ``name`` of ``shape``; a zero one is added when it is missing or
    of another shape.

    A new layer copies ``like``'s scale and translation and goes under ``below`` (the
    strokes stay drawn on top) without becoming the active layer, so the brush keeps
    painting into the annotation.
    """
    shape = tuple(shape)
    layer = viewer.layers[name] if name in viewer.layers else None
    if isinstance(layer, Labels) and layer.data.shape == shape:
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    active = viewer.layers.selection.active
    extra = {} if like is None else {"scale": like.scale, "translate": like.translate}
    layer = viewer.add_labels(np.zeros(shape, dtype=dtype), name=name, opacity=0.5, **extra)
    if below is not None and below in viewer.layers:
        viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(below))
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    return layer


def show_labels(
    viewer,
    name: str,
    labels: np.ndarray,
    *,
    like: Labels | Image | None = None,
    colors_from: Labels | None = None,
    index: tuple[int, ...] = (),
    region: tuple[slice, slice] | None = None,
    full_shape: tuple[int, ...] | None = None,
    classes: dict[int, str] | None = None,
    instances: bool = False,
) -> Labels:
    """Put predicted ``labels`` into the labels layer ``name`` (see `labels_layer`).

    Parameters
    ----------
    labels : np.ndarray
        The whole layer's data, or with ``index``/``region`` the part they address.
    like : layer, optional
        Layer whose scale and translation a new layer copies.
    colors_from : Labels, optional
        The annotation: the result uses its colormap (same ids, same colours) and lies under it.
    index : tuple of int
        Stack position that ``labels`` fills, e.g. ``(z,)`` for one slice of a stack.
    region : (slice, slice), optional
        Rows and columns of that plane that ``labels`` fills; the rest of the plane is cleared.
    full_shape : tuple of int, optional
        Shape of the layer when ``labels`` is only a part (index or region given).
    classes : dict, optional
        ``{id: name}`` of the class ids in ``labels``, kept in the layer's metadata so that
        exports write them into the TIFF (None for object instances).
    instances : bool
        ``labels`` are object ids (0 = background). Written into one plane of a stack
        (``index``), they are shifted above the ids of the layer's other planes, so that an
        object predicted on one slice never shares its id with one on another slice.
    """
    labels = np.asarray(labels)
    partial = bool(index) or region is not None
    shape = tuple(full_shape) if partial else labels.shape
    layer = labels_layer(viewer, name, shape, labels.dtype, like=like, below=colors_from)
    if instances and index and labels.any():
        labels = _above_other_planes(labels, layer.data, index)
    if not partial:
        layer.data = labels
    else:
        data = layer.data
        if not np.can_cast(labels.dtype, data.dtype):
            data = data.astype(labels.dtype)
        plane = data[index]
        if region is None:
            plane[...] = labels
        else:
            plane[...] = 0
            plane[region] = labels
        if data is layer.data:
            layer.refresh()
        else:
            layer.data = data
    if colors_from is not None:
        layer.colormap = colors_from.colormap
    if classes is not None:
        layer.metadata[CLASSES_KEY] = {int(k): str(v) for k, v in classes.items()}
    return layer


def _above_other_planes(labels: np.ndarray, data, index: tuple[int, ...]) -> np.ndarray:
    """Object ids of one plane shifted above the largest id of ``data``'s other planes."""
    flat = np.asarray(data).reshape(-1, *np.shape(data)[len(index):])
    here = int(np.ravel_multi_index(index, np.shape(data)[:len(index)]))
    top = max([int(part.max()) for part in (flat[:here], flat[here + 1:]) if part.size] + [0])
    if top == 0:
        return labels
    shifted = np.where(labels > 0, labels.astype(np.int64) + top, 0)
    dtype = np.uint16 if shifted.max() <= np.iinfo(np.uint16).max else np.uint32
    return shifted.astype(np.promote_types(labels.dtype, dtype))


def prediction_classes(model) -> dict[int, str] | None:
    """``{id: name}`` of the classes ``model`` predicts; None for an objects-mode model,
    whose predictions are object ids rather than classes."""
    if model is None or model.task.objects:
        return None
    return dict(zip(model.class_map.ids, model.class_map.names))


def tiff_metadata(layer_metadata: dict) -> dict:
    """TIFF metadata for a labels layer: class ids and names when the layer has them
    (as the command line writes them), else nothing."""
    return classes_tiff_metadata((layer_metadata or {}).get(CLASSES_KEY))


def classes_tiff_metadata(names: dict | None) -> dict:
    """TIFF metadata for the classes ``{id: name}``: ``class_ids`` and ``class_names`` (None: nothing)."""
    if not names:
        return {}
    ids = sorted(int(k) for k in names)
    return {"class_ids": ids, "class_names": [str(names[k] if k in names else names[str(k)]) for k in ids]}


def accept_into(annotation: Labels, prediction: np.ndarray) -> int:
    """Copy predicted ids into the annotation's unpainted pixels; painted ones stay.

    Goes through ``Labels.data_setitem`` so the change is one undoable step and emits
    the layer's paint event. Returns the number of pixels filled.
    """
    current = annotation.data
    prediction = np.asarray(prediction)
    if prediction.shape != current.shape:
        raise ValueError(
            f"The prediction has shape {prediction.shape} but the annotation {current.shape}."
        )
    fill = (np.asarray(current) == 0) & (prediction != 0)
    where = np.nonzero(fill)
    if where[0].size:
        annotation.data_setitem(where, prediction[where].astype(current.dtype))
    return int(where[0].size)


@dataclass(frozen=True)
class View:
    """What the user looks at: a stack position and the visible rows/columns of that plane."""

    index: tuple[int, ...]
    rows: slice
    cols: slice


def current_view(viewer, image: Image, *, min_side: int = 256, max_side: int = 1024) -> View:
    """The plane shown for ``image`` and its visible field of view, in data pixels.

    The field of view is grown to ``min_side`` (context for a zoomed-in view) and cut
    to ``max_side`` around its centre (a preview stays quick on a huge plane).
    """
    info = image_info(image)
    height, width = info.spatial_shape[-2:]
    point = np.asarray(image.world_to_data(viewer.dims.point), dtype=float)
    n_stack = len(info.stack_shape)
    index = tuple(
        int(np.clip(round(p), 0, s - 1)) for p, s in zip(point[:n_stack], info.stack_shape)
    )
    corners = np.asarray(getattr(image, "corner_pixels", np.zeros((2, 0))), dtype=float)
    if corners.shape[-1] >= 2 and np.all(corners[1, -2:] > corners[0, -2:]):
        (r0, c0), (r1, c1) = corners[0, -2:], corners[1, -2:]
    else:
        r0, c0, r1, c1 = 0, 0, height, width
    rows = _span(r0, r1 + 1, height, min_side, max_side)
    cols = _span(c0, c1 + 1, width, min_side, max_side)
    return View(index=index, rows=rows, cols=cols)


def _span(lo: float, hi: float, size: int, min_side: int, max_side: int) -> slice:
    """An interval around ``[lo, hi)`` of length between min_side and max_side, inside ``[0, size)``."""
    centre = (lo + hi) / 2
    length = int(np.clip(hi - lo, min(min_side, size), min(max_side, size)))
    start = int(np.clip(round(centre - length / 2), 0, size - length))
    return slice(start, start + length)
