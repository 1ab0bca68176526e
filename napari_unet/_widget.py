"""The "U-Net segmentation" dock widget: paint, train, see predictions, correct, export.

Laid out top to bottom in the order of the work: 1. data (project, image, annotation layer,
named classes, the images to train on), 2. model, 3. train (`_train_section`), 4. predict (`_predict_section`), 5. export.
The widget holds what the sections share (viewer, chosen layers, model, tile settings);
layers are made by `_layers`, engine work runs in `_workers`.
"""

from __future__ import annotations

import importlib
import logging
import re
import tempfile
import threading
import weakref
from pathlib import Path

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from src_models import (
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    PRESET_CHOICES,
    InputError,
    TileConfig,
    TrainConfig,
    Task,
    UNetModel,
    pick_device,
    write_labels_tiff,
)
from src_models.bioimageio_export import export_bioimageio
from src_models.omezarr import write_labels_zarr
from src_models.project import Project, open_project, save_project

from . import _layers, _project
from ._classes import ClassTable
from ._messages import user_sentence
from ._panels import register_panel
from ._predict_section import PredictSection
from ._train_section import TrainSection
from ._training_images import Pair, TrainingImages, image_pairs

__all__ = ["UNetWidget"]

log = logging.getLogger(__name__)

MODES = ("classes", "objects")
OBJECTS_HINT = ("Objects mode: paint 1 on background and give every object its own id (napari's "
                "'new label', M); strokes inside objects are enough. Prediction gives one id per object.")
PRESETS = (*PRESET_CHOICES[1:], PRESET_CHOICES[0])  # the small network first: it learns best from strokes
MODEL_FILTER = "U-Net model (*.safetensors);;All files (*)"


