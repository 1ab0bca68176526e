"""OME-Zarr images in, OME-Zarr labels out, without reading or writing anything whole.

`open_zarr_image` opens one resolution level of an OME-Zarr image (NGFF 0.4: ``.zattrs``;
0.5: ``zarr.json`` ``attributes.ome``) or a plain zarr array lazily, finds its channel axis
from the ``axes`` metadata and hides a singleton time axis. `OmeZarrLabels` says where a mask
goes, into the image's own ``labels/<name>`` group (`labels_in_image`) or a new store
(`labels_store`); its `open_labels` gives a `ZarrLabelsWriter`, a chunked zarr array that
`segment` fills tile by tile.

Complete or absent: a writer builds the whole label group in a hidden folder beside its
place and renames it in only when every chunk and its metadata are written; the name is
added to ``labels/``'s list last, so a reader never finds a listed label that is half
written (a crash in between leaves a complete but unlisted group, nothing broken). Metadata
are read and written by hand (plain JSON), so the ``ome-zarr`` package is not needed.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .errors import InputError, WriteError
from .io import StagedWrite, _check_folder_usable, _create_temp, _remove_quietly, _write_error, labels_dtype

__all__ = ["DEFAULT_LABEL_NAME", "OmeZarrLabels", "ZarrImage", "ZarrLabelsWriter", "is_ome_zarr", "is_zarr",
           "labels_in_image", "labels_store", "open_zarr_image", "write_labels_zarr", "zarr_stem"]

#: Name of the label group written into an image's ``labels/`` group unless told otherwise.
DEFAULT_LABEL_NAME = "unet"

#: NGFF version of stores written without an OME-Zarr image to follow (read by the most viewers).
NEW_STORE_VERSION = "0.4"

#: Largest chunk side of written labels, in pixels.
_CHUNK = 1024

_SPATIAL_NAMES = ("t", "z", "y", "x")
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_NAME = re.compile(r"^[A-Za-z0-9_][\w.-]*$")


# -- reading ------------------------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path} ({exc}); the zarr store is damaged.") from None
    return data if isinstance(data, dict) else None


def _node(folder: Path) -> tuple[str | None, dict, int]:
    """``(kind, attributes, zarr_format)`` of a zarr node: kind "group", "array" or None (not zarr)."""
    meta = _read_json(folder / "zarr.json")
    if meta is not None:
        return meta.get("node_type"), meta.get("attributes") or {}, 3
    attrs = _read_json(folder / ".zattrs") or {}
    if (folder / ".zarray").is_file():
        return "array", attrs, 2
    if (folder / ".zgroup").is_file() or attrs:
        return "group", attrs, 2
    return None, {}, 2


def _ome(attrs: dict) -> tuple[dict, str | None]:
    """The OME attributes of a group (0.5 keeps them under ``ome``) and their NGFF version."""
    if isinstance(attrs.get("ome"), dict):
        return attrs["ome"], str(attrs["ome"].get("version", "0.5"))
    multiscales = attrs.get("multiscales")
    if isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict):
        return attrs, str(multiscales[0].get("version", "0.4"))
    return attrs, None


def is_zarr(path) -> bool:
    """Whether ``path`` is a zarr folder (an array or a group, OME or not)."""
    path = Path(path)
    return path.is_dir() and (path.suffix.lower() == ".zarr" or _node(path)[0] is not None)


def is_ome_zarr(path) -> bool:
    """Whether ``path`` is a zarr group with OME ``multiscales`` metadata."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        kind, attrs, _ = _node(path)
    except InputError:
        return False
    return kind == "group" and bool(_ome(attrs)[0].get("multiscales"))


def zarr_stem(path) -> str:
    """The name of a zarr image without ``.ome.zarr`` or ``.zarr``."""
    name = Path(path).name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)] or "image"
    return Path(name).stem


class _WithoutAxes:
    """``array`` seen without some of its length-1 axes (a singleton time axis); basic indexing
    (ints, slices, ``...``) reads and writes through, so nothing is loaded until indexed."""

    def __init__(self, array, axes):
        self.base = array
        self.axes = tuple(sorted(axes))
        self.shape = tuple(s for i, s in enumerate(array.shape) if i not in self.axes)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def _full(self, key) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1:]
        full = list(key) + [slice(None)] * (self.ndim - len(key))
        for axis in self.axes:
            full.insert(axis, 0)
        return tuple(full)

    def __getitem__(self, key):
        return self.base[self._full(key)]

    def __setitem__(self, key, value):
        self.base[self._full(key)] = value

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype=dtype)

    def __len__(self) -> int:
        return self.shape[0]


