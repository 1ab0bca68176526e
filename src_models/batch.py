"""Segmenting image files into mask files: one file (`segment_file`) or a folder of them (`segment_files`).

The command line and the plugin's folder panel both go through here, so a mask written from
either has the same name (``<stem>_mask.tif``), metadata and dtype. Every file written is
complete or absent; a batch skips, with a sentence, the images it cannot use and the masks
that exist, and stops between tiles when cancelled, keeping what it has written.
"""
from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from .config import TileConfig
from .errors import Cancelled, InputError, WriteError
from .images import guess_channel_axis
from .io import check_output_folder, labels_dtype, open_image_lazily, write_labels_tiff
from .omezarr import DEFAULT_LABEL_NAME, is_ome_zarr, is_zarr, labels_in_image, labels_store, open_zarr_image, zarr_stem
from .segmentation import Segmentation

__all__ = ["IMAGE_SUFFIXES", "BatchReport", "Skipped", "classes_path", "is_zarr_target", "list_images", "mask_path",
           "mask_paths", "open_for_segmentation", "output_target", "segment_file", "segment_files"]

log = logging.getLogger(__name__)

#: File endings `list_images` takes for images in a folder.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")

_MASK_SUFFIX = "_mask.tif"
_ZARR_MASK_SUFFIX = "_mask.ome.zarr"
_CLASSES_SUFFIX = "_classes.tif"


def mask_path(out_dir, image_path) -> Path:
    """Where the mask of ``image_path`` goes: ``<out_dir>/<image stem>_mask.tif``, or for an
    OME-Zarr image a new store ``<out_dir>/<image stem>_mask.ome.zarr``."""
    if is_ome_zarr(image_path):
        return Path(out_dir) / f"{zarr_stem(image_path)}{_ZARR_MASK_SUFFIX}"
    return Path(out_dir) / f"{Path(image_path).stem}{_MASK_SUFFIX}"


def is_zarr_target(target) -> bool:
    """Whether a mask path names an OME-Zarr store (``.zarr``) rather than a TIFF."""
    return target is not None and Path(target).name.lower().endswith(".zarr")


def classes_path(mask) -> Path:
    """The semantic classes file written beside a mask in objects mode: ``<stem>_classes.tif``."""
    mask = Path(mask)
    return mask.with_name(mask.name[:-len(_MASK_SUFFIX)] + _CLASSES_SUFFIX if mask.name.endswith(_MASK_SUFFIX)
                          else mask.stem + _CLASSES_SUFFIX)


def mask_paths(image_paths: Sequence, out_dir, names: Sequence[str] | None = None) -> list[Path]:
    """The mask of each image in ``out_dir`` (``<name>_mask.tif``, the file's stem by default);
    `InputError` when two would share a name or one is an input."""
    if names is None:
        targets = [mask_path(out_dir, p) for p in image_paths]
    else:
        targets = [Path(out_dir) / f"{name}{_ZARR_MASK_SUFFIX if is_ome_zarr(p) else _MASK_SUFFIX}"
                   for name, p in zip(names, image_paths)]
    if len(set(targets)) != len(targets):
        raise InputError("Two images have the same file name; their masks would overwrite each other.")
    inputs = {Path(p).resolve() for p in image_paths}
    for target in targets:
        if target.resolve() in inputs:
            raise InputError(f"{target} is one of the input images; choose another output folder.",
                             setting="out_dir")
    return targets