class UNetWidget(QWidget):
    """Dock widget that trains a U-Net on painted strokes and shows its predictions.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers the widget reads and writes.
    threaded : bool
        Run training and prediction in a napari thread worker (the default). False runs
        them to the end in the calling thread, for tests and scripts.
    preview_interval : float
        Seconds between live previews while training (the first one follows step 1).

    Attributes
    ----------
    model : UNetModel or None
        The model that Predict uses and the next training fine-tunes.
    last_result : TrainResult or None
        What the last training returned.
    tile : TileConfig or None
        Tiling of previews and predictions; None: the model's `default_tile` for its device.
    stream_folder : Path
        Where whole predictions of big images are streamed (``<temp>/napari-unet``).
    loss_history : list of float
        The loss of every step trained with the current model (kept in a project).
    """

    def __init__(self, napari_viewer, *, threaded: bool = True, preview_interval: float = 3.0):
        super().__init__()
        self.viewer = napari_viewer
        register_panel(napari_viewer, self)  # the folder panel segments with this panel's model
        self.threaded = threaded
        self.tile: TileConfig | None = None
        self.stream_folder = Path(tempfile.gettempdir()) / "napari-unet"
        self.model: UNetModel | None = None
        self.last_result = None
        self.loss_history: list[float] = []
        self._adopted: set[str] = set()  # project folders whose model and settings were taken up
        self._watched_window = _no_window  # weak reference: the window owns this widget
        self._build(preview_interval)
        self._connect()
        self._refresh_layers()
        for layer in list(self.viewer.layers):  # a project dropped on napari before the panel was opened
            self._adopt_project_of(layer)
        self._update_model_label()
        self._update_device_label()
        _warm_up_in_background()

    # -- layout ---------------------------------------------------------------------------
    def _build(self, preview_interval: float) -> None:
        self._image_combo = QComboBox()
        self._annotation_combo = QComboBox()
        self._new_annotation_btn = QPushButton("New annotation layer")
        self._new_annotation_btn.setToolTip("Add an empty labels layer of the image's shape to paint on.")
        self._classes = ClassTable()
        self._images_list = TrainingImages()
        self._list_timer = QTimer(self, singleShot=True, interval=300)
        self._open_project_btn = QPushButton("Open project…")
        self._open_project_btn.setToolTip("Open a project folder: its images, annotations, classes, model and "
                                          "settings (dropping the folder on napari does the same).")
        self._save_project_btn = QPushButton("Save project…")
        self._save_project_btn.setToolTip("Save every annotated image, its annotation, the classes, the model and "
                                          "the settings into one folder, to open again later.")
        self._mode_combo = QComboBox()
        self._mode_combo.addItems(MODES)
        self._mode_combo.setToolTip("classes: every id is a class. objects: 1 = background, "
                                    "every other id one object; prediction separates touching objects.")
        self._mode_hint = QLabel(OBJECTS_HINT)
        self._mode_hint.setWordWrap(True)
        self._mode_hint.setVisible(False)
        data = QFormLayout()
        project_buttons = QHBoxLayout()
        project_buttons.addWidget(self._open_project_btn)
        project_buttons.addWidget(self._save_project_btn)
        data.addRow(project_buttons)
        data.addRow("Mode", self._mode_combo)
        data.addRow("Image", self._image_combo)
        data.addRow("Annotation", self._annotation_combo)
        annotation_buttons = QHBoxLayout()
        annotation_buttons.addWidget(self._new_annotation_btn)
        annotation_buttons.addWidget(self._classes.add_button)
        data.addRow(annotation_buttons)
        data.addRow(self._classes)
        data.addRow(QLabel("Images to train on"))
        data.addRow(self._images_list)
        data_box = QVBoxLayout()  # the hint sits outside the form, whose heights it would upset
        data_box.addLayout(data)
        data_box.addWidget(self._mode_hint)

        self._preset_combo = QComboBox()
        self._preset_combo.addItems(PRESETS)
        self._preset_combo.setToolTip("Size of a new model: small trains fast on a CPU and learns best from "
                                      "strokes; large suits full masks on a GPU; auto picks between them.")
        self._device_combo = QComboBox()
        self._device_combo.addItems(DEVICE_CHOICES)
        for row, name in enumerate(DEVICE_CHOICES):
            if name != "auto" and not _device_available(name):
                self._device_combo.model().item(row).setEnabled(False)
        self._device_label = QLabel()
        self._precision_combo = QComboBox()
        self._precision_combo.addItems(PRECISION_CHOICES)
        self._precision_combo.setToolTip("auto: bf16 on CUDA and on CPUs with hardware bf16, else fp32. "
                                         "fp32 if training diverges.")
        self._model_label = QLabel()
        self._model_label.setWordWrap(True)
        self._new_model_btn = QPushButton("New model")
        self._new_model_btn.setToolTip("Forget the current model; the next training starts from scratch.")
        self._load_model_btn = QPushButton("Load model…")
        self._save_model_btn = QPushButton("Save model…")
        model_buttons = QHBoxLayout()
        for button in (self._new_model_btn, self._load_model_btn, self._save_model_btn):
            model_buttons.addWidget(button)
        device_row = QHBoxLayout()
        device_row.addWidget(self._device_combo)
        device_row.addWidget(self._device_label)
        self._volume_check = QCheckBox("3D network (stacks)")
        self._volume_check.setToolTip("A new model sees blocks of the stack (3x3x3 convolutions) instead of one "
                                      "slice at a time; classes mode, stacks (Z, Y, X) only.")
        self._z_ratio_spin = QDoubleSpinBox(minimum=0.05, maximum=100.0, value=TrainConfig().z_ratio, singleStep=0.5,
                                             decimals=2)
        self._z_ratio_spin.setToolTip("Z voxel size / XY voxel size (from the image layer's scale when it has one): "
                                      "Z is pooled and convolved only where it is not much coarser than Y and X.")
        volume_row = QHBoxLayout()
        volume_row.addWidget(self._volume_check)
        volume_row.addWidget(QLabel("Z/XY"))
        volume_row.addWidget(self._z_ratio_spin)
        model = QFormLayout()
        model.addRow("New model size", self._preset_combo)
        model.addRow(volume_row)
        model.addRow("Device", device_row)
        model.addRow("Precision", self._precision_combo)
        model.addRow(self._model_label)
        model.addRow(model_buttons)

        self._train = TrainSection(self, preview_interval)
        self._predict = PredictSection(self)

        self._export_btn = QPushButton("Export all predictions…")
        self._export_btn.setToolTip("Write every prediction layer as a TIFF into a folder "
                                    "(as OME-Zarr when the folder's name ends in .zarr).")
        export = QVBoxLayout()
        export.addWidget(self._export_btn)
        self._bioimageio_btn = QPushButton("Export to bioimage.io…")
        self._bioimageio_btn.setToolTip("Write the model as a bioimage.io package (.zip), tested on the chosen image.")
        export.addWidget(self._bioimageio_btn)

        # the sections scroll inside the dock: on a short screen nothing gets squeezed or clipped
        content = QWidget()
        layout = QVBoxLayout(content)
        for title, inner in (("1. Data", data_box), ("2. Model", model)):
            box = QGroupBox(title)
            box.setLayout(inner)
            layout.addWidget(box)
        layout.addWidget(self._train)
        layout.addWidget(self._predict)
        box = QGroupBox("5. Export")
        box.setLayout(export)
        layout.addWidget(box)
        layout.addStretch()
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QFrame.Shape.NoFrame)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self._scroll)
        self.setMinimumWidth(content.minimumSizeHint().width() + self._scroll.verticalScrollBar().sizeHint().width())

    def _connect(self) -> None:
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.moved):
            event.connect(self._refresh_layers)
        for layer in layers:
            layer.events.name.connect(self._refresh_layers)
        layers.events.inserted.connect(self._watch_layer_name)
        for layer in layers:
            self._watch_paint(layer)
        self._list_timer.timeout.connect(self._refresh_images_list)
        self._open_project_btn.clicked.connect(lambda: self.open_project())
        self._save_project_btn.clicked.connect(lambda: self.save_project())
        self._image_combo.currentTextChanged.connect(self._on_image_changed)
        self._annotation_combo.currentTextChanged.connect(self._on_annotation_changed)
        self._new_annotation_btn.clicked.connect(self.new_annotation_layer)
        self._mode_combo.currentTextChanged.connect(self._on_mode_changed)
        self._device_combo.currentTextChanged.connect(self._update_device_label)
        self._precision_combo.currentTextChanged.connect(self._update_precision)
        self._preset_combo.currentTextChanged.connect(self._update_model_label)
        self._new_model_btn.clicked.connect(lambda: self.set_model(None))
        self._load_model_btn.clicked.connect(lambda: self.load_model())
        self._save_model_btn.clicked.connect(lambda: self.save_model())
        self._export_btn.clicked.connect(lambda: self.export_predictions())
        self._bioimageio_btn.clicked.connect(lambda: self.export_bioimageio())

    # -- closing the viewer stops the workers ----------------------------------------------
    def _watch_window(self) -> None:
        """Watch the window the widget is docked in (known once docked) for closing."""
        window = self.window()
        if window is not self and window is not self._watched_window():
            window.installEventFilter(self)
            self._watched_window = weakref.ref(window)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt override
        # getattr: Qt may deliver events while the Python side is being torn down
        if event.type() == QEvent.Type.Close and watched is getattr(self, "_watched_window", _no_window)():
            self.stop_all()
        return False

    def stop_all(self) -> None:
        """Ask running training and prediction to stop (the viewer is closing)."""
        self._train.stop()
        self._predict.stop()

    # -- layer pickers --------------------------------------------------------------------
    def _watch_layer_name(self, event) -> None:
        event.value.events.name.connect(self._refresh_layers)
        self._watch_paint(event.value)
        self._adopt_project_of(event.value)

    def _watch_paint(self, layer) -> None:
        if isinstance(layer, Labels):
            layer.events.paint.connect(self._schedule_list_refresh)
            layer.events.data.connect(self._schedule_list_refresh)

    def _schedule_list_refresh(self, event=None) -> None:
        source = getattr(event, "source", None)
        self._images_list.mark_changed(getattr(source, "name", None))
        self._list_timer.start()

    def _refresh_images_list(self) -> None:
        self._images_list.refresh(self.viewer, self.current_pair())

    def current_pair(self) -> Pair | None:
        """The chosen image and annotation layer (whatever their shapes), or None."""
        image, annotation = self.image_layer(), self.annotation_layer()
        return None if image is None or annotation is None else Pair(image, annotation)

    def image_pairs(self) -> list[Pair]:
        """Every image layer with an annotation layer of its shape, painted or not."""
        return image_pairs(self.viewer, self.current_pair())

    def is_ticked(self, name: str) -> bool:
        """Whether the image ``name`` is ticked in "Images to train on" (images not listed are)."""
        return self._images_list.is_ticked(name)

    def set_ticked(self, name: str, ticked: bool) -> None:
        self._images_list.set_ticked(name, ticked)

    def training_pairs(self) -> list[Pair]:
        """What Train learns from: the ticked images that carry paint, and the chosen pair when it
        carries none yet (strokes painted on it while training runs are taken up)."""
        current = self.current_pair()
        self._images_list.refresh(self.viewer, current)
        pairs = self._images_list.checked_pairs()
        if current is not None and all(pair.name != current.name for pair in self._images_list.pairs()):
            pairs.append(current)
        return pairs

    def _refresh_layers(self, event=None) -> None:
        images = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        _set_choices(self._image_combo, images)
        _set_choices(self._annotation_combo, labels)
        self._on_image_changed(self._image_combo.currentText())
        self._refresh_images_list()

    def image_layer(self) -> Image | None:
        name = self._image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def annotation_layer(self) -> Labels | None:
        name = self._annotation_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _on_image_changed(self, name: str) -> None:
        image = self.image_layer()
        if image is not None:
            wanted = _layers.annotation_name(image)
            if wanted in self.viewer.layers and self._annotation_combo.currentText() != wanted:
                self._annotation_combo.setCurrentText(wanted)
        self._on_annotation_changed(self._annotation_combo.currentText())
        self._update_volume_option(from_scale=True)

    def _on_annotation_changed(self, name: str) -> None:
        self._classes.set_layer(self.annotation_layer())
        self._refresh_images_list()

    def new_annotation_layer(self) -> Labels | None:
        """Add ``"<image> annotation"`` for the chosen image and select it."""
        image = self.image_layer()
        if image is None:
            show_warning("Open an image first: the annotation layer takes the image's shape.")
            return None
        layer = _layers.new_annotation_layer(self.viewer, image, objects=self.mode() == "objects")
        self._annotation_combo.setCurrentText(layer.name)
        self._classes.select(layer.selected_label)
        self.viewer.layers.selection.active = layer
        return layer

    def mode(self) -> str:
        """``"classes"`` or ``"objects"`` (one id per object, instance prediction)."""
        return self._mode_combo.currentText()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
        self._mode_combo.setCurrentText(mode)

    def _on_mode_changed(self, mode: str) -> None:
        objects = mode == "objects"
        self._mode_hint.setVisible(objects)
        self._classes.add_button.setVisible(not objects)
        self._update_volume_option()

    def _update_volume_option(self, from_scale: bool = False) -> None:
        """The 3D option is offered for stacks (Z, Y, X) in classes mode; with ``from_scale``
        (a new image) Z/XY is read from the layer's scale."""
        image = self.image_layer()
        stack = image is not None and len(_layers.image_info(image).stack_shape) == 1
        usable = stack and self.mode() == "classes"
        self._volume_check.setEnabled(usable)
        self._z_ratio_spin.setEnabled(usable)
        if not usable:
            self._volume_check.setChecked(False)
        elif from_scale and image.scale[-1] > 0:
            self._z_ratio_spin.setValue(float(image.scale[-3] / image.scale[-1]))

    def volume(self) -> bool:
        """Whether a new model should be a 3D network (the "3D network" box)."""
        return self._volume_check.isEnabled() and self._volume_check.isChecked()

    def z_ratio(self) -> float:
        return float(self._z_ratio_spin.value())

    # -- model and device -----------------------------------------------------------------
    def _update_device_label(self, *_) -> None:
        """Show the device the choice resolves to, and move the current model there."""
        try:
            device = pick_device(self._device_combo.currentText())
        except InputError as error:
            self._device_label.setText(str(error))
            return
        self._device_label.setText(f"→ {device.type}")
        if self.model is not None and not self.busy:
            self.model.to(device)

    def _update_precision(self, *_) -> None:
        if self.model is not None and not self.busy:
            self.model.precision = self.precision()

    def _update_model_label(self, *_) -> None:
        if self.model is None:
            text = f"No model yet: Train starts a new {self._preset_combo.currentText()} model."
        else:
            config, classes = self.model.config, self.model.class_map
            steps = int(self.model.info.get("steps", 0))
            text = (f"Model: {self.model.task}, depth {config.depth}, width {config.base_width}, "
                    f"{classes.n_classes} classes ({', '.join(classes.names)}), {steps} steps trained. "
                    "Train again to fine-tune it.")
        self._model_label.setText(text)
        self._save_model_btn.setEnabled(self.model is not None)

    def load_model(self, path: str | None = None) -> UNetModel | None:
        """Load a model file; training then fine-tunes it and Predict uses it."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load U-Net model", "", MODEL_FILTER)
            if not path:
                return None
        try:
            model = UNetModel.load(path, device=self._device_combo.currentText())
        except (InputError, OSError) as error:  # ModelFileError is an InputError
            show_error(f"Could not load the model: {user_sentence(error)}")
            return None
        model.precision = self.precision()
        self.set_model(model)
        show_info(f"Loaded model {Path(path).name}.")
        return self.model

    def save_model(self, path: str | None = None) -> str | None:
        """Write the current model to ``path`` (asks for one when None)."""
        if self.model is None:
            show_warning("There is no model to save yet: train one or load one first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save U-Net model", "unet_model.safetensors",
                                                  MODEL_FILTER)
            if not path:
                return None
        try:
            self.model.save(path)
        except (InputError, OSError) as error:
            show_error(f"Could not save the model: {error}")
            return None
        show_info(f"Saved the model to {path}.")
        return str(path)

    # -- projects -------------------------------------------------------------------------
    def task(self) -> Task:
        """What the next training learns (the mode and the 3D box)."""
        return self._train.task()

    def settings(self) -> dict:
        """The training settings a project keeps."""
        config = self._train.config()
        settings = {"time_budget": config.time_budget, "steps": config.steps, "preset": config.preset,
                    "device": config.device, "precision": config.precision}
        if self.volume():
            settings["z_ratio"] = config.z_ratio
        return settings

    def save_project(self, folder: str | None = None) -> Path | None:
        """Save the panel's images, annotations, classes, model and settings into ``folder``
        (asks for one when None); returns the folder. Atomic: an interrupted save leaves the
        project as it was before."""
        if self.busy:
            show_warning("Training or prediction is running: stop it or let it finish, then save the project.")
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save the project into a new or empty folder")
            if not folder:
                return None
        project = _project.project_from_panel(self)
        if not project.images:
            show_warning("There is nothing to save yet: open an image and paint on it first.")
            return None
        try:
            save_project(folder, project)
        except InputError as error:  # WriteError too: nothing of the previous save was lost
            show_error(f"Could not save the project: {user_sentence(error)}")
            return None
        self._adopted.add(_folder_key(folder))
        for image in project.images:  # a copied-in image now has a file: the next save reuses it
            if image.name in self.viewer.layers:
                metadata = self.viewer.layers[image.name].metadata
                metadata[_project.PATH_KEY] = str(image.path)
                metadata[_project.PROJECT_KEY] = str(folder)
        model = ", the model" if project.model is not None else ""
        show_info(f"Saved the project ({len(project.images)} image(s){model}) to {folder}.")
        return Path(folder)

    def open_project(self, folder: str | None = None) -> Project | None:
        """Open a project folder: its layers, classes, model and settings; Train then goes on
        from its model. What cannot be opened is named in a warning; the rest opens."""
        if self.busy:
            show_warning("Training or prediction is running: stop it or let it finish, then open the project.")
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Open a napari-unet project folder")
            if not folder:
                return None
        try:
            project = open_project(folder, device=self.device_name())
        except InputError as error:
            show_error(f"Could not open the project: {user_sentence(error)}")
            return None
        self._adopted.add(_folder_key(folder))
        image, image_name = None, ""
        for data, kwargs, kind in _project.layer_data(project):
            if kind == "labels" and image is not None:  # follow the image's name if napari made it unique
                kwargs["name"] = _layers.annotation_name(image) + kwargs["name"][len(f"{image_name} annotation"):]
            layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
            if kind == "image":
                image, image_name = layer, kwargs["name"]
        for problem in project.problems + project.model_problems:
            show_warning(problem)
        self._restore(project)
        return project

    def _adopt_project_of(self, layer) -> None:
        """A layer from a project dropped on napari: take up that project's model and settings too."""
        folder = layer.metadata.get(_project.PROJECT_KEY)
        if not folder or _folder_key(folder) in self._adopted:
            return
        self._adopted.add(_folder_key(folder))
        QTimer.singleShot(0, lambda: self._adopt(folder))  # after the reader has added all its layers

    def _adopt(self, folder: str) -> None:
        try:
            project = open_project(folder, device=self.device_name())
        except InputError as error:
            show_warning(f"The project's model and settings were not opened: {user_sentence(error)}")
            return
        for problem in project.model_problems:
            show_warning(problem)
        self._restore(project)

    def _restore(self, project: Project) -> None:
        """Set the panel as the project left it: mode, settings, ticks, colours, model, loss history."""
        self.set_mode(project.task.mode.value)
        settings = project.settings
        self._train.set_limits(settings.get("time_budget"), settings.get("steps"))
        for combo, key in ((self._preset_combo, "preset"), (self._precision_combo, "precision"),
                           (self._device_combo, "device")):
            value = settings.get(key)
            if value is not None and combo.findText(value) >= 0 and (key != "device" or _device_available(value)):
                combo.setCurrentText(value)
        if "z_ratio" in settings:
            self._z_ratio_spin.setValue(float(settings["z_ratio"]))
        for image in project.images:
            self.set_ticked(image.name, image.train)
        key = _folder_key(project.folder)
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and _folder_key(layer.metadata.get(_project.PROJECT_KEY) or "") == key:
                _project.apply_colors(layer, project.colors)
        if project.images and project.images[0].name in self.viewer.layers:
            self._image_combo.setCurrentText(project.images[0].name)
        if project.model is not None:
            project.model.precision = self.precision()
        self.set_model(project.model)
        self._volume_check.setChecked(project.task.dims == 3 and self._volume_check.isEnabled())
        self.loss_history = list(project.loss_history)
        self._train.show_losses(self.loss_history)
        self._refresh_layers()
        model = "its model" if project.model is not None else "no model yet"
        show_info(f"Opened the project {project.folder}: {len(project.images)} image(s), {model}.")

    # -- export ---------------------------------------------------------------------------
    def export_predictions(self, folder: str | None = None, overwrite: bool | None = None) -> list[Path]:
        """Write every ``"… prediction"`` labels layer as ``<layer name>.tif`` into ``folder``, or
        as an OME-Zarr store ``<layer name>.ome.zarr`` when ``folder``'s name ends in ``.zarr``.

        Layers whose names give the same file name get ``_2``, ``_3``... Existing files are
        replaced only with ``overwrite`` (asked in a dialog when the folder was chosen in one);
        otherwise they are kept and named in the notification. Returns the files written.
        """
        layers = [layer for layer in self.viewer.layers
                  if isinstance(layer, Labels) and layer.name.endswith(" prediction")]
        if not layers:
            show_warning("There is no prediction layer to export: Predict first.")
            return []
        asked = folder is None
        if asked:
            folder = QFileDialog.getExistingDirectory(self, "Export predictions to folder (a name ending in "
                                                     ".zarr writes OME-Zarr)")
            if not folder:
                return []
        as_zarr = Path(folder).name.lower().endswith(".zarr")
        targets = _export_targets(Path(folder), [layer.name for layer in layers], ".ome.zarr" if as_zarr else ".tif")
        existing = [target for target in targets if target.exists()]
        if existing and overwrite is None and asked:
            answer = QMessageBox.question(self, "Replace files?", f"{len(existing)} file(s) already exist in {folder} "
                                          f"({', '.join(t.name for t in existing[:3])}…). Replace them?")
            overwrite = answer == QMessageBox.StandardButton.Yes
        written, kept = [], []
        for layer, target in zip(layers, targets):
            if target.exists() and not overwrite:
                kept.append(target.name)
                continue
            try:
                write = write_labels_zarr if as_zarr else write_labels_tiff
                written.append(write(target, layer.data, overwrite=True,
                                     metadata=_layers.tiff_metadata(layer.metadata)))
            except InputError as error:  # a full disk or no permission: one sentence, the rest not tried
                show_error(f"Export stopped after {len(written)} file(s): {error}")
                return written
        if kept:
            show_warning(f"Exported {len(written)} prediction(s) to {folder}; kept {len(kept)} existing file(s) "
                         f"unchanged: {', '.join(kept)}.")
        else:
            show_info(f"Exported {len(written)} prediction(s) to {folder}.")
        return written

    def export_bioimageio(self, path: str | None = None, overwrite: bool = False) -> Path | None:
        """Write the model as a bioimage.io package (``.zip``, else a folder) with test tensors from the
        chosen image; asks for ``path`` when None (the dialog asks before replacing a file)."""
        image = self.image_layer()
        if self.model is None or image is None:
            show_warning("Train or load a model and choose an image like its training images first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export to bioimage.io", "unet_bioimageio.zip",
                                                  "bioimage.io package (*.zip);;All files (*)")
            if not path:
                return None
            overwrite = True
        try:
            out = export_bioimageio(self.model, path, _layers.image_source(image),
                                    channel_axis=_layers.image_info(image).channel_axis, overwrite=overwrite)
        except (InputError, OSError) as error:
            show_error(f"Could not export to bioimage.io: {user_sentence(error)}")
            return None
        show_info(f"Exported the model to {out}.")
        return out

    # -- shared state the sections use --------------------------------------------------
    def preset(self) -> str:
        return self._preset_combo.currentText()

    def device_name(self) -> str:
        return self._device_combo.currentText()

    def precision(self) -> str:
        return self._precision_combo.currentText()

    def class_names(self) -> dict[int, str]:
        return self._classes.names()

    def set_model(self, model: UNetModel | None, result=None) -> None:
        """Keep ``model`` (trained, loaded, or None to start afresh) for training and prediction;
        a model that is not the result of a training here starts a new loss history."""
        self.model = model
        if result is not None:
            self.last_result = result
        else:
            self.loss_history = []
        if model is not None and self._volume_check.isEnabled():
            self._volume_check.setChecked(model.config.dims == 3)  # the box shows what the model is
        self._update_model_label()

    @property
    def busy(self) -> bool:
        """Training or prediction is running."""
        return self._train.running or self._predict.worker is not None

    def set_busy(self, busy: bool, keep: QWidget | None = None) -> None:
        """Disable every control but ``keep`` (the running task's Stop button) while busy."""
        self._watch_window()
        for widget in self.findChildren((QPushButton, QComboBox, QAbstractSpinBox)):
            if widget is not keep and widget is not self._classes.add_button:
                widget.setEnabled(not busy)
        self._save_model_btn.setEnabled(not busy and self.model is not None)
        if not busy:
            self._update_volume_option()  # the 3D option only where it applies