@dataclass(frozen=True)
class ZarrImage:
    """One resolution level of a zarr image, opened lazily by `open_zarr_image`.

    Attributes
    ----------
    path : Path
        The zarr folder (the OME-Zarr image group, or a plain array).
    data : array-like
        The level's pixels without a singleton time axis; zarr reads chunks as they are indexed.
    channel_axis : int or None
        The channel axis of ``data`` (the ``c`` axis); None when there is none or, for a
        plain array, when the metadata do not say (guess it then).
    level, n_levels : int
        The level read (0 = full resolution) and how many there are.
    axes : tuple of dict, or None
        NGFF axes of the level's array (every axis, channel and time included); None for a plain array.
    transforms : tuple
        ``(dataset transforms, multiscale transforms)`` of the level, for the full axes.
    version : str or None
        NGFF version ("0.4", "0.5"); None for a plain zarr array.
    zarr_format : int
    hidden : tuple of int
        Axes of the level's array left out of ``data`` (a singleton time axis).
    """

    path: Path
    data: object
    channel_axis: int | None
    level: int = 0
    n_levels: int = 1
    axes: tuple | None = None
    transforms: tuple = ((), ())
    version: str | None = None
    zarr_format: int = 2
    hidden: tuple = ()

    @property
    def is_ome(self) -> bool:
        return self.version is not None


def _axes(raw, ndim: int) -> tuple:
    """NGFF axes as dicts with ``name`` (and ``type``): 0.3 strings and missing axes (0.1/0.2: tczyx) too."""
    if not raw:
        raw = list("tczyx"[-ndim:])
    out = []
    for axis in raw:
        axis = {"name": axis} if isinstance(axis, str) else dict(axis)
        if "type" not in axis and axis.get("name") in _AXIS_TYPES:
            axis["type"] = _AXIS_TYPES[axis["name"]]
        out.append(axis)
    return tuple(out)


def open_zarr_image(path, level: int = 0) -> ZarrImage:
    """Open resolution ``level`` of an OME-Zarr image, or a plain zarr array (``level`` 0 only), lazily.

    Raises `InputError` (``setting="level"`` for a level it lacks) with a sentence when the
    folder is no zarr, a zarr group without OME ``multiscales`` metadata, or damaged.
    """
    path = Path(path)
    level = int(level)
    if not path.is_dir():
        raise InputError(f"{path} is not a zarr folder; check the path and spelling.")
    kind, attrs, zarr_format = _node(path)
    try:
        if kind == "array":
            if level != 0:
                raise InputError(f"{path} is a plain zarr array with one resolution level; choose level 0.",
                                 setting="level")
            return ZarrImage(path, zarr.open_array(str(path), mode="r"), None, zarr_format=zarr_format)
        ome, version = _ome(attrs)
        multiscales = ome.get("multiscales")
        if kind != "group" or not multiscales:
            raise InputError(f"{path} is a zarr {'group' if kind else 'folder'} without OME-Zarr 'multiscales' "
                             "metadata; give an OME-Zarr image or the path of a zarr array inside it.")
        scales = multiscales[0]
        datasets = scales.get("datasets") or []
        if not 0 <= level < len(datasets):
            raise InputError(f"{path} has {len(datasets)} resolution level(s); choose a level from 0 to "
                             f"{len(datasets) - 1}.", setting="level")
        dataset = datasets[level]
        array = zarr.open_array(str(path / dataset["path"]), mode="r")
    except InputError:
        raise
    except Exception as exc:  # a missing array folder, broken JSON fields, codec errors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"Cannot read {path} as an OME-Zarr image ({reason}); the store is damaged.") from None
    axes = _axes(scales.get("axes"), array.ndim)
    if len(axes) != array.ndim:
        raise InputError(f"{path} names {len(axes)} axes but level {level} has {array.ndim}; the store is damaged.")
    names = [a.get("name") for a in axes]
    hidden = tuple(i for i, a in enumerate(axes)
                   if (a.get("type") == "time" or a.get("name") == "t") and array.shape[i] == 1)
    data = _WithoutAxes(array, hidden) if hidden else array
    channel = next((i for i, a in enumerate(axes) if a.get("type") == "channel" or names[i] == "c"), None)
    if channel is not None:
        channel -= sum(1 for h in hidden if h < channel)
    transforms = (tuple(dataset.get("coordinateTransformations") or ()),
                  tuple(scales.get("coordinateTransformations") or ()))
    return ZarrImage(path, data, channel, level, len(datasets), axes, transforms, version, zarr_format, hidden)


