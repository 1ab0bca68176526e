"""Dock widget that segments a folder of image files into mask files, without opening them as layers.

It uses the U-Net panel's current model (of the same viewer) or a model file, runs the
engine's `segment_files` in a thread worker, and ends with a summary notification; masks go
to ``<output folder>/<image stem>_mask.tif``, the same files the command line writes.
"""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer

from src_models import MIN_TILE_SIZE, BatchReport, InputError, UNetModel, list_images, segment_files

from ._messages import user_sentence
from ._panels import panel_for
from ._workers import start

__all__ = ["FolderWidget", "MODEL_CHOICES", "summary"]

log = logging.getLogger(__name__)

PANEL_MODEL = "the U-Net panel's current model"
FILE_MODEL = "a model file"
MODEL_CHOICES = (PANEL_MODEL, FILE_MODEL)
MAX_TILE_SIZE = 8192
_SHOWN_REASONS = 3


class _Progress:
    """Latest ``(files_done, n_files, tiles_done, tiles_total)`` of the batch, written by the worker,
    read by a timer on the main thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._state = (0, 1, 0, 1)

    def __call__(self, files_done: int, n_files: int, tiles_done: int, tiles_total: int) -> None:
        with self._lock:
            self._state = (files_done, max(1, n_files), tiles_done, max(1, tiles_total))

    def fraction(self) -> float:
        with self._lock:
            files_done, n_files, tiles_done, tiles_total = self._state
        return min(1.0, (files_done + tiles_done / tiles_total) / n_files)


def _segment_folder(model, model_file, paths, out_dir, tile_size, tta, overwrite, cancel, progress):
    """Worker body: load the model file when there is no model, then `segment_files`; returns its report."""
    if model is None:
        model = UNetModel.load(model_file)
    changes = {"tile_size": tile_size} if tile_size else {}
    tile = model.default_tile(tta=tta, **changes)
    return segment_files(model, paths, out_dir, tile=tile, overwrite=overwrite, progress=progress, cancel=cancel)
    yield  # a generator, so that `start` runs it like the other workers


def summary(report: BatchReport) -> str:
    """The report in the panel's words: ``"n written, n skipped: reasons…"``."""
    exists = [s for s in report.skipped if s.setting == "overwrite"]
    others = [s for s in report.skipped if s.setting != "overwrite"]
    reasons = []
    if exists:
        reasons.append(f"{len(exists)} mask(s) exist; tick Overwrite to replace them")
    reasons += [f"{s.path.name}: {s.reason}" for s in others[:_SHOWN_REASONS]]
    if len(others) > _SHOWN_REASONS:
        reasons.append(f"and {len(others) - _SHOWN_REASONS} more")
    text = f"{len(report.written)} written, {len(report.skipped)} skipped"
    text += f": {'; '.join(reasons)}" if reasons else "."
    if report.cancelled:
        text = f"Stopped after {len(report.written) + len(report.skipped)} of {report.total} images: {text}"
    return text


