"""Engine work that runs off the main thread: training with live previews, tiled prediction.

The generator functions here touch no Qt object and no layer; they read arrays and a
`View` and yield plain records that the widget turns into layers. `start` runs one of
them in a napari thread worker (or, for tests, synchronously in the calling thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from src_models import Cancelled

from ._layers import View

__all__ = [
    "PredictJob",
    "Preview",
    "PreviewTarget",
    "ProgressBox",
    "TrainUpdate",
    "WorkerError",
    "predict_jobs",
    "predict_view",
    "start",
    "train_with_previews",
]

log = logging.getLogger(__name__)


class WorkerError(Exception):
    """An error of any type raised by the engine in a worker, as the widget receives it.

    napari's thread worker takes a ``RuntimeError`` for a deleted worker and then emits neither
    ``errored`` nor ``finished``; wrapping every error keeps the widget informed and lets it
    come back. ``str()`` is the original message; ``__cause__`` the original error.
    """


@dataclass(frozen=True)
class PreviewTarget:
    """What to preview: the field of view ``view`` of training image ``index`` (its pixels and
    channel axis). Made on the main thread from what the user looks at, read by the worker."""

    index: int
    image: Any
    channel_axis: int | None
    view: View


@dataclass(frozen=True)
class Preview:
    """Predicted labels of ``target.view`` (rows x cols of one plane) after ``step`` steps."""

    target: PreviewTarget
    labels: np.ndarray
    step: int
    seconds: float

    @property
    def view(self) -> View:
        return self.target.view


@dataclass(frozen=True)
class TrainUpdate:
    """One yield of the training worker: the step's progress, and a preview when one was due."""

    progress: Any | None
    preview: Preview | None = None


def predict_view(model, target: PreviewTarget, step: int, tile) -> Preview:
    """Predict the field of view that ``target`` names (the plane's normalisation, real context)."""
    start_time = time.perf_counter()
    view = target.view
    region = (view.rows.start, view.rows.stop, view.cols.start, view.cols.stop)
    labels = model.segment(target.image, channel_axis=target.channel_axis, plane=view.index or None, tile=tile,
                           region=region).labels
    return Preview(target=target, labels=labels, step=step, seconds=time.perf_counter() - start_time)


def train_with_previews(
    trainer,
    cancel: threading.Event,
    get_target: Callable[[], PreviewTarget],
    tile,
    interval: float = 3.0,
) -> Iterator[TrainUpdate]:
    """Run ``trainer.run(cancel)``, yielding once per step, with a preview now and then.

    ``get_target()`` names the image and field of view to preview (what the user looks at
    now). The first preview follows the first step; later ones come every ``interval``
    seconds, or less often when a preview is slow, so previews never take more than about a
    fifth of the time. A last preview of the final model is yielded before returning.

    Returns
    -------
    TrainResult
        The engine's result (``StopIteration.value`` of ``trainer.run``).
    """
    steps = trainer.run(cancel)
    next_preview = 0.0
    while True:
        try:
            progress = next(steps)
        except StopIteration as stop:
            result = stop.value
            break
        preview = None
        if time.monotonic() >= next_preview:
            preview = predict_view(trainer.model, get_target(), progress.step, tile)
            next_preview = time.monotonic() + max(interval, 4 * preview.seconds)
        yield TrainUpdate(progress=progress, preview=preview)
    yield TrainUpdate(progress=None, preview=predict_view(result.model, get_target(), result.steps, tile))
    return result


class ProgressBox:
    """Latest ``(done, total)`` of the running prediction and the engine's notices (e.g. GPU
    out of memory, going on with smaller tiles), written by the worker, read by a timer."""

    def __init__(self, n_jobs: int = 1):
        self._lock = threading.Lock()
        self._n_jobs = max(1, n_jobs)
        self._job = 0
        self._done, self._total = 0, 1
        self._notices: list[str] = []

    def notice(self, message: str) -> None:
        with self._lock:
            self._notices.append(message)

    def take_notices(self) -> list[str]:
        with self._lock:
            notices, self._notices = self._notices, []
        return notices

    def next_job(self, job: int) -> None:
        with self._lock:
            self._job, self._done, self._total = job, 0, 1

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            self._done, self._total = done, max(1, total)

    def fraction(self) -> float:
        with self._lock:
            return (self._job + self._done / self._total) / self._n_jobs


@dataclass(frozen=True)
class PredictJob:
    """One prediction: ``image`` of layer ``source`` (plane ``index`` of it, or all of it) goes
    to layer ``name`` of ``full_shape``; a whole big image is streamed into ``stream_to``
    (`UNetModel.segment` decides), so neither it nor its labels are ever whole in memory."""

    name: str
    source: str
    image: Any
    channel_axis: int | None
    full_shape: tuple[int, ...]
    index: tuple[int, ...] = ()
    stream_to: str | None = None


def predict_jobs(
    model, jobs: Sequence[PredictJob], cancel: threading.Event, box: ProgressBox, tile
) -> Iterator[tuple[PredictJob, Any]]:
    """Segment each job tile by tile; yield ``(job, Segmentation)`` after each, stop early on ``cancel``."""
    for number, job in enumerate(jobs):
        box.next_job(number)
        try:
            result = model.segment(job.image, channel_axis=job.channel_axis, plane=job.index or None,
                                   stream_to=job.stream_to, overwrite=True, tile=tile, progress=box, cancel=cancel,
                                   notice=box.notice)
        except Cancelled:
            return
        yield job, result


def _reporting_errors(generator_function: Callable[..., Iterator], *args):
    """Run ``generator_function(*args)``, re-raising any error as a `WorkerError`."""
    try:
        return (yield from generator_function(*args))
    except Exception as error:  # noqa: BLE001 - every error must reach the widget
        log.debug("worker error", exc_info=True)
        raise WorkerError(str(error) or type(error).__name__) from error


def start(
    generator_function: Callable[..., Iterator],
    *args,
    threaded: bool,
    yielded: Callable[[Any], None],
    returned: Callable[[Any], None],
    errored: Callable[[BaseException], None],
    finished: Callable[[], None],
):
    """Run ``generator_function(*args)`` and feed its yields and return value to the callbacks.

    With ``threaded`` it runs in a napari `thread_worker` (callbacks arrive on the main
    thread through Qt signals) and the worker is returned; otherwise it runs to the end
    here and None is returned. Errors of any type go to ``errored`` as a `WorkerError` either
    way, never re-raised, and ``finished`` always follows.
    """
    if threaded:
        from napari.qt.threading import thread_worker

        worker = thread_worker(_reporting_errors, start_thread=False, ignore_errors=True)(generator_function, *args)
        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(finished)
        worker.start()
        return worker
    try:
        steps = _reporting_errors(generator_function, *args)
        while True:
            try:
                item = next(steps)
            except StopIteration as stop:
                returned(stop.value)
                break
            yielded(item)
    except WorkerError as error:
        errored(error)
    finally:
        finished()
    return None
