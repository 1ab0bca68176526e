"""The "Train" section: budget, Train/Stop, progress, loss readout and curve, live previews.

Training runs `_workers.train_with_previews` in a thread worker. Strokes painted while
it runs are sent to the trainer (debounced), and previews land in the
``"<image> prediction"`` layer, never in the annotation.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QProgressBar, QPushButton, QSpinBox

from src_models import DEFAULT_TIME_BUDGET, STROKE_STEPS, InputError, Task, TrainConfig, Trainer, make_trainer

from . import _layers
from ._loss_plot import LossPlot
from ._messages import user_sentence
from ._workers import start, train_with_previews

__all__ = ["TrainSection"]

log = logging.getLogger(__name__)


class TrainSection(QGroupBox):
    """Train/Stop for the `UNetWidget` ``owner``; the trained model is stored on the owner.

    Attributes
    ----------
    preview_interval : float
        Seconds between live previews (the first follows the first step).
    first_preview_seconds : float or None
        Time from clicking Train to the first preview shown, for the last training.
    label_pushes : int
        How often new strokes were sent to a running trainer.
    """

    def __init__(self, owner, preview_interval: float = 3.0):
        super().__init__("3. Train")
        self._owner = owner
        self.preview_interval = preview_interval
        self.first_preview_seconds: float | None = None
        self.label_pushes = 0
        self._trainer: Trainer | None = None
        self._worker = None
        self._cancel = threading.Event()
        self._clicked_at = 0.0
        self._image: Image | None = None
        self._painted: Labels | None = None
        self._view: _layers.View | None = None
        self._push_timer = QTimer(self, singleShot=True, interval=250)

        self._budget_spin = QDoubleSpinBox(minimum=0, maximum=24 * 3600, value=0, decimals=0, suffix=" s")
        self._budget_spin.setSpecialValueText("default")
        self._budget_spin.setToolTip(f"Training stops after this many seconds. Default: no clock when learning from "
                                     f"strokes (it ends after the steps), {DEFAULT_TIME_BUDGET:.0f} s for full masks.")
        self._steps_spin = QSpinBox(minimum=0, maximum=10_000_000, value=0)
        self._steps_spin.setSpecialValueText("default")
        self._steps_spin.setToolTip(f"Training also stops after this many steps. Default: {STROKE_STEPS} when "
                                    "learning from strokes (longer training memorises them), no limit for full masks.")
        self._train_btn = QPushButton("Train")
        self._progress = QProgressBar(maximum=1000, textVisible=False)
        self._loss_label = QLabel("Paint a few strokes of two classes or more, then Train.")
        self._loss_label.setWordWrap(True)
        self._loss_plot = LossPlot()
        form = QFormLayout(self)
        form.addRow("Time budget", self._budget_spin)
        form.addRow("Steps", self._steps_spin)
        form.addRow(self._train_btn)
        form.addRow(self._progress)
        form.addRow(self._loss_label)
        form.addRow(self._loss_plot)

        self._train_btn.clicked.connect(self.toggle)
        self._push_timer.timeout.connect(self._push_labels)

    @property
    def running(self) -> bool:
        return self._trainer is not None

    @property
    def worker(self):
        """The running thread worker, or None."""
        return self._worker

    def toggle(self) -> None:
        """Train button: start training, or ask the running one to stop."""
        if self.running:
            self.stop()
        else:
            self.start()

    def task(self) -> Task:
        """What the next training learns: the widget's mode, 2D or (the 3D box) 3D."""
        return Task(self._owner.mode(), 3 if self._owner.volume() else 2)

    def config(self) -> TrainConfig:
        volume = {"z_ratio": self._owner.z_ratio()} if self._owner.volume() else {}
        return TrainConfig(time_budget=float(self._budget_spin.value()) or None, steps=self._steps_spin.value() or None,
                           preset=self._owner.preset(), device=self._owner.device_name(),
                           precision=self._owner.precision(), **volume)

    def start(self) -> bool:
        """Check the inputs here (problems become a notification, no worker), then train."""
        owner = self._owner
        if self.running or owner.busy:
            return False
        image, annotation = owner.image_layer(), owner.annotation_layer()
        if image is None or annotation is None:
            show_warning("Choose an image and an annotation layer (New annotation layer) first.")
            return False
        info = _layers.image_info(image)
        pixels = _layers.image_source(image)  # dask/zarr stay lazy: the engine reads the painted planes
        model = owner.model
        try:
            task = self.task()
            if model is not None and model.task.mismatch(task):
                show_warning(f"The current model does {model.task}: training a new model for {task}.")
                model = None
            trainer = make_trainer([pixels], [np.array(annotation.data)], task=task, config=self.config(),
                                   model=model, channel_axis=info.channel_axis, class_names=owner.class_names(),
                                   defer_prepare=True)
        except InputError as error:  # one sentence for the user
            show_error(user_sentence(error))
            return False
        self._trainer, self._image, self._painted = trainer, image, annotation
        self._cancel = threading.Event()
        self._clicked_at = time.perf_counter()
        self.first_preview_seconds = None
        self._view = _layers.current_view(owner.viewer, image)
        # made now, not at the first preview: adding a layer stalls the UI for a moment
        _layers.labels_layer(owner.viewer, _layers.prediction_name(image), info.spatial_shape,
                             like=image, below=annotation)
        self._loss_plot.set_losses([])
        self._progress.setValue(0)
        self._loss_label.setText("Training… the first preview follows the first step.")
        self._train_btn.setText("Stop")
        owner.set_busy(True, keep=self._train_btn)
        annotation.events.paint.connect(self._schedule_push)
        annotation.events.data.connect(self._schedule_push)
        self._worker = start(
            train_with_previews, trainer, self._cancel, pixels, info.channel_axis,
            self._current_view, owner.tile, self.preview_interval,
            threaded=owner.threaded, yielded=self._on_update, returned=self._on_done,
            errored=self._on_error, finished=self._on_finished)
        return True

    def stop(self) -> None:
        """Ask the trainer to stop: it finishes the running step and keeps the model."""
        if self.running:
            self._cancel.set()
            self._train_btn.setText("Stopping…")
            self._train_btn.setEnabled(False)

    def _current_view(self) -> _layers.View:
        """The plane and field of view to preview; read by the worker, set on the main thread."""
        return self._view

    def _schedule_push(self, event=None) -> None:
        self._push_timer.start()

    def _push_labels(self) -> None:
        """Send the annotation as painted now to the running trainer (used from its next step)."""
        if self._trainer is None or self._painted is None:
            return
        try:
            # in objects mode the trainer derives background / interior / boundary in its own thread
            self._trainer.update_labels(0, np.array(self._painted.data))
        except ValueError as error:
            show_warning(f"New strokes not used: {error}")
            return
        self.label_pushes += 1

    def _on_update(self, update) -> None:
        progress = update.progress
        if progress is not None:
            self._progress.setValue(int(1000 * progress.fraction))
            self._loss_plot.append(progress.loss)
            budget = f" / {progress.time_budget:.0f} s" if progress.time_budget else ""
            self._loss_label.setText(
                f"step {progress.step} · loss {progress.loss:.4f} · {progress.elapsed:.0f} s{budget}")
            if progress.notice:
                show_warning(progress.notice)
        if self._image is None:
            return
        if update.preview is not None:
            self._show_preview(update.preview)
        self._view = _layers.current_view(self._owner.viewer, self._image)

    def _show_preview(self, preview) -> None:
        if self.first_preview_seconds is None:
            self.first_preview_seconds = time.perf_counter() - self._clicked_at
            log.info("first preview %.2f s after Train", self.first_preview_seconds)
        image = self._image
        height, width = _layers.image_info(image).spatial_shape[-2:]
        view = preview.view
        whole = view.rows == slice(0, height) and view.cols == slice(0, width)
        _layers.show_labels(
            self._owner.viewer, _layers.prediction_name(image), preview.labels, like=image,
            colors_from=self._painted, index=view.index, region=None if whole else (view.rows, view.cols),
            full_shape=_layers.image_info(image).spatial_shape,
            classes=_layers.prediction_classes(None if self._trainer is None else self._trainer.model),
            instances=self._trainer is not None and self._trainer.model.task.objects)

    def _on_done(self, result) -> None:
        if result is None:  # the worker was aborted (the viewer closed): nothing to keep
            return
        self._owner.set_model(result.model, result)
        self._progress.setValue(1000)
        if result.message:
            show_warning(result.message)
        how = "stopped" if result.stopped else "done"
        last = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
        names = result.model.class_map.names
        thin = f" '{names[0]}' is drawn as thin lines between regions of '{names[1]}'." \
            if result.model.separates_regions else ""
        length = " (the default length for strokes)" if result.default_length else ""
        self._loss_label.setText(
            f"Training {how}: {result.steps} steps{length} in {result.elapsed:.0f} s{last}.{thin}")

    def _on_error(self, error: BaseException) -> None:
        log.error("training failed", exc_info=error)
        show_error(f"Training failed: {user_sentence(error)}")

    def _on_finished(self) -> None:
        if self._painted is not None:
            self._painted.events.paint.disconnect(self._schedule_push)
            self._painted.events.data.disconnect(self._schedule_push)
        self._push_timer.stop()
        self._trainer = self._image = self._painted = self._worker = None
        self._train_btn.setText("Train")
        self._train_btn.setEnabled(True)
        self._owner.set_busy(False)
