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
from src_models.io import create_labels_tiff
from src_models.objects import predict_objects

from ._layers import View

__all__ = [
    "PredictJob",
    "Preview",
    "ProgressBox",
    "TrainUpdate",
    "predict_jobs",
    "predict_plane_3d",
    "predict_view",
    "segment",
    "start",
    "train_with_previews",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preview:
    """Predicted labels of ``view`` (rows x cols of one plane) after ``step`` steps."""

    view: View
    labels: np.ndarray
    step: int
    seconds: float


@dataclass(frozen=True)
class TrainUpdate:
    """One yield of the training worker: the step's progress, and a preview when one was due."""

    progress: Any | None
    preview: Preview | None = None


def segment(model, image, **options) -> np.ndarray:
    """Labels of ``image``: one id per object for a model trained in objects mode, else class ids."""
    if model.info.get("mode") == "objects":
        return predict_objects(model, image, **options)
    return model.predict(image, **options)


def predict_view(model, image: np.ndarray, channel_axis: int | None, view: View, step: int, tile) -> Preview:
    """Predict the field of view that ``view`` names (the plane's normalisation, real context)."""
    start_time = time.perf_counter()
    region = (view.rows.start, view.rows.stop, view.cols.start, view.cols.stop)
    axis = None if channel_axis is None else -1
    if model.config.dims == 3 and len(view.index) == 1:  # a 3D network needs the planes around this one
        labels = predict_plane_3d(model, image, view.index[0], channel_axis=axis, tile=tile, region=region)
    else:
        plane = image[view.index] if view.index else image
        labels = segment(model, plane, channel_axis=axis, tile=tile, region=region)
    return Preview(view=view, labels=labels, step=step, seconds=time.perf_counter() - start_time)


def predict_plane_3d(model, stack, z: int, *, context: int = 8, **options) -> np.ndarray:
    """Labels of plane ``z`` of ``stack`` from a 3D model, predicting only a slab of
    ``2 * context + 1`` planes around it."""
    z0, z1 = max(0, z - context), min(len(stack), z + context + 1)
    return model.predict(stack[z0:z1], **options)[z - z0]


def train_with_previews(
    trainer,
    cancel: threading.Event,
    image: np.ndarray,
    channel_axis: int | None,
    get_view: Callable[[], View],
    tile,
    interval: float = 3.0,
) -> Iterator[TrainUpdate]:
    """Run ``trainer.run(cancel)``, yielding once per step, with a preview now and then.

    The first preview follows the first step; later ones come every ``interval`` seconds,
    or less often when a preview is slow, so previews never take more than about a fifth
    of the time. A last preview of the final model is yielded before returning.

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
            preview = predict_view(trainer.model, image, channel_axis, get_view(), progress.step, tile)
            next_preview = time.monotonic() + max(interval, 4 * preview.seconds)
        yield TrainUpdate(progress=progress, preview=preview)
    yield TrainUpdate(
        progress=None,
        preview=predict_view(result.model, image, channel_axis, get_view(), result.steps, tile),
    )
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
    """One prediction: ``image`` (the part to predict) of layer ``source`` goes to layer
    ``name`` (of ``full_shape``) at stack position ``index``.

    With ``stream_to`` (a path) ``image`` may be lazy (dask, zarr, memory map): it is read
    tile by tile and the labels are written band by band into an uncompressed TIFF there
    (``metadata`` in its tags), which is yielded as a memory map, so neither the image nor
    the labels are ever whole in memory.
    """

    name: str
    source: str
    image: Any
    channel_axis: int | None
    full_shape: tuple[int, ...]
    index: tuple[int, ...] = ()
    stream_to: str | None = None
    metadata: dict | None = None
    slab: Any = None  # a 3D model's current slice: the whole (lazy) stack, for the planes around it


def predict_jobs(
    model, jobs: Sequence[PredictJob], cancel: threading.Event, box: ProgressBox, tile
) -> Iterator[tuple[PredictJob, np.ndarray]]:
    """Predict each job tile by tile; yield ``(job, labels)`` after each, stop early on ``cancel``."""
    for number, job in enumerate(jobs):
        box.next_job(number)
        options = dict(channel_axis=job.channel_axis, tile=tile, progress=box, cancel=cancel, notice=box.notice)
        try:
            if job.slab is not None:  # a 3D model's current slice
                labels = predict_plane_3d(model, job.slab, job.index[0], **options)
            elif job.stream_to:
                labels = create_labels_tiff(job.stream_to, job.full_shape, model.class_map.dtype, overwrite=True,
                                            metadata=job.metadata)
                model.predict(job.image, out=labels, **options)
                labels.flush()
            else:
                labels = segment(model, job.image, **options)
        except Cancelled:
            return
        yield job, labels


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
    here and None is returned. Errors go to ``errored`` either way, never re-raised.
    """
    if threaded:
        from napari.qt.threading import thread_worker

        worker = thread_worker(generator_function, start_thread=False, ignore_errors=True)(*args)
        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(finished)
        worker.start()
        return worker
    try:
        steps = generator_function(*args)
        while True:
            try:
                item = next(steps)
            except StopIteration as stop:
                returned(stop.value)
                break
            yielded(item)
    except Exception as error:  # noqa: BLE001 - handed to the caller's error callback
        log.debug("worker error", exc_info=True)
        errored(error)
    finally:
        finished()
    return None
