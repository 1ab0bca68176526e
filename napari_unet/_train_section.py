"""The "Train" section: budget, Train/Stop, progress, loss readout and curve, live previews.

Training runs `_workers.train_with_previews` in a thread worker on every image of the
panel's list at once. Strokes painted on any of them while it runs are sent to the trainer
(debounced); previews follow the image the user looks at and land in its
``"<image> prediction"`` layer, never in the annotation.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial

import numpy as np
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QProgressBar, QPushButton, QSpinBox

from src_models import DEFAULT_TIME_BUDGET, STROKE_STEPS, InputError, Task, TrainConfig, Trainer, make_trainer

from . import _layers
from ._loss_plot import LossPlot
from ._messages import user_sentence
from ._training_images import Pair
from ._workers import PreviewTarget, start, train_with_previews

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
        self._pairs: list[Pair] = []
        self._target: PreviewTarget | None = None
        self._dirty: set[int] = set()
        self._connections: list = []
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
        pairs = owner.training_pairs()
        if not pairs:
            show_warning("Choose an image and an annotation layer (New annotation layer) first.")
            return False
        axes = {_layers.image_info(pair.image).channel_axis for pair in pairs}
        if len(axes) > 1:
            grey = [p.name for p in pairs if _layers.image_info(p.image).channel_axis is None]
            colour = [p.name for p in pairs if _layers.image_info(p.image).channel_axis is not None]
            show_error(f"The ticked images mix grey ({', '.join(grey)}) and RGB ({', '.join(colour)}) images; "
                       "untick the images of one kind in 'Images to train on'.")
            return False
        # dask/zarr stay lazy: the engine reads the painted planes
        pixels = [_layers.image_source(pair.image) for pair in pairs]
        model = owner.model
        try:
            task = self.task()
            if model is not None and model.task.mismatch(task):
                show_warning(f"The current model does {model.task}: training a new model for {task}.")
                model = None
            trainer = make_trainer(pixels, [np.array(pair.annotation.data) for pair in pairs], task=task,
                                   config=self.config(), model=model, channel_axis=axes.pop(),
                                   class_names=owner.class_names(), defer_prepare=True)
        except InputError as error:  # one sentence for the user
            show_error(user_sentence(error))
            return False
        self._trainer, self._pairs = trainer, pairs
        self._cancel = threading.Event()
        self._clicked_at = time.perf_counter()
        self.first_preview_seconds = None
        self._target = self._looked_at()
        pair = pairs[self._target.index]
        # made now, not at the first preview: adding a layer stalls the UI for a moment
        _layers.labels_layer(owner.viewer, _layers.prediction_name(pair.image),
                             _layers.image_info(pair.image).spatial_shape, like=pair.image, below=pair.annotation)
        self._loss_plot.set_losses([])
        self._progress.setValue(0)
        self._loss_label.setText("Training… the first preview follows the first step.")
        self._train_btn.setText("Stop")
        owner.set_busy(True, keep=self._train_btn)
        self._dirty = set()
        for i, pair in enumerate(pairs):
            for event in (pair.annotation.events.paint, pair.annotation.events.data):
                callback = partial(self._schedule_push, i)
                event.connect(callback)
                self._connections.append((event, callback))
        self._worker = start(
            train_with_previews, trainer, self._cancel, self._current_target, owner.tile, self.preview_interval,
            threaded=owner.threaded, yielded=self._on_update, returned=self._on_done,
            errored=self._on_error, finished=self._on_finished)
        return True

    def stop(self) -> None:
        """Ask the trainer to stop: it finishes the running step and keeps the model."""
        if self.running:
            self._cancel.set()
            self._train_btn.setText("Stopping…")
            self._train_btn.setEnabled(False)

    def _current_target(self) -> PreviewTarget:
        """The image, plane and field of view to preview; read by the worker, set on the main thread."""
        return self._target

    def _looked_at(self) -> PreviewTarget:
        """What the user looks at among the training images: the image of the active layer (the
        image, its annotation or its prediction), else the topmost visible one, else the first."""
        viewer = self._owner.viewer
        active = viewer.layers.selection.active
        index = None
        for i, pair in enumerate(self._pairs):
            # names, not identity: the panel holds proxies of the layers
            if active is not None and active.name in (pair.name, pair.annotation.name,
                                                      _layers.prediction_name(pair.image)):
                index = i
        if index is None:
            shown = [layer for layer in viewer.layers if layer.visible]
            for layer in shown:  # bottom to top: the last match is the topmost
                for i, pair in enumerate(self._pairs):
                    if layer.name in (pair.name, pair.annotation.name):
                        index = i
        pair = self._pairs[index or 0]
        info = _layers.image_info(pair.image)
        return PreviewTarget(index=index or 0, image=_layers.image_source(pair.image),
                             channel_axis=info.channel_axis, view=_layers.current_view(viewer, pair.image))

    def _schedule_push(self, index: int, event=None) -> None:
        self._dirty.add(index)
        self._push_timer.start()

    def _push_labels(self) -> None:
        """Send the annotations painted since the last push to the running trainer (used from its next step)."""
        if self._trainer is None:
            return
        dirty, self._dirty = self._dirty, set()
        for i in sorted(dirty):
            try:
                # in objects mode the trainer derives background / interior / boundary in its own thread
                self._trainer.update_labels(i, np.array(self._pairs[i].annotation.data))
            except ValueError as error:
                show_warning(f"New strokes on {self._pairs[i].name} not used: {error}")
                continue
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
        if not self._pairs:
            return
        if update.preview is not None:
            self._show_preview(update.preview)
        self._target = self._looked_at()

    def _show_preview(self, preview) -> None:
        if self.first_preview_seconds is None:
            self.first_preview_seconds = time.perf_counter() - self._clicked_at
            log.info("first preview %.2f s after Train", self.first_preview_seconds)
        pair = self._pairs[preview.target.index]
        image = pair.image
        height, width = _layers.image_info(image).spatial_shape[-2:]
        view = preview.view
        whole = view.rows == slice(0, height) and view.cols == slice(0, width)
        _layers.show_labels(
            self._owner.viewer, _layers.prediction_name(image), preview.labels, like=image,
            colors_from=pair.annotation, index=view.index, region=None if whole else (view.rows, view.cols),
            full_shape=_layers.image_info(image).spatial_shape,
            classes=_layers.prediction_classes(None if self._trainer is None else self._trainer.model),
            instances=self._trainer is not None and self._trainer.model.task.objects)

    def _on_done(self, result) -> None:
        if result is None:  # the worker was aborted (the viewer closed): nothing to keep
            return
        self._owner.set_model(result.model, result)
        self._owner.loss_history.extend(result.losses)
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

    def set_limits(self, time_budget: float | None, steps: int | None) -> None:
        """Set Time budget and Steps (None: default)."""
        self._budget_spin.setValue(float(time_budget or 0))
        self._steps_spin.setValue(int(steps or 0))

    def show_losses(self, losses) -> None:
        """Show ``losses`` in the curve (an opened project's history)."""
        self._loss_plot.set_losses(list(losses))

    def _on_error(self, error: BaseException) -> None:
        log.error("training failed", exc_info=error)
        show_error(f"Training failed: {user_sentence(error)}")

    def _on_finished(self) -> None:
        for event, callback in self._connections:
            event.disconnect(callback)
        self._connections = []
        self._push_timer.stop()
        self._trainer = self._worker = self._target = None
        self._pairs = []
        self._train_btn.setText("Train")
        self._train_btn.setEnabled(True)
        self._owner.set_busy(False)