# -- where labels go ----------------------------------------------------------------------

def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"{name!r} cannot name a label group; use letters, digits, '_', '-' and '.', "
                         "not starting with '.' or '-'.", setting="label_name")
    return name


@dataclass(frozen=True)
class OmeZarrLabels:
    """Where a mask goes in OME-Zarr, and how it lies over its image.

    Attributes
    ----------
    folder : Path
        The label group written: ``<image>/labels/<name>`` or a new store.
    listing : Path or None
        The ``labels`` group whose ``labels`` list gets ``name``; None for a new store.
    name : str
    axes : tuple of dict
        NGFF axes of the label array (the image's, less its channel axis).
    hidden : tuple of int
        Axes of the label array (length 1) that the prediction does not have (a singleton time axis).
    transforms : tuple
        ``(dataset, multiscale)`` coordinate transformations for ``axes``.
    version : str
        NGFF version written ("0.4": zarr v2, ".zattrs"; "0.5": zarr v3, "zarr.json").
    """

    folder: Path
    listing: Path | None
    name: str
    axes: tuple
    hidden: tuple = ()
    transforms: tuple = ((), ())
    version: str = NEW_STORE_VERSION

    @property
    def zarr_format(self) -> int:
        return 2 if self.version in ("0.1", "0.2", "0.3", "0.4") else 3

    def check(self, *, overwrite: bool = False) -> "OmeZarrLabels":
        """Before long work: `InputError` (``setting="overwrite"``) when the labels exist and
        ``overwrite`` is False, `WriteError` when their folder cannot be written."""
        if self.folder.exists() and not overwrite:
            raise InputError(f"{self.folder} already exists; choose another name or folder, or allow overwriting.",
                             setting="overwrite")
        if self.folder.exists() and not self.folder.is_dir():
            raise WriteError(f"{self.folder} is a file; choose another name or folder.", path=self.folder)
        _check_folder_usable(self.folder.parent, self.folder)
        return self

    def open_labels(self, shape, dtype, *, metadata: dict | None = None,
                    overwrite: bool = False) -> "ZarrLabelsWriter":
        """A `ZarrLabelsWriter` for labels of ``shape`` (the prediction's: no channel, no hidden axes)."""
        return ZarrLabelsWriter(self, shape, dtype, metadata=metadata, overwrite=overwrite)


def _without(values, axis):
    return [v for i, v in enumerate(values) if i != axis]


def _transforms_without(transforms, axis: int | None, ndim: int) -> list:
    """Coordinate transformations less the channel axis (scale and translation lists); unit scale if none."""
    out = []
    for t in transforms:
        t = dict(t)
        for key in ("scale", "translation"):
            if isinstance(t.get(key), list) and axis is not None:
                t[key] = _without(t[key], axis)
        if "path" not in t:  # transforms kept in files are not copied; the label gets its own
            out.append(t)
    return out or [{"type": "scale", "scale": [1.0] * ndim}]


def _layout(image: ZarrImage, ndim: int):
    """``(axes, hidden, transforms)`` of labels for ``image``: its axes less the channel."""
    if image.axes is None:  # a plain array: name the axes from the right
        if ndim > len(_SPATIAL_NAMES):
            raise InputError(f"Labels of {ndim} dimensions cannot be named as OME-Zarr axes (t, z, y, x); "
                             "write them as TIFF.")
        return _axes(list(_SPATIAL_NAMES[-ndim:]), ndim), (), ((), ())
    channel = next((i for i, a in enumerate(image.axes) if a.get("type") == "channel" or a.get("name") == "c"), None)
    axes = tuple(a for i, a in enumerate(image.axes) if i != channel)
    hidden = tuple(h - (1 if channel is not None and h > channel else 0) for h in image.hidden)
    data, multi = image.transforms
    transforms = (tuple(_transforms_without(data, channel, len(axes))),
                  tuple(_transforms_without(multi, channel, len(axes)) if multi else ()))
    return axes, hidden, transforms