def _set_choices(combo: QComboBox, names: list[str]) -> None:
    """Replace a combo box's items, keeping the current choice when it still exists."""
    current = combo.currentText()
    if [combo.itemText(i) for i in range(combo.count())] == names:
        return
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def _folder_key(folder) -> str:
    return str(Path(folder).resolve()) if folder else ""


def _device_available(name: str) -> bool:
    try:
        pick_device(name)
    except InputError:
        return False
    return True


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "prediction"


def _export_targets(folder: Path, names: list[str], suffix: str = ".tif") -> list[Path]:
    """``folder/<safe name><suffix>`` for each layer name, made distinct (``_2``, ``_3``...) where
    two names give the same file name (case-insensitively, for file systems that ignore case)."""
    targets, used = [], set()
    for name in names:
        stem = base = _safe_name(name)
        n = 1
        while stem.lower() in used:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem.lower())
        targets.append(folder / f"{stem}{suffix}")
    return targets


def _no_window() -> None:
    return None


def _warm_up_in_background() -> None:
    """Import ``torch._dynamo`` off the main thread: torch's first optimizer imports it
    (about 2 s on a laptop CPU), which would otherwise delay the first training step."""
    threading.Thread(target=importlib.import_module, args=("torch._dynamo",), daemon=True).start()
