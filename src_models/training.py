"""The cancellable training loop: `Trainer.run` is a generator of `Progress` events.

Order of a step (as nnU-Net's ``train_step``): zero_grad(set_to_none) -> forward under
bf16 autocast (CUDA, CPUs with hardware bf16) -> loss -> backward -> clip -> optimizer step. The loop checks
a `threading.Event` before every step, so a stop request ends it after the current step
with the weights kept. Strokes added while it runs are taken up through `update_labels`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .augment import Augmenter
from .config import DEFAULT_TIME_BUDGET, TrainConfig, preset_config, preset_name, z_kernels_for, z_pooling_for
from .decisions import decide_after_training, model_answers, pseudo_labels
from .device import pick_device
from .distributed_training import ProcessGroup
from .errors import InputError
from .features import FilterFeatures
from .images import Normalization
from .losses import SegmentationLoss, pairwise_smoothness_loss, skeleton_recall_loss
from .objects import OBJECT_CLASS_NAMES, ObjectsPreparer
from .painted import PaintedImages, TrainingData
from .sampling import NothingPainted, PatchSampler
from .segmenter import UNetModel
from .task import Task

__all__ = ["Trainer", "Progress", "TrainResult", "fit", "make_trainer", "preset_for", "STROKE_STEPS"]

log = logging.getLogger(__name__)

#: ``TrainConfig.steps=None`` ends training from strokes (2D, not dense, less than half of the
#: painted slices painted) after this many steps, however long the time budget: more steps
#: memorise the strokes (bench/JOURNAL.md). A 2-core CPU does about 1,500 steps in 120 s.
STROKE_STEPS = 1500


def preset_for(preset: str, device_type: str, from_strokes: bool) -> str:
    """The preset of a new 2D model: ``"auto"`` is the small network when it learns from strokes
    on any device (the large one learnt less from them in 1,500 steps; bench/JOURNAL.md), else
    the large one on CUDA and the small one elsewhere."""
    return "small" if preset == "auto" and from_strokes else preset_name(preset, device_type)


@dataclass(frozen=True)
class Progress:
    """One training step done; ``step_limit`` and ``time_budget`` are what ends this training."""

    step: int
    loss: float
    elapsed: float
    eta: float | None
    step_limit: int | None
    time_budget: float | None
    lr: float
    notice: str | None = None  # something the user should know, e.g. a smaller batch after running out of memory

    @property
    def fraction(self) -> float:
        """Share of the work done, 0..1, by steps or by time, whichever is further."""
        parts = []
        if self.step_limit:
            parts.append(self.step / self.step_limit)
        if self.time_budget:
            parts.append(self.elapsed / self.time_budget)
        return min(1.0, max(parts)) if parts else 0.0


@dataclass
class TrainResult:
    """What `Trainer.run` returns: the model (weights kept also when stopped early).

    ``step_limit`` and ``time_budget`` are the limits this training ran under;
    ``default_length`` is True when it ended at the default step limit for strokes
    (`STROKE_STEPS`); ``message`` says why it stopped early, when something other than a
    stop request ended it (every stroke erased).
    """

    model: UNetModel
    steps: int
    stopped: bool
    elapsed: float
    losses: list[float] = field(default_factory=list)
    step_limit: int | None = None
    time_budget: float | None = None
    default_length: bool = False
    message: str | None = None


class Trainer:
    """Trains a `UNetModel` from images and the labels painted on them.

    Use `make_trainer`, which also handles objects mode; this class is the loop.

    Parameters
    ----------
    images : array-like or list of array-like
        2D, multichannel (with ``channel_axis``) or stacks; see `ImageView`.
    labels : array-like or list of array-like
        One per image, the image's shape less the channel axis; 0 = not painted
        (unless ``config.dense``), other values are class ids.
    config : TrainConfig
    model : UNetModel, optional
        Continue training (fine-tune) this model; new class ids extend its head.
    channel_axis : int, optional
        Channel axis of the images (``-1`` for RGB).
    class_names : dict, optional
        ``{id: name}`` stored in the model.
    pixel_weights : list of array-like, optional
        One per image: per-pixel loss weights used instead of the border weights.
    prepare : callable, optional
        ``prepare(i, labels) -> (targets, weights or None)`` (see `PaintedImages`); for labels
        sent with `update_labels` it runs in the training thread.
    process_group : ProcessGroup, optional
        Train as one of the processes of a torchrun launch (`distributed_training`): on the
        group's device, with `DistributedDataParallel`, patches from random stream ``rank``
        (``batch_size`` per process), stopping at the same step as the others.

    Raises
    ------
    InputError
        No painted pixel, a single class, labels of another shape, channel counts that differ.
    """

    def __init__(self, images, labels, *, config: TrainConfig | None = None, model: UNetModel | None = None,
                 channel_axis: int | None = None, class_names: dict | None = None,
                 pixel_weights: list | None = None, prepare=None, process_group: ProcessGroup | None = None):
        self.config = cfg = config or TrainConfig()
        self.process_group = process_group
        painted = PaintedImages(images, labels, channel_axis=channel_axis, pixel_weights=pixel_weights,
                                prepare=prepare)
        class_map = painted.class_map(dense=cfg.dense, names=class_names)
        self.device = process_group.device if process_group is not None else pick_device(cfg.device)
        #: the labels are strokes (a few per cent of the painted slices), not full masks
        self.from_strokes = not cfg.dense and painted.painted_share(class_map) < 0.5
        self.model = self._start_model(model, painted, class_map)
        #: the peak learning rate: ``fine_tune_lr`` when training goes on from a model
        self.lr = cfg.fine_tune_lr if model is not None and cfg.fine_tune_lr is not None else cfg.lr
        #: ``retain_weight``: the network training started from, frozen, for its answers on unpainted
        #: pixels (not when new classes grew its head: the new rows' answers mean nothing yet)
        self._teacher = None
        if model is not None and cfg.retain_weight > 0 and model.class_map.ids == self.model.class_map.ids:
            self._teacher = copy.deepcopy(self.model.net).eval().requires_grad_(False)
        self.model.precision = cfg.precision
        self.model.info.setdefault("steps", 0)
        self.class_map = self.model.class_map
        self.dims = self.model.config.dims
        if self.dims == 3:
            self._check_volumes(painted.views)
        seed = cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        # one random stream (patches, augmentation, drop-out) per pass of a step: seed + j for pass j
        # of `micro_batches`, counted on from rank * micro_batches in a distributed training
        first = (process_group.rank if process_group is not None else 0) * cfg.micro_batches
        self._streams = [_Stream(seed + first + j) for j in range(cfg.micro_batches)]
        self._rng = self._streams[0].rng
        use_border = cfg.border_weight if cfg.border_weight is not None else self.class_map.n_classes == 2
        # thin separators: a candidate for two classes in 2D; with separate_regions None, decided after
        # training by the shape of the predicted first class (`separation.separators_are_lines`)
        self._may_separate = self.class_map.n_classes == 2 and self.dims == 2 and bool(
            cfg.separate_regions if cfg.separate_regions is not None else use_border)
        if cfg.separate_regions is not None or not self._may_separate:
            self.model.separates_regions = self._may_separate
        self.sampler = PatchSampler(self.class_map.n_classes, self._patch_shape(), self.device, self._rng)
        self.data = TrainingData(painted, self.class_map, self.sampler,
                                 [self.model.normalization.stats(v) for v in painted.views], dims=self.dims,
                                 border=(cfg.border_w0, cfg.border_sigma) if use_border else None,
                                 pseudo_weight=cfg.pseudo_weight, normalization=self.model.normalization)
        self.views, self.labels = self.data.views, self.data.labels
        #: ``correction_share``: patches centred on the paint the model training started from got
        #: wrong; its labels are drawn when `run` starts (in the worker, not here)
        self._priority_share = 0.0
        self._reference_pending = model is not None and cfg.correction_share > 0 and self.dims == 2 \
            and model.class_map.ids == self.model.class_map.ids
        self._optimizer = None
        self._train_net: torch.nn.Module | None = None  # the network a step trains (in DDP when distributed)
        self._augmenter = Augmenter(elastic=cfg.elastic, intensity=True)
        self._loss = SegmentationLoss(cfg.dice_weight)
        #: steps after which training ends (None: only the time budget ends it)
        self.step_limit = cfg.steps if cfg.steps is not None else \
            (STROKE_STEPS if self.dims == 2 and self.from_strokes else None)
        #: seconds after which training ends (None: only the step limit ends it)
        self.time_budget = cfg.time_budget if cfg.time_budget is not None else \
            (None if self.step_limit is not None else DEFAULT_TIME_BUDGET)
        #: what the last `run` returned (None before it ends)
        self.result: TrainResult | None = None

    def _start_model(self, model: UNetModel | None, painted: PaintedImages, class_map) -> UNetModel:
        cfg = self.config
        in_channels = painted.n_channels
        if model is not None:
            if model.image_channels != in_channels:
                raise InputError(f"The model expects {model.image_channels} channel(s) but the images have "
                                 f"{in_channels}; start a new model for these images.")
            return model.with_classes(class_map).to(self.device)
        volume, preset = {}, cfg.preset
        if cfg.dims == 3:
            if cfg.filter_features:
                raise InputError("Filter features are for 2D networks; turn them off for a 3D one.",
                                 setting="filter_features")
            depth = preset_config(preset, in_channels, class_map.n_classes, self.device.type).depth
            volume = {"dims": 3, "z_pooling": z_pooling_for(cfg.z_ratio, depth),
                      "z_kernels": z_kernels_for(cfg.z_ratio, depth)}
        else:
            preset = preset_for(preset, self.device.type, self.from_strokes)
        normalization = Normalization()
        if cfg.filter_features:
            normalization = Normalization(features=FilterFeatures().fitted(_painted_crops(painted, normalization)))
        model = UNetModel.new(normalization.input_channels(in_channels), class_map, preset, self.device,
                              seed=cfg.seed, **volume)
        model.normalization = normalization
        return model

    def _patch_shape(self) -> tuple[int, ...]:
        cfg, net = self.config, self.model.config
        side = int(math.ceil(cfg.patch_size / net.size_multiple) * net.size_multiple)
        if self.dims == 2:
            return (side, side)
        return (int(math.ceil(cfg.patch_depth / net.z_multiple) * net.z_multiple), side, side)

    def _check_volumes(self, views) -> None:
        for n, view in enumerate(views, start=1):
            if len(view.stack_shape) != 1:
                raise InputError(f"A 3D model trains on volumes (Z, Y, X); image {n} has shape {view.shape} "
                                 "without channels. Open it as one stack, or train a 2D model.")
        if self.config.pseudo_labels or self.config.smoothness_weight:
            raise InputError("Pseudo-labels and the smoothness loss are for 2D models; turn them off for 3D.")

    def update_labels(self, i: int, labels) -> None:
        """Replace the labels of image ``i``; the running loop uses them from its next step.

        Thread-safe. Ids the model does not know yet are ignored until the next `Trainer`.
        With a ``prepare`` function, ``labels`` are what the user painted; they are prepared
        (targets and pixel weights) in the training thread when the loop takes them up.
        """
        self.data.update_labels(i, labels)

    # -- loop -----------------------------------------------------------------------------------
    def _progress_fraction(self, step: int, elapsed: float) -> float:
        frac = 0.0
        if self.step_limit:
            frac = max(frac, step / self.step_limit)
        if self.time_budget:
            frac = max(frac, elapsed / self.time_budget)
        return frac

    def _lr(self, step: int, elapsed: float) -> float:
        frac = self._progress_fraction(step, elapsed)
        warmup = min(1.0, (step + 1) / 10)
        return self.lr * warmup * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    def run(self, cancel: threading.Event | None = None):
        """Train; yields a `Progress` after every step and returns a `TrainResult`.

        Stops when `step_limit` (``config.steps``, or `STROKE_STEPS` when that is None and the
        model learns from strokes in 2D) or `time_budget` is reached, or at the first
        step boundary after ``cancel`` is set (``stopped=True``, weights kept), or when every
        stroke was erased (``stopped=True`` with a ``message``). The result is also kept as
        `result`.

        Raises
        ------
        InputError
            The loss diverged, the device ran out of memory with one patch per step, or the
            time budget ended before the first step.
        """
        self.result = None
        cfg = self.config
        if self._reference_pending:  # the starting model's labels, before its weights move
            self.data.set_reference(model_answers(self.model, self.data))
            self._priority_share, self._reference_pending = cfg.correction_share, False
        net = self.model.net
        channels_last = cfg.channels_last if cfg.channels_last is not None else self.model.channels_last
        if channels_last:
            net.to(memory_format=self.model.memory_format)
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=cfg.weight_decay)
        opt = self._optimizer
        autocast = self.model._autocast()
        net.train()
        ranks = self.process_group
        self._train_net = ranks.wrap(net) if ranks is not None else net
        losses: list[float] = []
        average = WeightAverage(net, cfg.ema_decay) if cfg.ema_decay else None
        pseudo_points = [0.5, 0.75] if cfg.pseudo_labels else []
        stopped = False
        step = 0
        batch = cfg.batch_size  # halved if the device runs out of memory
        notice = message = None
        start = time.perf_counter()
        try:
            while True:
                elapsed = time.perf_counter() - start
                cancelled = cancel is not None and cancel.is_set()
                if ranks is not None:  # every process stops at the same step, on one clock
                    cancelled, elapsed = ranks.agree(cancelled, elapsed)
                if cancelled:
                    stopped = True
                    break
                if (self.step_limit is not None and step >= self.step_limit) or \
                        (self.time_budget is not None and elapsed >= self.time_budget):
                    break
                self.data.apply_pending()
                if pseudo_points and self._progress_fraction(step, elapsed) >= pseudo_points[0]:
                    pseudo_points.pop(0)
                    self.data.set_pseudo(pseudo_labels(self.model, self.data, cfg.pseudo_threshold))
                    log.info("Pseudo-labels refreshed on %d slice(s).", len(self.data.pseudo))
                lr = self._lr(step, elapsed)
                for group in opt.param_groups:
                    group["lr"] = lr
                try:
                    loss = self._step(batch, autocast, channels_last)
                except NothingPainted:
                    stopped = True
                    message = f"Every painted pixel was erased: training stopped after {step} steps; the model is kept."
                    log.warning(message)
                    break
                except torch.OutOfMemoryError:
                    opt.zero_grad(set_to_none=True)
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    if ranks is not None:  # the others wait for this process's gradients: no retry
                        raise InputError(
                            f"The {self.device.type.upper()} of process {ranks.rank} ran out of memory with "
                            f"{batch} patch(es) per process; use a smaller batch size or patch size.",
                            setting="batch_size") from None
                    if batch == 1:
                        shape = self.sampler.patch_shape
                        patch = f"{shape[-1]}²" if len(shape) == 2 else " x ".join(map(str, shape))
                        raise InputError(
                            f"The {self.device.type.upper()} ran out of memory even with one {patch} patch "
                            "per step; train on the CPU or with a smaller patch size.", setting="device") from None
                    batch //= 2
                    notice = f"Out of {self.device.type.upper()} memory while training: going on with {batch} " \
                             "patch(es) per step."
                    log.warning(notice)
                    continue
                if ranks is not None:
                    loss = ranks.mean(loss)
                if not math.isfinite(loss):
                    raise InputError(f"Training diverged at step {step + 1} (the loss is {loss}); train again in fp32 "
                                     "precision or with a lower learning rate.", setting="precision")
                step += 1
                losses.append(loss)
                if average is not None:
                    average.update(net)
                elapsed = time.perf_counter() - start
                yield Progress(step, loss, elapsed, self._eta(step, elapsed), self.step_limit, self.time_budget, lr,
                               notice)
                notice = None
        finally:
            net.eval()
            self._train_net = net
            self.model.info["steps"] = int(self.model.info.get("steps", 0)) + step
            self.model.info["train_config"] = cfg.to_dict()
            self.model.info["loss_history"] = [*self.model.info.get("loss_history", []), *losses]
            if ranks is not None:
                self.model.info["processes"] = ranks.world_size
        if not step and not stopped:
            raise InputError(f"The time budget ({self.time_budget:g} s) ended before the first training step; "
                             "give a longer time budget.", setting="time_budget")
        if average is not None and step:
            average.copy_to(net)
        if ranks is not None and step:
            ranks.average_buffers(net)
        if step:
            decide_after_training(self.model, self.data, cfg, self._may_separate)
        self.result = TrainResult(
            self.model, step, stopped, time.perf_counter() - start, losses, step_limit=self.step_limit,
            time_budget=self.time_budget, message=message,
            default_length=cfg.steps is None and self.step_limit is not None and step == self.step_limit)
        return self.result

    def _step(self, batch: int, autocast, channels_last: bool) -> float:
        """One optimisation step on ``batch`` fresh patches per pass (``micro_batches`` passes,
        gradients summed); returns the mean loss."""
        cfg, net, opt = self.config, self._train_net, self._optimizer
        opt.zero_grad(set_to_none=True)
        passes, total = len(self._streams), 0.0
        for j, stream in enumerate(self._streams):
            x, y, w = self.sampler.draw(batch, rng=stream.rng, priority_share=self._priority_share)
            if cfg.augment:
                x, y, w = self._augmenter(x, y, w, generator=stream.generator)
            if channels_last:
                x = x.contiguous(memory_format=self.model.memory_format)
            # DistributedDataParallel averages the gradients over the processes in the last pass's backward
            sync = j == passes - 1 or not hasattr(net, "no_sync")
            with contextlib.nullcontext() if sync else net.no_sync():
                with autocast, self._own_random_numbers(stream.dropout):
                    logits = net(x)
                loss = self._loss(logits.float(), y, w)
                if self._teacher is not None:
                    loss = loss + cfg.retain_weight * self._retention(x, logits, y, autocast)
                if cfg.smoothness_weight:
                    loss = loss + cfg.smoothness_weight * pairwise_smoothness_loss(logits, x, cfg.smoothness_sigma)
                if cfg.skeleton_weight:
                    loss = loss + cfg.skeleton_weight * skeleton_recall_loss(logits, y)
                (loss / passes if passes > 1 else loss).backward()
            total += float(loss.detach())
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        return total / passes

    def _retention(self, x, logits, y, autocast) -> torch.Tensor:
        """Cross-entropy of the network's answers on the unpainted pixels of a patch against the
        answers of the network training started from (soft targets)."""
        with torch.no_grad(), autocast:
            soft = torch.softmax(self._teacher(x).float(), 1)
        unpainted = (y < 0).float()
        ce = -(soft * torch.log_softmax(logits.float(), 1)).sum(1)
        return (ce * unpainted).sum() / unpainted.sum().clamp(min=1.0)

    @contextlib.contextmanager
    def _own_random_numbers(self, states: dict):
        """Run the forward pass on a stream's random numbers (drop-out draws from torch's
        global generators), so that a seeded training repeats exactly and leaves the caller's
        random state alone (CPU and CUDA; on MPS drop-out keeps drawing from MPS's generator)."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(states["cpu"])
            if cuda and states["cuda"] is None:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(states["seed"])
            elif cuda:
                torch.cuda.set_rng_state(states["cuda"], self.device)
            try:
                yield
            finally:
                states["cpu"] = torch.get_rng_state()
                if cuda:
                    states["cuda"] = torch.cuda.get_rng_state(self.device)

    def _eta(self, step: int, elapsed: float) -> float | None:
        left = []
        if self.step_limit:
            left.append((self.step_limit - step) * elapsed / step)
        if self.time_budget:
            left.append(self.time_budget - elapsed)
        return max(0.0, min(left)) if left else None


class _Stream:
    """The random numbers of one pass of a step: patch positions, augmentation, drop-out."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        # drop-out's states (the CUDA one is seeded at the first step)
        self.dropout = {"seed": seed, "cpu": torch.Generator(device="cpu").manual_seed(seed).get_state(),
                        "cuda": None}


def _painted_crops(painted: PaintedImages, normalization: Normalization, limit: int = 4,
                   side: int = 512) -> list[np.ndarray]:
    """Scaled central crops (at most ``side`` pixels) of up to ``limit`` painted planes: what
    filter features are fitted on."""
    crops = []
    for view, labels in zip(painted.views, painted.labels):
        stats = normalization.stats(view)
        flat = labels.reshape(-1, view.height, view.width)
        for s in np.flatnonzero(flat.reshape(len(flat), -1).any(axis=1))[:limit - len(crops)]:
            y0, x0 = max(0, (view.height - side) // 2), max(0, (view.width - side) // 2)
            crops.append(view.read_normalized(int(s), stats, slice(y0, y0 + side), slice(x0, x0 + side)))
        if len(crops) >= limit:
            break
    return crops


class WeightAverage:
    """An exponential moving average of a network's weights and floating-point buffers
    (batch-norm statistics); integer buffers follow the network. After ``n`` updates the
    decay is ``min(decay, (1 + n) / (10 + n))``, so that the first steps' weights do not linger."""

    def __init__(self, net: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in net.state_dict().items():
            mine = self.state[key]
            if mine.is_floating_point():
                mine.lerp_(value.detach().to(mine.dtype), 1.0 - d)
            else:
                mine.copy_(value)

    @torch.no_grad()
    def copy_to(self, net: torch.nn.Module) -> None:
        net.load_state_dict(self.state)


def make_trainer(images, labels, *, task: Task | None = None, config: TrainConfig | None = None,
                 model: UNetModel | None = None, channel_axis: int | None = None, class_names: dict | None = None,
                 defer_prepare: bool = False, process_group: ProcessGroup | None = None) -> Trainer:
    """The one way to make a `Trainer` for a task from images, painted labels and a config.

    Parameters
    ----------
    images, labels : array-like or lists of them
        As for `Trainer`. In objects mode 1 is background and every other id one object
        (``config.dense``: 0 is background, every id > 0 one object).
    task : Task, optional
        Classes or objects, 2D or 3D; default: the ``model``'s task, else classes in
        ``config.dims``.
    config : TrainConfig, optional
    model : UNetModel, optional
        Go on training this model; its task must be ``task``.
    channel_axis, class_names
        As for `Trainer` (objects mode names its own classes).
    defer_prepare : bool
        Objects mode: build the trainer from the bare strokes and extend them
        (`objects.fill_between_strokes`) in the training thread before the first step, so a
        GUI thread never waits for it.
    process_group : ProcessGroup, optional
        Train as one process of a torchrun launch (see `Trainer`).

    Raises
    ------
    InputError
        Everything `Trainer` refuses, and a ``model`` trained for another task.
    """
    config = config or TrainConfig()
    if task is None:
        task = model.task if model is not None else Task(dims=config.dims)
        if config.dims != task.dims:
            raise InputError(f"The model is {task.dims}D but the config asks for a {config.dims}D network; start a "
                             "new model, or train with the model's own settings.", setting="model")
    if model is not None and (why := model.task.mismatch(task)):
        raise InputError(why, setting="model")
    config = dataclasses.replace(config, dims=task.dims)
    if not task.objects:
        trainer = Trainer(images, labels, config=config, model=model, channel_axis=channel_axis,
                          class_names=class_names, process_group=process_group)
        task.store(trainer.model.info)
        return trainer
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    labels = list(labels) if isinstance(labels, (list, tuple)) else [labels]
    prepare = ObjectsPreparer(images, channel_axis, config, dense=config.dense, fill=not defer_prepare)
    trainer = Trainer(images, labels, config=dataclasses.replace(config, dense=False), model=model,
                      channel_axis=channel_axis, class_names=OBJECT_CLASS_NAMES, prepare=prepare,
                      process_group=process_group)
    task.store(trainer.model.info)
    trainer.model.info.update(dense=prepare.dense, boundary_width=prepare.boundary_width)
    if not prepare.fill:
        prepare.fill = True
        if prepare.fills:
            for i, painted in enumerate(labels):
                trainer.update_labels(i, painted)  # filled by the training thread before step 1
    return trainer


def fit(images, labels, *, cancel: threading.Event | None = None, **kwargs) -> TrainResult:
    """Train to the end (no progress events); the arguments are `make_trainer`'s."""
    gen = make_trainer(images, labels, **kwargs).run(cancel)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value