def _is_own_output(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((_MASK_SUFFIX, _CLASSES_SUFFIX))


def list_images(folder_or_glob) -> list[Path]:
    """The image files of a folder, or the files a glob pattern matches, sorted.

    Only files ending in `IMAGE_SUFFIXES` count, and never this module's own outputs
    (``*_mask.tif``, ``*_classes.tif``) or hidden files (a writer's temporary ones).
    Raises `InputError` with a sentence when nothing is found.
    """
    text = str(folder_or_glob)
    folder = Path(text).expanduser()
    if folder.is_dir():
        candidates = folder.iterdir()
        where = f"the folder {folder}"
    elif glob.has_magic(text):
        candidates = (Path(p) for p in glob.glob(str(Path(text).expanduser()), recursive=True))
        where = f"the files matching {text}"
    elif folder.is_file():
        candidates = [folder]
        where = str(folder)
    else:
        raise InputError(f"{folder} is neither a folder nor a file pattern; choose a folder of images.")
    found = sorted(p for p in candidates
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                   and not _is_own_output(p))
    if not found:
        raise InputError(f"No images in {where} (looked for {', '.join(IMAGE_SUFFIXES)} files that are not "
                         "masks); choose another folder or pattern.")
    return found


def open_for_segmentation(model, image_path, level: int = 0):
    """``(image, channel_axis, zarr_image)`` of an image file or zarr folder, read lazily.

    A zarr folder opens at resolution ``level`` with its channel axis from the OME-Zarr axes
    (``zarr_image`` then says how it lies, for its labels); other files (``level`` 0 only)
    get their channel axis guessed from `UNetModel.image_channels`.
    """
    zimage = None
    if is_zarr(image_path):
        zimage = open_zarr_image(image_path, level=level)
        image, axis = zimage.data, zimage.channel_axis
    else:
        if level:
            raise InputError(f"{image_path} has one resolution level (it is not a zarr image); choose level 0.",
                             setting="level")
        image, axis = open_image_lazily(image_path), None
    if zimage is None or zimage.axes is None:  # no axes metadata: guess the channels
        try:
            axis = guess_channel_axis(image.shape, n_channels=model.image_channels)
        except InputError as exc:
            raise InputError(f"{image_path}: {exc}") from None
    return image, axis, zimage


def output_target(target, zimage, label_name: str = DEFAULT_LABEL_NAME):
    """What `segment` streams into for ``target``: the TIFF path itself, or for None (the image's
    own ``labels/<label_name>`` group) and ``.zarr`` paths an `omezarr.OmeZarrLabels`."""
    if target is None:
        if zimage is None:
            raise InputError("Only an OME-Zarr image has a labels group to write into; write its mask to a "
                             "folder instead.", setting="zarr_labels")
        return labels_in_image(zimage, label_name)
    if is_zarr_target(target):
        return labels_store(target, zimage)
    return Path(target)


def segment_file(model, image_path, target, *, level: int = 0, label_name: str = DEFAULT_LABEL_NAME,
                 tile: TileConfig | None = None, overwrite: bool = False, argmax: bool = False,
                 semantic: bool = False, progress: Callable[[int, int], None] | None = None,
                 cancel=None) -> Segmentation:
    """Segment one image file (or zarr image) into the mask ``target``.

    The image is read lazily and its channel axis taken from OME-Zarr metadata or guessed
    from `UNetModel.image_channels`. A TIFF ``target``: a big image (classes mode) is
    streamed tile by tile into it, others are written as a compressed TIFF at least uint16 in
    objects mode (object ids), uint8 otherwise; in objects mode with ``semantic`` the classes
    go to `classes_path` (``target``'s) too. A ``target`` ending in ``.zarr`` is a new
    OME-Zarr store, and None the image's own OME-Zarr ``labels/<label_name>`` group; both are
    filled chunk by chunk (classes mode) and appear only when complete.

    Parameters
    ----------
    model : UNetModel
    image_path : path-like
    target : path-like or None
    level : int
        Resolution level of an OME-Zarr image (0 = full); other files have only 0.
    label_name : str
        The label group's name when ``target`` is None.
    tile : TileConfig, optional
        Default: `UNetModel.default_tile`.
    overwrite : bool
        Replace an existing ``target`` (and classes file); otherwise `InputError`.
    argmax, semantic : bool
        As for `UNetModel.segment`.
    progress : callable ``(done_tiles, total_tiles)``, optional
    cancel : threading.Event, optional
        Stops between tile batches by raising `Cancelled`; nothing is written then.

    Returns
    -------
    Segmentation
        ``streamed_to`` is the mask's path when the mask was streamed (TIFF or zarr, classes mode).

    Raises
    ------
    InputError
        The image cannot be read, or its channels do not fit the model (a sentence naming it).
    """
    image, axis, zimage = open_for_segmentation(model, image_path, level)  # read tile by tile
    sink = output_target(target, zimage, label_name)
    zarr_out = not isinstance(sink, Path)
    objects = model.task.objects
    if zarr_out and semantic and objects:
        raise InputError("The semantic classes are written as TIFF only; leave out semantic for OME-Zarr masks.",
                         setting="semantic")
    if zarr_out:
        sink.check(overwrite=overwrite)
    result = model.segment(image, channel_axis=axis, tile=tile, stream_to=sink, overwrite=overwrite,
                           argmax=argmax, semantic=semantic, progress=progress, cancel=cancel)
    if result.streamed_to is not None:
        return result
    if zarr_out:  # objects mode: the object ids are in memory already
        dtype = np.promote_types(labels_dtype(result.labels), np.uint16)
        with sink.open_labels(result.labels.shape, dtype, metadata=result.metadata, overwrite=overwrite) as out:
            out.array[...] = result.labels.astype(dtype, copy=False)
        return result
    write_labels_tiff(sink, result.labels, overwrite=overwrite, metadata=result.metadata,
                      min_dtype=np.uint16 if objects else np.uint8)
    if objects and result.classes is not None:
        write_labels_tiff(classes_path(sink), result.classes, overwrite=overwrite, metadata={
            "class_ids": list(model.class_map.ids), "class_names": list(model.class_map.names)})
    return result


class Skipped(NamedTuple):
    """An image `segment_files` left alone: why, in a sentence, and the setting that changes it (if one does)."""

    path: Path
    reason: str
    setting: str | None = None


@dataclass
class BatchReport:
    """What `segment_files` did.

    Attributes
    ----------
    written : list of Path
        The mask files written (complete).
    skipped : list of Skipped
        The images left alone and why.
    cancelled : bool
        Stopped by ``cancel`` before the last image; what was written stays.
    total : int
        How many images were asked for.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    cancelled: bool = False
    total: int = 0

    def __str__(self) -> str:
        text = f"{len(self.written)} written, {len(self.skipped)} skipped"
        return text + (" (stopped)" if self.cancelled else "")


def segment_files(model, image_paths: Sequence, out_dir, *, tile: TileConfig | None = None, overwrite: bool = False,
                  argmax: bool = False, semantic: bool = False,
                  progress: Callable[[int, int, int, int], None] | None = None, cancel=None) -> BatchReport:
    """Segment each image file into ``<out_dir>/<stem>_mask.tif``, skipping what cannot be done.

    An image that cannot be read or whose channels do not fit the model is skipped with its
    sentence, and so is an existing mask unless ``overwrite`` (``setting="overwrite"``). The
    output folder is checked (and made) first; two images with the same name, or a mask that
    would replace an input, refuse the whole batch with `InputError`. A file-system fault while
    writing (`WriteError`, e.g. a full disk) stops the batch and is raised.

    Parameters
    ----------
    progress : callable ``(files_done, n_files, tiles_done, tiles_total)``, optional
        Called as each file starts (``tiles_done`` 0), after each tile batch, and once at the
        end with ``files_done == n_files``; ``tiles_total`` is at least 1.
    cancel : threading.Event, optional
        Checked between files and between tile batches: the image being segmented is dropped
        (nothing half-written) and the report says ``cancelled``.
    tile, overwrite, argmax, semantic
        As for `segment_file`.
    """
    paths = [Path(p) for p in image_paths]
    out_dir = check_output_folder(out_dir)
    targets = mask_paths(paths, out_dir)
    report = BatchReport(total=len(paths))
    n = len(paths)

    def tell(done_files, done=0, total=1):
        if progress is not None:
            progress(done_files, n, done, max(1, total))

    for index, (path, target) in enumerate(zip(paths, targets)):
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            break
        tell(index)
        outputs = (target, classes_path(target)) if semantic and model.task.objects else (target,)
        existing = [p for p in outputs if p.exists()]
        if existing and not overwrite:
            report.skipped.append(Skipped(path, f"the mask {existing[0].name} exists (overwrite not allowed)",
                                          "overwrite"))
            continue
        try:
            segment_file(model, path, target, tile=tile, overwrite=overwrite, argmax=argmax, semantic=semantic,
                         progress=lambda done, total, i=index: tell(i, done, total), cancel=cancel)
        except Cancelled:
            report.cancelled = True
            break
        except WriteError:
            raise
        except InputError as exc:  # unreadable, channels that do not fit, a mask that appeared meanwhile
            report.skipped.append(Skipped(path, str(exc), exc.setting))
            continue
        report.written.append(target)
        log.info("%s -> %s", path, target)
    if not report.cancelled:
        tell(n)
    return report