def labels_in_image(image: ZarrImage, name: str = DEFAULT_LABEL_NAME) -> OmeZarrLabels:
    """The group ``labels/<name>`` of an OME-Zarr ``image``, at the resolution of its level read."""
    if not image.is_ome:
        raise InputError(f"{image.path} is not an OME-Zarr image, so it has no labels group; write its mask "
                         "to a folder instead.", setting="zarr_labels")
    _check_name(name)
    axes, hidden, transforms = _layout(image, len(image.axes) - (image.channel_axis is not None))
    return OmeZarrLabels(image.path / "labels" / name, image.path / "labels", name, axes, hidden, transforms,
                         image.version)


def labels_store(path, image: ZarrImage | None = None, *, ndim: int = 2) -> OmeZarrLabels:
    """A new OME-Zarr store at ``path`` holding the mask as its image, marked ``image-label``.

    It follows ``image`` (axes, scale, NGFF version) when given, else `NEW_STORE_VERSION` with
    axes ``y, x`` (``z, y, x`` ... for ``ndim`` above 2).
    """
    path = Path(path)
    name = _check_name(zarr_stem(path))
    if image is not None:
        ndim = len(image.data.shape) - (image.channel_axis is not None) + len(image.hidden)
        axes, hidden, transforms = _layout(image, ndim)
        return OmeZarrLabels(path, None, name, axes, hidden, transforms, image.version or NEW_STORE_VERSION)
    axes, hidden, transforms = _layout(ZarrImage(path, None, None), ndim)
    return OmeZarrLabels(path, None, name, axes, hidden, transforms)


# -- writing ------------------------------------------------------------------------------

def _write_json(path: Path, data: dict) -> None:
    """Replace a small JSON file atomically (hidden temporary file, then rename)."""
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            _remove_quietly(tmp)


def _group_attrs(target: OmeZarrLabels, metadata: dict) -> dict:
    """The label group's attributes: ``multiscales`` over one level and ``image-label`` with class names."""
    multiscale = {"name": target.name, "axes": list(target.axes),
                  "datasets": [{"path": "0", "coordinateTransformations": list(target.transforms[0])
                                or [{"type": "scale", "scale": [1.0] * len(target.axes)}]}]}
    if target.transforms[1]:
        multiscale["coordinateTransformations"] = list(target.transforms[1])
    label = {}
    if "class_ids" in metadata:
        label["properties"] = [{"label-value": int(i), "class": str(n)}
                               for i, n in zip(metadata["class_ids"], metadata.get("class_names", []))]
    if target.listing is not None:
        label["source"] = {"image": "../../"}
    ome = {"multiscales": [multiscale], "image-label": label}
    extra = {"napari-unet": metadata}
    if target.zarr_format == 2:
        multiscale["version"] = label["version"] = target.version
        return {**ome, **extra}
    return {"ome": {"version": target.version, **ome}, **extra}


class ZarrLabelsWriter(StagedWrite):
    """A label group filled chunk by chunk, complete or absent (the zarr counterpart of `StreamedLabels`).

    The group is built in a hidden folder beside ``target.folder``; `commit` writes its
    metadata, renames it into place (replacing an old one only now, with ``overwrite``) and
    then lists its name in the ``labels`` group. Used as a context manager it commits on a
    normal exit and discards on any exception, Ctrl+C included; dropped without either, it
    removes its folder.

    Attributes
    ----------
    array : array-like
        The writable labels, of the prediction's shape; zarr writes each assignment into its chunks.
    path : Path
        The final label group (``target.folder``).
    """

    def __init__(self, target: OmeZarrLabels, shape, dtype, *, metadata: dict | None = None,
                 overwrite: bool = False):
        self.target = target.check(overwrite=overwrite)
        self.path = target.folder
        self.metadata = dict(metadata or {})
        shape = [int(s) for s in shape]
        for axis in target.hidden:
            shape.insert(axis, 1)
        if len(shape) != len(target.axes):
            raise InputError(f"Labels of shape {tuple(shape)} do not fit the axes "
                             f"{[a.get('name') for a in target.axes]} of {target.folder}.")
        chunks = [1] * (len(shape) - 2) + [min(s, _CHUNK) for s in shape[-2:]]
        self._tmp = self.path.parent / f".{self.path.name}.{secrets.token_hex(4)}.tmp"
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
        self._state = "open"
        try:
            group = zarr.open_group(str(self._tmp), mode="w-", zarr_format=target.zarr_format)
            stored = group.create_array("0", shape=tuple(shape), dtype=np.dtype(dtype), chunks=tuple(max(1, c) for c
                                        in chunks), fill_value=0, **_dimension_names(target))
            self._group = group
            self.array = stored if not target.hidden else _WithoutAxes(stored, target.hidden)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise _write_error(self.path, exc) from None
            raise

    def commit(self):
        """Write the metadata, rename the group into place and list it; returns `array`."""
        if self._state == "committed":
            return self.array
        if self._state == "discarded":
            raise RuntimeError(f"The labels for {self.path} were discarded; nothing to commit.")
        old = None
        try:
            self._group.attrs.update(_group_attrs(self.target, self.metadata))
            if self.target.listing is not None:
                _ensure_labels_group(self.target)
            if self.path.exists():
                old = self.path.parent / f".{self.path.name}.{secrets.token_hex(4)}.old"
                os.replace(self.path, old)
            os.replace(self._tmp, self.path)
            self._finalizer.detach()
            self._state = "committed"
            if self.target.listing is not None:
                _list_label(self.target)
        except BaseException as exc:
            if self._state != "committed":
                if old is not None and not self.path.exists():
                    os.replace(old, self.path)  # put the old labels back
                    old = None
                self.discard()
            if isinstance(exc, OSError):
                raise _write_error(self.path, exc) from None
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return self.array

    def __repr__(self) -> str:
        return f"ZarrLabelsWriter({str(self.path)!r}, {self._state})"