class FolderWidget(Container):
    """Segment every image of a folder (or a file pattern) into mask files; no layer is added.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose U-Net panel lends its model.
    threaded : bool
        Run in a napari thread worker (the default); False runs to the end in the calling
        thread, for tests and scripts.

    Attributes
    ----------
    last_report : BatchReport or None
        What the last run did.
    """

    def __init__(self, napari_viewer, *, threaded: bool = True):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.threaded = threaded
        self.last_report: BatchReport | None = None
        self._worker = None
        self._cancel = threading.Event()
        self._box = _Progress()
        self._input = FileEdit(mode="d", nullable=True, label="Images folder")
        self._pattern = LineEdit(value="", label="Pattern",
                                 tooltip="A file pattern inside the folder, e.g. *.tif or **/*.png; "
                                         "empty: every image (TIFF, PNG, JPEG) that is not a mask.")
        self._output = FileEdit(mode="d", nullable=True, label="Output folder",
                                tooltip="Masks are written here as <image name>_mask.tif.")
        self._model_choice = ComboBox(choices=MODEL_CHOICES, value=PANEL_MODEL, label="Model")
        self._model_file = FileEdit(mode="r", filter="*.safetensors", nullable=True, label="Model file",
                                    tooltip="Used when chosen, or when the U-Net panel has no model.")
        self._tile = SpinBox(value=0, min=0, max=MAX_TILE_SIZE, step=32, label="Tile size",
                             tooltip=f"Tile side in pixels, at least {MIN_TILE_SIZE}; 0: chosen for the device.")
        self._tta = CheckBox(value=False, text="Average 8 orientations (TTA; slower, smoother)")
        self._overwrite = CheckBox(value=False, text="Overwrite existing masks")
        self._progress = ProgressBar(value=0, min=0, max=1000, label="Progress")
        self._status = Label(value="")
        self._run = PushButton(text="Run")
        self._stop = PushButton(text="Stop", enabled=False)
        self.extend([self._input, self._pattern, self._output, self._model_choice, self._model_file, self._tile,
                     self._tta, self._overwrite, self._progress, self._status, self._run, self._stop])
        self._run.changed.connect(self.run)
        self._stop.changed.connect(self.stop)
        self._timer = QTimer(self.native)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)

    @property
    def worker(self):
        """The running thread worker, or None."""
        return self._worker

    # -- what to do -----------------------------------------------------------------------
    def _model(self) -> tuple[UNetModel | None, Path | None]:
        """``(model, None)`` from the U-Net panel, or ``(None, model file)``; `InputError` when neither."""
        if self._model_choice.value == PANEL_MODEL:
            panel = panel_for(self.viewer)
            if panel is not None and panel.model is not None:
                if panel.busy:
                    raise InputError("The U-Net panel is training or predicting; wait for it to finish, "
                                     "or choose a model file.")
                return copy.deepcopy(panel.model), None  # the panel may train on while the folder is segmented
        path = self._model_file.value
        if path is not None and str(path).strip():
            return None, Path(path)
        if self._model_choice.value == PANEL_MODEL:
            raise InputError("There is no model: train one in the U-Net panel, or choose a model file.")
        raise InputError("Choose a model file (.safetensors) under Model file.")

    def _images(self) -> list[Path]:
        folder = self._input.value
        if folder is None or not str(folder).strip():
            raise InputError("Choose the folder of images to segment under Images folder.")
        pattern = self._pattern.value.strip()
        return list_images(Path(folder) / pattern if pattern else folder)

    def _out_dir(self) -> Path:
        out = self._output.value
        if out is None or not str(out).strip():
            raise InputError("Choose the folder the masks go to under Output folder.")
        return Path(out)

    def _tile_size(self) -> int | None:
        size = int(self._tile.value)
        if 0 < size < MIN_TILE_SIZE:
            raise InputError(f"Tile size must be 0 (by device) or at least {MIN_TILE_SIZE} pixels.")
        return size or None

    # -- running --------------------------------------------------------------------------
    def run(self) -> bool:
        """Start segmenting the folder; False (and one sentence shown) when something is missing."""
        if self._worker is not None:
            return False
        try:
            paths = self._images()
            out_dir = self._out_dir()
            tile_size = self._tile_size()
            model, model_file = self._model()
        except InputError as error:
            show_warning(str(error))
            return False
        self._cancel = threading.Event()
        self._box = _Progress()
        self._progress.value = 0
        self._status.value = f"Segmenting {len(paths)} image(s)…"
        self._set_running(True)
        self._timer.start()
        self._worker = start(
            _segment_folder, model, model_file, paths, out_dir, tile_size, bool(self._tta.value),
            bool(self._overwrite.value), self._cancel, self._box,
            threaded=self.threaded, yielded=lambda _: None, returned=self._on_returned, errored=self._on_error,
            finished=self._on_finished)
        return True

    def stop(self) -> None:
        """Stop after the current tile batch; the masks already written stay."""
        self._cancel.set()

    def _set_running(self, running: bool) -> None:
        for widget in self:
            widget.enabled = not running
        self._stop.enabled = running
        self._progress.enabled = True
        self._status.enabled = True

    def _poll(self) -> None:
        self._progress.value = int(1000 * self._box.fraction())

    def _on_returned(self, report: BatchReport) -> None:
        self.last_report = report
        text = summary(report)
        self._status.value = text
        (show_warning if report.skipped else show_info)(text)

    def _on_error(self, error: BaseException) -> None:
        log.error("segmenting the folder failed", exc_info=error)
        self._status.value = "Failed."
        show_error(f"Segmenting the folder failed: {user_sentence(error)}")

    def _on_finished(self) -> None:
        self._timer.stop()
        self._poll()
        self._worker = None
        self._set_running(False)
