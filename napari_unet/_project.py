"""Projects in the plugin: the panel's images, annotations, classes, model and settings go to a
project folder (`src_models.project`) and come back as layers; and the reader that opens a
project folder dropped on napari (npe2 ``readers``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning

from src_models import InputError
from src_models.project import PROJECT_FILE, Project, ProjectImage, is_project, open_project

from . import _layers
from ._messages import user_sentence

__all__ = ["PATH_KEY", "PROJECT_KEY", "apply_colors", "get_reader", "layer_data", "project_from_panel"]

#: Layer metadata: the project folder a layer was opened from.
PROJECT_KEY = "napari_unet_project"
#: Image layer metadata: the file the image's pixels come from.
PATH_KEY = "napari_unet_image_path"


def _image_file(layer: Image) -> Path | None:
    """The file ``layer``'s pixels were read from, when the engine reads the same array from it."""
    from src_models.io import open_image_lazily

    path = layer.metadata.get(PATH_KEY) or layer.source.path
    if not path or not Path(path).is_file():
        return None
    try:
        on_disk = open_image_lazily(path)
    except InputError:
        return None
    return Path(path) if tuple(on_disk.shape) == tuple(_layers.image_source(layer).shape) else None


def project_from_panel(widget) -> Project:
    """The project the panel shows: every image with an annotation layer of its shape (ticked for
    training or not), the chosen image, the classes, the model, the settings and the loss history."""
    pairs = widget.image_pairs()
    chosen = widget.image_layer()
    images = []
    annotated = {pair.image.name: pair.annotation for pair in pairs}
    layers = [pair.image for pair in pairs]
    if chosen is not None and chosen.name not in annotated:
        layers.append(chosen)
    for layer in layers:
        info = _layers.image_info(layer)
        path = _image_file(layer)
        annotation = annotated.get(layer.name)
        images.append(ProjectImage(
            name=layer.name, path=path, pixels=None if path is not None else np.asarray(_layers.image_source(layer)),
            channel_axis=info.channel_axis, annotation=None if annotation is None else np.array(annotation.data),
            train=widget.is_ticked(layer.name), scale=tuple(layer.scale), translate=tuple(layer.translate)))
    classes = widget.class_names()
    annotation = widget.annotation_layer()
    colors = {}
    if annotation is not None:
        colors = {int(i): tuple(float(c) for c in np.asarray(annotation.get_color(i)).ravel()) for i in classes}
    return Project(images=images, task=widget.task(), classes=classes, colors=colors, settings=widget.settings(),
                   loss_history=list(widget.loss_history), model=widget.model)


def layer_data(project: Project) -> list[tuple]:
    """napari layer data tuples of a project's images and annotations, each tagged with the project folder."""
    tag = {PROJECT_KEY: str(project.folder)}
    classes = dict(project.classes) or (
        dict(_layers.OBJECT_CLASSES) if project.task.objects else dict(_layers.DEFAULT_CLASSES))
    out = []
    for image in project.images:
        place = {k: v for k, v in (("scale", image.scale), ("translate", image.translate)) if v is not None}
        rgb = image.channel_axis is not None and image.n_channels in (3, 4)
        out.append((image.read(), {"name": image.name, "rgb": rgb, "metadata": {**tag, PATH_KEY: str(image.path)},
                                   **place}, "image"))
        for labels, suffix in ((image.annotation, ""), (image.stale_annotation, " (old shape)")):
            if labels is not None:
                out.append((labels, {"name": f"{image.name} annotation{suffix}", **place,
                                     "metadata": {**tag, _layers.CLASSES_KEY: dict(classes)}}, "labels"))
    return out


def apply_colors(layer: Labels, colors: dict) -> None:
    """Paint ``layer``'s classes in ``colors`` ``{id: rgba}`` where they differ from its colours now."""
    from napari.utils.colormaps import DirectLabelColormap

    if not colors or all(np.allclose(layer.get_color(i), c) for i, c in colors.items()):
        return
    top = max(max(colors), int(np.max(layer.data)) if layer.data.size else 0)
    if top > 1024:  # object ids: keep the cyclic colours
        return
    color_dict = {i: tuple(np.asarray(layer.get_color(i)).ravel()) for i in range(1, top + 1)}
    color_dict.update({int(i): tuple(c) for i, c in colors.items()})
    color_dict[None] = (0.0, 0.0, 0.0, 0.0)
    layer.colormap = DirectLabelColormap(color_dict=color_dict)


def _project_folder(path) -> Path | None:
    """The project folder of ``path`` (the folder itself or its project file), or None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if path.name == PROJECT_FILE:
        path = path.parent
    return path if is_project(path) else None


def get_reader(path):
    """npe2 reader: a project's ``napari-unet-project.json`` (dropped on napari, or File > Open)
    opens the project's images and annotations; the U-Net panel then takes up its model."""
    return read_project if _project_folder(path) is not None else None


def read_project(path) -> list[tuple]:
    """Open the project of ``path`` as layers; what cannot be opened is named in a warning."""
    try:
        project = open_project(_project_folder(path), read_model=False)
    except InputError as error:
        show_warning(user_sentence(error))
        return []
    for problem in project.problems:
        show_warning(problem)
    return layer_data(project)