def _dimension_names(target: OmeZarrLabels) -> dict:
    """zarr v3 arrays carry their axis names (NGFF 0.5 asks for them)."""
    if target.zarr_format == 2:
        return {}
    return {"dimension_names": [a.get("name") for a in target.axes]}


def _labels_group_files(target: OmeZarrLabels) -> tuple[Path, dict, list]:
    """``(metadata file, its content, the current labels list)`` of the ``labels`` group."""
    listing = target.listing
    if target.zarr_format == 2:
        file = listing / ".zattrs"
        data = _read_json(file) or {}
        return file, data, list(data.get("labels") or [])
    file = listing / "zarr.json"
    data = _read_json(file) or {"zarr_format": 3, "node_type": "group", "attributes": {}}
    ome = (data.get("attributes") or {}).get("ome") or {}
    return file, data, list(ome.get("labels") or [])


def _ensure_labels_group(target: OmeZarrLabels) -> None:
    """Make the image's ``labels`` group (empty list) if it has none yet."""
    target.listing.mkdir(exist_ok=True)
    if target.zarr_format == 2:
        if not (target.listing / ".zgroup").exists():
            _write_json(target.listing / ".zgroup", {"zarr_format": 2})
        if not (target.listing / ".zattrs").exists():
            _write_json(target.listing / ".zattrs", {"labels": []})
    elif not (target.listing / "zarr.json").exists():
        _write_json(target.listing / "zarr.json", {"zarr_format": 3, "node_type": "group",
                                                   "attributes": {"ome": {"version": target.version,
                                                                          "labels": []}}})


def _list_label(target: OmeZarrLabels) -> None:
    """Add ``target.name`` to the ``labels`` list (a rename of the whole metadata file)."""
    file, data, names = _labels_group_files(target)
    if target.name in names:
        return
    names.append(target.name)
    if target.zarr_format == 2:
        data["labels"] = names
    else:
        attrs = data.setdefault("attributes", {})
        ome = attrs.setdefault("ome", {"version": target.version})
        ome["labels"] = names
    _write_json(file, data)


def write_labels_zarr(path, labels, *, metadata: dict | None = None, overwrite: bool = False,
                      min_dtype=np.uint8) -> Path:
    """Write a labels array (in memory) as a new OME-Zarr store at ``path``, complete or absent.

    Axes ``y, x`` (``z, y, x`` for a stack), NGFF `NEW_STORE_VERSION`, the smallest unsigned
    dtype (at least ``min_dtype``); class names from ``metadata`` go to ``image-label``.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu" or labels.min(initial=0) < 0:
        raise InputError("Labels to write must be whole numbers that are not negative.")
    target = labels_store(path, ndim=labels.ndim)
    dtype = np.promote_types(labels_dtype(labels), min_dtype)
    with target.open_labels(labels.shape, dtype, metadata=metadata, overwrite=overwrite) as writer:
        writer.array[...] = labels.astype(dtype, copy=False)
    return target.folder
