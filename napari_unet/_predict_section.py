"""The "Predict" section: current slice, whole image or every open image, tile by tile in a
worker with a progress bar; and "Accept into annotation"."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from pathlib import Path

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QProgressBar, QPushButton

from . import _layers
from ._messages import user_sentence
from ._workers import PredictJob, ProgressBox, predict_jobs, start

__all__ = ["PredictSection", "SCOPES", "stream_path"]

log = logging.getLogger(__name__)

SCOPES = ("Current slice", "Whole image", "Every image in the project", "All open images")


class PredictSection(QGroupBox):
    """Predict with the model of the `UNetWidget` ``owner`` into ``"<image> prediction"`` layers."""

    def __init__(self, owner):
        super().__init__("4. Predict")
        self._owner = owner
        self._worker = None
        self._cancel = threading.Event()
        self._box = ProgressBox()
        self._poll_timer = QTimer(self, interval=100)

        self._scope_combo = QComboBox()
        self._scope_combo.addItems(SCOPES)
        self._scope_combo.setToolTip("A stack's current slice, the whole chosen image, every image with an annotation "
                                     "layer (ticked for training or not), or every image layer.")
        self._tta_check = QCheckBox("Average 8 orientations (about 7 × slower)")
        self._tta_check.setToolTip("Predict every flip and rotation of each tile and average them "
                                   "(test-time augmentation): slightly smoother masks.")
        self._predict_btn = QPushButton("Predict")
        self._progress = QProgressBar(maximum=1000, textVisible=False)
        self._accept_btn = QPushButton("Accept into annotation")
        self._accept_btn.setToolTip("Copy the prediction into unpainted pixels; painted pixels stay.")
        form = QFormLayout(self)
        form.addRow("Predict on", self._scope_combo)
        form.addRow(self._tta_check)
        form.addRow(self._predict_btn)
        form.addRow(self._progress)
        form.addRow(self._accept_btn)

        self._predict_btn.clicked.connect(self.toggle)
        self._accept_btn.clicked.connect(self.accept)
        self._poll_timer.timeout.connect(self._poll)

    @property
    def worker(self):
        return self._worker

    def toggle(self) -> None:
        """Predict button: start, or stop the running prediction between tile batches."""
        if self._worker is not None:
            self.stop()
        else:
            self.start()

    def stop(self) -> None:
        if self._worker is not None:
            self._cancel.set()

    def _jobs(self) -> list[PredictJob]:
        owner = self._owner
        scope = self._scope_combo.currentText()
        if scope == "All open images":
            sources = [layer for layer in owner.viewer.layers if isinstance(layer, Image)]
        elif scope == "Every image in the project":
            sources = [pair.image for pair in owner.image_pairs()]
            chosen = owner.image_layer()
            if chosen is not None and chosen.name not in {layer.name for layer in sources}:
                sources.append(chosen)
        else:
            sources = [layer for layer in [owner.image_layer()] if layer is not None]
        expected = owner.model.image_channels
        jobs, skipped = [], []
        for layer in sources:
            info = _layers.image_info(layer)
            if (1 if info.channel_axis is None else layer.data.shape[-1]) != expected:
                skipped.append(layer.name)
                continue
            index = ()
            if scope == "Current slice" and info.stack_shape:
                index = _layers.current_view(owner.viewer, layer).index
            name = _layers.prediction_name(layer)
            # the engine streams a whole big image into the TIFF, and reads a lazy layer tile by tile
            jobs.append(PredictJob(name=name, source=layer.name, image=_layers.image_source(layer),
                                   channel_axis=info.channel_axis, full_shape=info.spatial_shape, index=index,
                                   stream_to=None if index else str(stream_path(owner.stream_folder, name))))
        if skipped:
            show_warning(f"Skipped {', '.join(skipped)}: the model expects {expected} channel(s).")
        return jobs

    def start(self) -> bool:
        owner = self._owner
        if owner.model is None:
            show_warning("There is no model yet: train one or load a model file first.")
            return False
        if owner.busy:
            return False
        jobs = self._jobs()
        if not jobs:
            show_warning("No image to predict: open an image layer first.")
            return False
        self._cancel = threading.Event()
        self._box = ProgressBox(len(jobs))
        self._progress.setValue(0)
        self._predict_btn.setText("Stop")
        owner.set_busy(True, keep=self._predict_btn)
        self._poll_timer.start()
        tile = owner.tile
        if self._tta_check.isChecked():
            tile = dataclasses.replace(tile or owner.model.default_tile(), tta=True)
        self._worker = start(
            predict_jobs, owner.model, jobs, self._cancel, self._box, tile,
            threaded=owner.threaded, yielded=self._on_predicted, returned=lambda _: None,
            errored=self._on_error, finished=self._on_finished)
        return True

    def _poll(self) -> None:
        self._progress.setValue(int(1000 * self._box.fraction()))
        for message in self._box.take_notices():
            show_warning(message)

    def _on_predicted(self, item) -> None:
        job, result = item
        viewer = self._owner.viewer
        source = viewer.layers[job.source] if job.source in viewer.layers else None
        annotation = _layers.annotation_name(source) if source is not None else None
        colors = viewer.layers[annotation] if annotation in viewer.layers else self._owner.annotation_layer()
        _layers.show_labels(viewer, job.name, result.labels, like=source, colors_from=colors,
                            index=job.index, full_shape=job.full_shape,
                            classes=_layers.prediction_classes(self._owner.model),
                            instances=self._owner.model.task.objects)
        if result.streamed_to is not None:
            show_info(f"{job.name} was streamed to {result.streamed_to}; the layer reads it from there as you look. "
                      "Export writes a compressed copy.")

    def _on_error(self, error: BaseException) -> None:
        log.error("prediction failed", exc_info=error)
        show_error(f"Prediction failed: {user_sentence(error)}")

    def _on_finished(self) -> None:
        self._poll_timer.stop()
        if self._cancel.is_set():
            show_info("Prediction stopped.")
        else:
            self._poll()
        self._worker = None
        self._predict_btn.setText("Predict")
        self._owner.set_busy(False)

    def accept(self) -> int:
        """Copy the chosen image's prediction into unpainted annotation pixels; returns their count."""
        owner = self._owner
        image, annotation = owner.image_layer(), owner.annotation_layer()
        name = None if image is None else _layers.prediction_name(image)
        if annotation is None or name not in owner.viewer.layers:
            show_warning("Nothing to accept: choose an annotation layer and predict first.")
            return 0
        prediction = np.asarray(owner.viewer.layers[name].data)
        if owner.model is not None and owner.model.task.objects:
            # objects mode: predicted background -> 1, object k -> a fresh id above those painted
            offset = max(int(np.max(annotation.data)), 1)
            prediction = np.where(prediction > 0, prediction.astype(np.int64) + offset, 1)
            if prediction.max() > np.iinfo(annotation.data.dtype).max:
                show_error(f"Too many objects for the {annotation.data.dtype} annotation layer.")
                return 0
        try:
            filled = _layers.accept_into(annotation, prediction)
        except ValueError as error:
            show_error(str(error))
            return 0
        show_info(f"Accepted {filled} predicted pixels into {annotation.name}; painted pixels kept.")
        return filled


def stream_path(folder, name: str) -> Path:
    """Where the streamed prediction ``name`` is written: ``<folder>/<name>.tif``."""
    return Path(folder) / (re.sub(r"[^\w.-]+", "_", name) + ".tif")
