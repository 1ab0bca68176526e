"""A project on disk: several images, the labels painted on each, the classes, the model, the
training settings and the loss history, in one folder that a later session (the plugin or
``napari-unet train/predict --project``) opens and goes on with.

Layout of a project folder::

    napari-unet-project.json     what the project holds; replaced atomically, last
    saves/<n>/annotations/<k>.tif   the labels painted on image k at save n
    saves/<n>/model.safetensors  the model at save n
    images/<name>-<digest>.tif   images that existed only in memory, copied in

A save writes everything new into ``saves/<n>`` first and then replaces the JSON file in
one rename: a crash or a full disk during a save leaves the previous project as it was.
Older saves are removed after the rename. Images that exist as files are kept where they
are, by path (relative to the project when they lie inside it).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from .classmap import check_label_values
from .config import TrainConfig
from .errors import InputError, ModelFileError
from .io import _create_temp, _remove_quietly, _sync, _write_error, check_output_folder, open_image_lazily, \
    write_labels_tiff
from .task import Task

__all__ = ["PROJECT_FILE", "PROJECT_VERSION", "Project", "ProjectImage", "is_project", "open_project",
           "save_project"]

log = logging.getLogger(__name__)

#: The file that makes a folder a project.
PROJECT_FILE = "napari-unet-project.json"
#: Version of the project layout this package writes and reads.
PROJECT_VERSION = 1
_FORMAT = "napari-unet project"
#: Training settings a project keeps (fields of `TrainConfig`).
SETTINGS = ("time_budget", "steps", "preset", "device", "precision", "z_ratio")


@dataclass
class ProjectImage:
    """One image of a project and what was painted on it.

    Attributes
    ----------
    name : str
        The image's name (its layer name in the plugin).
    path : Path or None
        The image file. None before the first save for an image that exists only in
        memory (``pixels``): the save copies it into the project.
    pixels : array-like or None
        The image itself when it has no file (or to avoid reading the file again).
    channel_axis : int or None
        Channel axis of the image (-1 for RGB), None for grey images and grey stacks.
    annotation : np.ndarray or None
        Labels painted on it (the image's shape less the channel axis; 0 = not painted).
    train : bool
        Whether training learns from this image (the plugin's check box).
    scale, translate : tuple of float or None
        The image's pixel size and position, so that layers line up when reopened.
    stale_annotation : np.ndarray or None
        After opening: an annotation whose shape no longer fits its image (the image file
        changed); kept so that nothing painted is lost, but not paired with the image.
    """

    name: str
    path: Path | None = None
    pixels: object = None
    channel_axis: int | None = None
    annotation: np.ndarray | None = None
    train: bool = True
    scale: tuple | None = None
    translate: tuple | None = None
    stale_annotation: np.ndarray | None = None

    def read(self):
        """The image, read lazily from its file when no pixels are held (`open_image_lazily`)."""
        if self.pixels is None:
            if self.path is None:
                raise InputError(f"Image {self.name!r} has neither pixels nor a file.")
            self.pixels = open_image_lazily(self.path)
        return self.pixels

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        shape = tuple(int(s) for s in np.shape(self.read()))
        if self.channel_axis is None:
            return shape
        return tuple(s for i, s in enumerate(shape) if i != self.channel_axis % len(shape))

    @property
    def n_channels(self) -> int:
        shape = np.shape(self.read())
        return 1 if self.channel_axis is None else int(shape[self.channel_axis])


@dataclass
class Project:
    """What a project holds; `save_project` writes it, `open_project` reads it back.

    Attributes
    ----------
    images : list of ProjectImage
    task : Task
        Classes or objects, 2D or 3D.
    classes : dict
        ``{id: name}`` of the painted classes.
    colors : dict
        ``{id: (r, g, b, a)}`` in 0..1, the colours the classes are painted in (may be empty).
    settings : dict
        Training settings (`SETTINGS`, fields of `TrainConfig`).
    loss_history : list of float
        The loss of every step trained so far, over all trainings.
    model : UNetModel or None
    problems : list of str
        After opening: one sentence for each thing that could not be opened (a missing image,
        an annotation of the wrong shape, settings out of range); the rest is opened.
    model_problems : list of str
        After opening: sentences about the model (a damaged file, images whose channels do
        not fit it).
    folder : Path or None
        Where the project was opened from or last saved to.
    """

    images: list[ProjectImage] = field(default_factory=list)
    task: Task = field(default_factory=Task)
    classes: dict = field(default_factory=dict)
    colors: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    loss_history: list = field(default_factory=list)
    model: object = None
    problems: list = field(default_factory=list)
    model_problems: list = field(default_factory=list)
    folder: Path | None = None

    def train_config(self, **overrides) -> TrainConfig:
        """A `TrainConfig` from the project's settings, with ``overrides`` (None values ignored)."""
        values = {k: v for k, v in self.settings.items() if k in SETTINGS}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig(**values)

    def training_pairs(self) -> tuple[list, list, int | None]:
        """``(images, labels, channel_axis)`` of the images ticked for training that carry paint.

        Raises `InputError` when none does, or when they mix grey and colour images.
        """
        chosen = [im for im in self.images if im.train and im.annotation is not None and np.any(im.annotation)]
        if not chosen:
            raise InputError("No image of the project carries paint: paint strokes of two classes or more "
                             "on at least one image.")
        axes = {im.channel_axis for im in chosen}
        if len(axes) > 1:
            grey = [im.name for im in chosen if im.channel_axis is None]
            raise InputError(f"The images to train on mix grey and colour images (grey: {', '.join(grey)}); "
                             "train on images of one kind.")
        return [im.read() for im in chosen], [im.annotation for im in chosen], axes.pop()


def is_project(folder) -> bool:
    """Whether ``folder`` is a project folder (holds `PROJECT_FILE`)."""
    return (Path(folder) / PROJECT_FILE).is_file()


# -- saving --------------------------------------------------------------------------------

def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_.") or "image"


def _digest(pixels) -> str:
    array = np.ascontiguousarray(np.asarray(pixels))
    h = hashlib.sha1(str((array.shape, array.dtype.str)).encode())
    h.update(array.data)
    return h.hexdigest()[:12]


def _write_image_copy(folder: Path, image: ProjectImage) -> str:
    """Copy an in-memory image into ``images/`` (named by its content, so a save that finds it
    there already writes nothing); returns its path relative to the project folder."""
    pixels = np.asarray(image.read())
    relative = f"images/{_safe(image.name)}-{_digest(pixels)}.tif"
    target = folder / relative
    if target.is_file():
        return relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = _create_temp(target.parent, target.name)
        os.close(fd)
        rgb = image.channel_axis is not None and pixels.shape[image.channel_axis] in (3, 4) and pixels.dtype == np.uint8
        tifffile.imwrite(tmp, pixels, compression="zlib", photometric="rgb" if rgb else "minisblack")
        _sync(tmp)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise _write_error(target, exc) from None
    finally:
        if tmp is not None:
            _remove_quietly(tmp)
    return relative


def _stored_path(folder: Path, path: Path) -> str:
    """``path`` relative to the project folder when it lies inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(path)


def _next_save(folder: Path) -> int:
    numbers = [int(p.name) for p in (folder / "saves").glob("*") if p.name.isdigit()]
    return max(numbers, default=0) + 1


def save_project(folder, project: Project) -> Path:
    """Write ``project`` into ``folder`` (created when missing); returns the project file.

    Atomic: everything new goes into a new ``saves/<n>`` first, and the project file is
    replaced last by a rename, so an interrupted save leaves the previous project intact.
    Images held only in memory are copied into ``images/``; ``project.images[k].path`` then
    points there. Raises `WriteError` (a sentence) when the folder cannot be written, and
    `InputError` when ``folder`` is a non-empty folder that is not a project.
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not is_project(folder):
        raise InputError(f"{folder} holds other files and is not a napari-unet project; choose an empty or new "
                         "folder for the project.")
    check_output_folder(folder)
    number = _next_save(folder)
    staging = folder / "saves" / f".{number}.partial-{secrets.token_hex(4)}"
    try:
        (staging / "annotations").mkdir(parents=True)
        entries = []
        for k, image in enumerate(project.images):
            if image.path is None:
                image.path = folder / _write_image_copy(folder, image)
            entry = {"name": image.name, "path": _stored_path(folder, image.path), "channel_axis": image.channel_axis,
                     "train": bool(image.train),
                     "scale": None if image.scale is None else [float(s) for s in image.scale],
                     "translate": None if image.translate is None else [float(s) for s in image.translate],
                     "annotation": None}
            if image.annotation is not None:
                write_labels_tiff(staging / "annotations" / f"{k}.tif", image.annotation,
                                  min_dtype=np.asarray(image.annotation).dtype)
                entry["annotation"] = f"saves/{number}/annotations/{k}.tif"
            entries.append(entry)
        model_entry = None
        if project.model is not None:
            project.model.save(staging / "model.safetensors")
            model_entry = f"saves/{number}/model.safetensors"
        os.replace(staging, folder / "saves" / str(number))
        staging = None
        document = {
            "format": _FORMAT, "version": PROJECT_VERSION, "save": number,
            "task": {"mode": project.task.mode.value, "dims": project.task.dims},
            "classes": [{"id": int(i), "name": str(n),
                         "color": None if project.colors.get(i) is None else [float(c) for c in project.colors[i]]}
                        for i, n in sorted(project.classes.items())],
            "settings": {k: v for k, v in project.settings.items() if k in SETTINGS},
            "loss_history": [float(v) for v in project.loss_history],
            "model": model_entry,
            "images": entries,
        }
        _write_json(folder / PROJECT_FILE, document)
    except OSError as exc:
        raise _write_error(folder / PROJECT_FILE, exc) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    _remove_old_saves(folder, number, {e["path"] for e in entries})
    project.folder = folder
    return folder / PROJECT_FILE


def _write_json(path: Path, document: dict) -> None:
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
        _sync(tmp)
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            _remove_quietly(tmp)


def _remove_old_saves(folder: Path, keep: int, images_used: set) -> None:
    """Remove the saves the project file no longer names, and copied images no image uses."""
    for path in (folder / "saves").iterdir():
        if path.name != str(keep):
            shutil.rmtree(path, ignore_errors=True)
    for path in (folder / "images").glob("*") if (folder / "images").is_dir() else ():
        if path.is_file() and f"images/{path.name}" not in images_used:
            _remove_quietly(path)


# -- opening -------------------------------------------------------------------------------

def _read_document(folder: Path) -> dict:
    path = folder / PROJECT_FILE
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; choose the project folder that Save project wrote.")
    if not path.is_file():
        raise InputError(f"{folder} is not a napari-unet project (it has no {PROJECT_FILE}); choose the folder "
                         "that Save project wrote.")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is damaged ({exc}); open an earlier copy of the project.") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise InputError(f"{path} is not a napari-unet project file; choose the folder that Save project wrote.")
    version = document.get("version")
    if not isinstance(version, int) or version > PROJECT_VERSION:
        raise InputError(f"{folder} was saved by a newer napari-unet (project version {version}; this one reads "
                         f"version {PROJECT_VERSION}); update napari-unet to open it.")
    if version < PROJECT_VERSION:  # pragma: no cover - no older version exists yet
        raise InputError(f"{folder} was saved by an older napari-unet (project version {version}); "
                         "open it with that version and export the model and annotations.")
    return document


def open_project(folder, *, device: str = "auto", read_model: bool = True) -> Project:
    """Read the project in ``folder``.

    What cannot be opened is left out with a sentence in ``Project.problems`` (an image file
    that was moved or deleted, an annotation whose shape no longer fits its image, a model
    file that is damaged, images whose channels do not fit the model); the rest is opened.
    Raises `InputError` when ``folder`` is not a project or was saved by a newer version.
    """
    from .segmenter import UNetModel

    folder = Path(folder)
    document = _read_document(folder)
    problems: list[str] = []
    try:
        task_doc = document.get("task") or {}
        task = Task(task_doc.get("mode", "classes"), int(task_doc.get("dims", 2)))
    except (InputError, TypeError, ValueError):
        raise InputError(f"{folder / PROJECT_FILE} names an unknown task {document.get('task')!r}; update "
                         "napari-unet to open it.") from None
    classes, colors = {}, {}
    for entry in document.get("classes") or []:
        classes[int(entry["id"])] = str(entry["name"])
        if entry.get("color") is not None:
            colors[int(entry["id"])] = tuple(float(c) for c in entry["color"])
    settings = {k: v for k, v in (document.get("settings") or {}).items() if k in SETTINGS}
    try:
        TrainConfig(**settings)
    except (InputError, TypeError) as exc:
        problems.append(f"The project's training settings were not used ({exc}); the defaults apply.")
        settings = {}
    images = []
    for entry in document.get("images") or []:
        image = _open_image(folder, entry, problems)
        if image is not None:
            images.append(image)
    model, model_problems = None, []
    if read_model and document.get("model"):
        try:
            model = UNetModel.load(folder / document["model"], device=device)
        except (ModelFileError, InputError, OSError) as exc:
            model_problems.append(f"The project's model could not be loaded ({exc}); Train starts a new one.")
    if model is not None:
        for image in images:
            if image.n_channels != model.image_channels:
                model_problems.append(f"Image {image.name!r} has {image.n_channels} channel(s) but the model takes "
                                f"{model.image_channels}; it is skipped when predicting.")
    return Project(images=images, task=task, classes=classes, colors=colors, settings=settings,
                   loss_history=[float(v) for v in document.get("loss_history") or []], model=model,
                   problems=problems, model_problems=model_problems, folder=folder)


def _open_image(folder: Path, entry: dict, problems: list) -> ProjectImage | None:
    name = str(entry.get("name") or "image")
    stored = Path(str(entry.get("path") or ""))
    path = stored if stored.is_absolute() else folder / stored
    axis = entry.get("channel_axis")
    image = ProjectImage(name=name, path=path, channel_axis=None if axis is None else int(axis),
                         train=bool(entry.get("train", True)),
                         scale=None if entry.get("scale") is None else tuple(entry["scale"]),
                         translate=None if entry.get("translate") is None else tuple(entry["translate"]))
    try:
        image.read()
    except InputError as exc:
        problems.append(f"Image {name!r} was not opened: {exc} Move it back or open it and save the project "
                        "again; the other images were opened." if not path.exists() else
                        f"Image {name!r} was not opened: {exc}")
        return None
    if entry.get("annotation"):
        try:
            annotation = tifffile.imread(folder / entry["annotation"])
            check_label_values(annotation, what=f"The annotation of {name!r}")
        except (OSError, ValueError, InputError) as exc:
            problems.append(f"The annotation of {name!r} could not be read ({exc}); the image opens without it.")
            return image
        if annotation.shape != image.spatial_shape:
            problems.append(f"The annotation of {name!r} has shape {annotation.shape} but the image now has "
                            f"{image.spatial_shape} (the image file changed); the annotation opens as a separate "
                            "layer and is not used for training.")
            image.stale_annotation = annotation
        else:
            image.annotation = annotation
    return image

