"""The cancellable training loop: `Trainer.run` is a generator of `Progress` events.

Order of a step (as nnU-Net's ``train_step``): zero_grad(set_to_none) -> forward under
bf16 autocast (CUDA, CPUs with hardware bf16) -> loss -> backward -> clip -> optimizer step. The loop checks
a `threading.Event` before every step, so a stop request ends it after the current step
with the weights kept. Strokes added while it runs are taken up through `update_labels`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from .augment import Augmenter
from .calibration import estimate_class_prior
from .classmap import ClassMap
from .config import TrainConfig, preset_config, preset_name, z_kernels_for, z_pooling_for
from .device import pick_device
from .errors import InputError
from .images import ImageView
from .losses import SegmentationLoss, border_weight_map, pairwise_smoothness_loss
from .sampling import PatchSampler
from .segmenter import UNetModel
from .separation import separators_are_lines

__all__ = ["Trainer", "Progress", "TrainResult", "fit", "preset_for"]

log = logging.getLogger(__name__)

#: ``TrainConfig.class_prior=None`` estimates class frequencies for models of at most this many
#: classes. With more, the estimate went wrong: on CamVid (11 classes) it put Building at 5 %
#: (truth 22 %) and cut held-out mIoU from 0.167 to 0.149 (400 steps, dense labels, 3 frames).
MAX_PRIOR_CLASSES = 3

#: ``TrainConfig.steps=None`` ends training from strokes (2D, not dense, less than half of the
#: painted slices painted) after this many steps, however long the time budget: more steps
#: memorise the strokes. ISBI held out, 3 slices of strokes,
#: F1 / Rand error after 300, 1,500 and 3,000 steps: 0.674 / 0.196, 0.763 / 0.233, 0.747 / 0.346
#: (bench/README.md). A 2-core CPU does about 1,500 steps in 120 s.
STROKE_STEPS = 1500


def preset_for(preset: str, device_type: str, from_strokes: bool) -> str:
    """The preset of a new 2D model: ``"auto"`` is the small network when it learns from strokes
    on any device (ISBI, 3 slices of strokes, the default 1,500 steps: the large one scored
    membrane F1 0.719 held out against the small one's 0.763, 0.709 against 0.744 with other
    strokes, and 0.645 against 0.781 on the tuning slices; bench/README.md), else the large one
    on CUDA and the small one elsewhere."""
    return "small" if preset == "auto" and from_strokes else preset_name(preset, device_type)


@dataclass(frozen=True)
class Progress:
    """One training step done."""

    step: int
    loss: float
    elapsed: float
    eta: float | None
    total_steps: int | None
    time_budget: float | None
    lr: float
    notice: str | None = None  # something the user should know, e.g. a smaller batch after running out of memory

    @property
    def fraction(self) -> float:
        """Share of the work done, 0..1, by steps or by time, whichever is further."""
        parts = []
        if self.total_steps:
            parts.append(self.step / self.total_steps)
        if self.time_budget:
            parts.append(self.elapsed / self.time_budget)
        return min(1.0, max(parts)) if parts else 0.0


@dataclass
class TrainResult:
    """What `Trainer.run` returns: the model (weights kept also when stopped early)."""

    model: UNetModel
    steps: int
    stopped: bool
    elapsed: float
    losses: list[float] = field(default_factory=list)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


class Trainer:
    """Trains a `UNetModel` from images and the labels painted on them.

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
        One per image, of its labels' shape: per-pixel loss weights used instead of the
        border weights computed from the labels.
    prepare : callable, optional
        ``prepare(i, labels) -> (targets, weights or None)`` turns what the user painted on
        image ``i`` into training classes and pixel weights (objects mode derives background /
        interior / boundary this way). It runs here for ``labels`` and, for labels sent with
        `update_labels` while training, in the training thread, so slow preparation never
        blocks the caller.

    Raises
    ------
    InputError
        No painted pixel, a single class, labels of another shape, channel counts that differ.
    """

    def __init__(self, images, labels, *, config: TrainConfig | None = None, model: UNetModel | None = None,
                 channel_axis: int | None = None, class_names: dict | None = None,
                 pixel_weights: list | None = None, prepare=None):
        self.config = config or TrainConfig()
        self._prepare = prepare
        images, labels = _as_list(images), _as_list(labels)
        if len(images) != len(labels):
            raise InputError(f"{len(images)} image(s) but {len(labels)} label image(s): give one labels file per image.")
        if not images:
            raise InputError("No image given to train on.")
        self.views = [ImageView(img, channel_axis) for img in images]
        for n, (view, lab) in enumerate(zip(self.views, labels), start=1):
            if tuple(np.shape(lab)) != tuple(view.shape):
                raise InputError(
                    f"Labels {n} have shape {tuple(np.shape(lab))} but image {n} has {view.shape} (without channels); "
                    "paint the labels on this image, or check that images and labels are paired in order.")
        channels = {v.n_channels for v in self.views}
        if len(channels) > 1:
            raise InputError(f"The images have different channel counts {sorted(channels)}; train on images of one kind.")
        self.labels = [np.asarray(lab) for lab in labels]
        if prepare is not None:
            prepared = [prepare(i, lab) for i, lab in enumerate(self.labels)]
            self.labels = [np.asarray(targets) for targets, _ in prepared]
            pixel_weights = [weights for _, weights in prepared]
        self._pixel_weights = self._check_weights(pixel_weights, len(labels))
        self._check_integer(self.labels)
        class_map = ClassMap.from_labels(self.labels, dense=self.config.dense, names=class_names)
        if class_map.n_classes == 0:
            raise InputError("No painted pixels: paint at least one stroke for each of two classes "
                             "(label 0 means 'not painted').")
        if class_map.n_classes == 1:
            raise InputError(f"Only one class is painted (id {class_map.ids[0]}): paint at least two classes, "
                             "for example background and foreground.")
        self.device = pick_device(self.config.device)
        in_channels = channels.pop()
        #: the labels are strokes (a few per cent of the painted slices), not full masks
        self.from_strokes = not self.config.dense and self._painted_share(class_map) < 0.5
        if model is None:
            volume = {}
            preset = self.config.preset
            if self.config.dims == 3:
                depth = preset_config(preset, in_channels, class_map.n_classes, self.device.type).depth
                volume = {"dims": 3, "z_pooling": z_pooling_for(self.config.z_ratio, depth),
                          "z_kernels": z_kernels_for(self.config.z_ratio, depth)}
            else:
                preset = preset_for(preset, self.device.type, self.from_strokes)
            model = UNetModel.new(in_channels, class_map, preset, self.device, seed=self.config.seed, **volume)
        else:
            if model.config.in_channels != in_channels:
                raise InputError(f"The model expects {model.config.in_channels} channel(s) but the images have "
                                 f"{in_channels}; start a new model for these images.")
            model = model.with_classes(class_map).to(self.device)
        self.model = model
        self.model.info.setdefault("steps", 0)
        self.class_map = model.class_map
        cfg = self.config
        self.dims = model.config.dims
        self._patch = int(math.ceil(cfg.patch_size / model.config.size_multiple) * model.config.size_multiple)
        if self.dims == 3:
            self._check_volumes()
            z_multiple = model.config.z_multiple
            self._patch = (int(math.ceil(cfg.patch_depth / z_multiple) * z_multiple), self._patch, self._patch)
        seed = cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        self._rng = np.random.default_rng(seed)
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._dropout_rng = self._seeded_rng_states(seed)
        self._stats = [self.model.normalization.stats(v) for v in self.views]
        self._pseudo: dict[tuple[int, int], np.ndarray] = {}
        self._use_border_weights = cfg.border_weight if cfg.border_weight is not None \
            else self.class_map.n_classes == 2
        # thin separators: a candidate for two classes in 2D; with separate_regions None, decided after
        # training by the shape of the predicted first class (`separation.separators_are_lines`)
        self._may_separate = self.class_map.n_classes == 2 and self.dims == 2 and bool(
            cfg.separate_regions if cfg.separate_regions is not None else self._use_border_weights)
        if cfg.separate_regions is not None or not self._may_separate:
            self.model.separates_regions = self._may_separate
        self.sampler = PatchSampler(self.class_map.n_classes, self._patch, self.device, self._rng)
        for i in range(len(self.views)):
            self._load_slices(i, self.labels[i], previous=None)
        self._pending: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._optimizer = None
        self._augmenter = Augmenter(elastic=cfg.elastic, intensity=True)
        self._loss = SegmentationLoss(cfg.dice_weight)
        #: steps after which training ends (None: only the time budget ends it)
        self.steps = cfg.steps if cfg.steps is not None else \
            (STROKE_STEPS if self.dims == 2 and self.from_strokes else None)

    @staticmethod
    def _check_integer(labels):
        for lab in labels:
            if not np.issubdtype(lab.dtype, np.integer) and not np.issubdtype(lab.dtype, np.bool_):
                if not np.all(np.mod(lab, 1) == 0):
                    raise InputError("Labels must hold whole numbers (class ids); this file holds fractions. "
                                     "Is it an image rather than a labels file?")

    def _check_volumes(self) -> None:
        for n, view in enumerate(self.views, start=1):
            if len(view.stack_shape) != 1:
                raise InputError(f"A 3D model trains on volumes (Z, Y, X); image {n} has shape {view.shape} "
                                 "without channels. Open it as one stack, or train a 2D model.")
        if self.config.pseudo_labels or self.config.smoothness_weight:
            raise InputError("Pseudo-labels and the smoothness loss are for 2D models; turn them off for 3D.")

    # -- data ---------------------------------------------------------------------------------
    def _load_volume(self, i: int, labels: np.ndarray) -> None:
        """3D model: image ``i`` as one normalised volume ``(C, Z, H, W)`` in the sampler."""
        view, (offset, scale) = self.views[i], self._stats[i]
        target = self.class_map.to_index(labels)
        if not (target >= 0).any():
            self.sampler.remove_slice((i,))
            return
        image = np.stack([(view.read(z) - offset) / scale for z in range(view.n_slices)], axis=1)
        weight = self._pixel_weights[i]
        if weight is None and self._use_border_weights:
            weight = np.ones(target.shape, np.float32)
            for z in np.flatnonzero((target >= 0).any(axis=(1, 2))):
                weight[z] = self._border_weights(labels[z])
        self.sampler.set_slice((i,), image, target, weight)

    def _load_slices(self, i: int, labels: np.ndarray, previous: np.ndarray | None) -> None:
        if self.dims == 3:
            self._load_volume(i, labels)
            return
        view, (offset, scale) = self.views[i], self._stats[i]
        flat = labels.reshape(-1, view.height, view.width)
        old = None if previous is None else previous.reshape(-1, view.height, view.width)
        for s in range(view.n_slices):
            if old is not None and np.array_equal(flat[s], old[s]):
                continue
            target = self.class_map.to_index(flat[s])
            painted = target >= 0
            if not painted.any():
                self.sampler.remove_slice((i, s))
                continue
            image = (view.read(s) - offset) / scale
            if self._pixel_weights[i] is not None:
                weight = self._pixel_weights[i].reshape(-1, view.height, view.width)[s]
            else:
                weight = self._border_weights(flat[s]) if self._use_border_weights else None
            pseudo = self._pseudo.get((i, s))
            if pseudo is not None:
                factor = np.where(painted, 1.0, self.config.pseudo_weight).astype(np.float32)
                weight = factor if weight is None else weight * factor
                target = np.where(painted, target, pseudo)
            self.sampler.set_slice((i, s), image, target, weight, centres=painted)

    def _painted_share(self, class_map: ClassMap) -> float:
        """Share of the pixels of the painted slices that are painted: strokes cover a few
        per cent, full masks (also with 0 left unpainted, or objects mode's derived targets) most."""
        painted = total = 0
        for i, view in enumerate(self.views):
            flat = class_map.to_index(self.labels[i]).reshape(-1, view.height * view.width) >= 0
            counts = flat.sum(axis=1)
            painted += int(counts.sum())
            total += int((counts > 0).sum()) * view.height * view.width
        return painted / total if total else 0.0

    def _check_weights(self, weights, n: int) -> list:
        if weights is None:
            return [None] * n
        if len(weights) != n:
            raise InputError(f"{len(weights)} pixel weight map(s) for {n} image(s): give one per image.")
        return [self._weight_map(i, w) for i, w in enumerate(weights)]

    def _weight_map(self, i: int, weights) -> np.ndarray | None:
        if weights is None:
            return None
        weights = np.array(weights, dtype=np.float32)
        if weights.shape != tuple(self.views[i].shape):
            raise InputError(f"Pixel weights have shape {weights.shape}, expected {self.views[i].shape}.")
        return weights

    def _border_weights(self, labels_2d: np.ndarray) -> np.ndarray:
        """Border weights around the objects of the last class (the foreground)."""
        objects, _ = ndimage.label(labels_2d == self.class_map.ids[-1])
        return border_weight_map(objects, self.config.border_w0, self.config.border_sigma)

    def _painted_slices(self):
        """Yield ``(key, read, height, width)`` for every painted slice; ``read(ys, xs)``
        gives the normalised image as `UNetModel.probabilities` wants it."""
        for i, view in enumerate(self.views):
            offset, scale = self._stats[i]
            flat = self.labels[i].reshape(-1, view.height, view.width)
            for s in range(view.n_slices):
                if not (self.class_map.to_index(flat[s]) >= 0).any():
                    continue

                def read(ys, xs, s=s, view=view, offset=offset, scale=scale):
                    return (view.read(s, ys, xs) - offset) / scale

                yield (i, s), read, view.height, view.width

    def _slice_probabilities(self, max_side: int | None = None, limit: int | None = None, prior: bool = True):
        """Yield ``(key, probs)`` for painted slices, in eval mode (a central window when ``max_side``)."""
        tile = self.model.default_tile()
        was_training = self.model.net.training
        self.model.net.eval()
        try:
            for n, (key, read, height, width) in enumerate(self._painted_slices()):
                if limit is not None and n >= limit:
                    break
                region = None
                if max_side is not None:
                    y0, x0 = max(0, (height - max_side) // 2), max(0, (width - max_side) // 2)
                    region = (y0, min(height, y0 + max_side), x0, min(width, x0 + max_side))
                yield key, self.model.probabilities(read, height, width, tile, region=region, prior=prior)
        finally:
            self.model.net.train(was_training)

    def _pseudo_label(self) -> None:
        """Label confident unpainted pixels of every painted slice with the current prediction."""
        for key, probs in list(self._slice_probabilities()):
            confident = probs.max(0) >= self.config.pseudo_threshold
            self._pseudo[key] = np.where(confident, probs.argmax(0), -1)
        for i in range(len(self.views)):
            self._load_slices(i, self.labels[i], previous=None)
        log.info("Pseudo-labels refreshed on %d slice(s).", len(self._pseudo))

    def _volume_probabilities(self, max_side: int = 256, limit: int = 4):
        """3D model: probabilities ``(K, h, w)`` of up to ``limit`` painted planes (central window)."""
        model, prior = self.model, self.model.class_prior
        model.class_prior = None  # the estimate needs the network's own (balanced) probabilities
        planes = []
        try:
            for i, view in enumerate(self.views):
                painted = np.flatnonzero((self.class_map.to_index(self.labels[i]) >= 0).any(axis=(1, 2)))
                if not len(painted) or len(planes) >= limit:
                    continue
                y0, x0 = max(0, (view.height - max_side) // 2), max(0, (view.width - max_side) // 2)
                region = (y0, min(view.height, y0 + max_side), x0, min(view.width, x0 + max_side))
                for z in painted[:limit - len(planes)]:  # a slab of planes around each painted one
                    z0, z1 = max(0, z - 4), min(view.n_slices, z + 5)
                    _, probs = model.predict(view.source[z0:z1], channel_axis=view.channel_axis,
                                             probabilities=True, region=region)
                    planes.append(probs[z - z0])
        finally:
            model.class_prior = prior
        return planes

    def _after_training(self) -> None:
        """Decide thin separators and estimate class frequencies, from the network's own
        probabilities on (a central 1024-pixel window of) up to 8 painted slices."""
        cfg = self.config
        decide = self._may_separate and cfg.separate_regions is None
        use_prior = cfg.class_prior if cfg.class_prior is not None else \
            self.class_map.n_classes <= MAX_PRIOR_CLASSES
        if not (decide or use_prior):
            self.model.class_prior = None  # an earlier estimate does not fit the new weights
            return
        if self.dims == 3:
            probs = self._volume_probabilities()
        else:
            probs = [p for _, p in self._slice_probabilities(max_side=1024, limit=8, prior=False)]
        if decide:
            self.model.separates_regions = bool(probs) and separators_are_lines(probs)
            log.info("Thin separators between regions: %s", self.model.separates_regions)
        if self.model.separates_regions and cfg.class_prior is None:
            use_prior = False  # the separators' decision replaces the class-frequency correction
        self.model.class_prior = None
        if use_prior and probs:
            self.model.class_prior = estimate_class_prior(probs).astype(np.float32)
            log.info("Estimated class frequencies %s", np.round(self.model.class_prior, 3))

    def update_labels(self, i: int, labels) -> None:
        """Replace the labels of image ``i``; the running loop uses them from its next step.

        Thread-safe. Ids the model does not know yet are ignored until the next `Trainer`.
        With a ``prepare`` function, ``labels`` are what the user painted; they are prepared
        (targets and pixel weights) in the training thread when the loop takes them up.
        """
        labels = np.array(labels, copy=True)
        if labels.shape != tuple(self.views[i].shape):
            raise InputError(f"New labels have shape {labels.shape}, expected {self.views[i].shape}.")
        with self._lock:
            self._pending[i] = labels

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for i, labels in pending.items():
            weights = None
            if self._prepare is not None:
                try:
                    labels, weights = self._prepare(i, labels)
                except ValueError as error:  # keep training on the labels it has
                    log.warning("New strokes on image %d not used: %s", i, error)
                    continue
                labels, weights = np.asarray(labels), self._weight_map(i, weights)
            if weights is not None:
                self._pixel_weights[i] = weights
            self._load_slices(i, labels, previous=self.labels[i])
            self.labels[i] = labels

    # -- loop -----------------------------------------------------------------------------------
    def _progress_fraction(self, step: int, elapsed: float) -> float:
        cfg = self.config
        frac = 0.0
        if self.steps:
            frac = max(frac, step / self.steps)
        if cfg.time_budget:
            frac = max(frac, elapsed / cfg.time_budget)
        return frac

    def _lr(self, step: int, elapsed: float) -> float:
        cfg = self.config
        frac = self._progress_fraction(step, elapsed)
        warmup = min(1.0, (step + 1) / 10)
        return cfg.lr * warmup * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    def run(self, cancel: threading.Event | None = None):
        """Train; yields a `Progress` after every step and returns a `TrainResult`.

        Stops when `steps` (``config.steps``, or `STROKE_STEPS` when that is None and the
        model learns from strokes in 2D) or ``config.time_budget`` is reached, or at the first
        step boundary after ``cancel`` is set (``stopped=True``, weights kept).
        """
        cfg = self.config
        net = self.model.net
        channels_last = cfg.channels_last if cfg.channels_last is not None else self.model.channels_last
        if channels_last:
            net.to(memory_format=self.model.memory_format)
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        opt = self._optimizer
        autocast = self.model._autocast()
        net.train()
        losses: list[float] = []
        average = WeightAverage(net, cfg.ema_decay) if cfg.ema_decay else None
        pseudo_points = [0.5, 0.75] if cfg.pseudo_labels else []
        stopped = False
        step = 0
        batch = cfg.batch_size  # halved if the device runs out of memory
        notice = None
        start = time.perf_counter()
        try:
            while True:
                elapsed = time.perf_counter() - start
                if cancel is not None and cancel.is_set():
                    stopped = True
                    break
                if (self.steps is not None and step >= self.steps) or \
                        (cfg.time_budget is not None and elapsed >= cfg.time_budget):
                    break
                self._apply_pending()
                if pseudo_points and self._progress_fraction(step, elapsed) >= pseudo_points[0]:
                    pseudo_points.pop(0)
                    self._pseudo_label()
                lr = self._lr(step, elapsed)
                for group in opt.param_groups:
                    group["lr"] = lr
                try:
                    loss = self._step(batch, autocast, channels_last)
                except torch.OutOfMemoryError:
                    opt.zero_grad(set_to_none=True)
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    if batch == 1:
                        shape = self.sampler.patch_shape
                        patch = f"{shape[-1]}²" if len(shape) == 2 else " x ".join(map(str, shape))
                        raise InputError(
                            f"The {self.device.type.upper()} ran out of memory even with one {patch} patch "
                            "per step; train on the CPU (device cpu) or with a smaller patch size.") from None
                    batch //= 2
                    notice = f"Out of {self.device.type.upper()} memory while training: going on with {batch} " \
                             "patch(es) per step."
                    log.warning(notice)
                    continue
                if not math.isfinite(loss):
                    raise InputError(f"Training diverged at step {step + 1} (the loss is {loss}); train again with "
                                     "precision fp32 (--precision fp32) or a lower learning rate.")
                step += 1
                losses.append(loss)
                if average is not None:
                    average.update(net)
                elapsed = time.perf_counter() - start
                yield Progress(step, loss, elapsed, self._eta(step, elapsed), self.steps, cfg.time_budget, lr, notice)
                notice = None
        finally:
            net.eval()
            self.model.info["steps"] = int(self.model.info.get("steps", 0)) + step
            self.model.info["train_config"] = cfg.to_dict()
        if average is not None and step:
            average.copy_to(net)
        if step:
            self._after_training()
        return TrainResult(self.model, step, stopped, time.perf_counter() - start, losses)

    def _step(self, batch: int, autocast, channels_last: bool) -> float:
        """One optimisation step on ``batch`` fresh patches; returns the loss."""
        cfg, net, opt = self.config, self.model.net, self._optimizer
        x, y, w = self.sampler.draw(batch)
        if cfg.augment:
            x, y, w = self._augmenter(x, y, w, generator=self._generator)
        if channels_last:
            x = x.contiguous(memory_format=self.model.memory_format)
        opt.zero_grad(set_to_none=True)
        with autocast, self._own_random_numbers():
            logits = net(x)
        loss = self._loss(logits.float(), y, w)
        if cfg.smoothness_weight:
            loss = loss + cfg.smoothness_weight * pairwise_smoothness_loss(logits, x, cfg.smoothness_sigma)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        return float(loss.detach())

    def _seeded_rng_states(self, seed: int) -> dict:
        """Random-number states for the network's drop-out, from this trainer's seed (the
        CUDA one is seeded at the first step)."""
        return {"seed": seed, "cpu": torch.Generator(device="cpu").manual_seed(seed).get_state(), "cuda": None}

    @contextlib.contextmanager
    def _own_random_numbers(self):
        """Run the forward pass on this trainer's random numbers (drop-out draws from torch's
        global generators), so that a seeded training repeats exactly and leaves the caller's
        random state alone (CPU and CUDA; on MPS drop-out keeps drawing from MPS's generator)."""
        states, cuda = self._dropout_rng, self.device.type == "cuda"
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
        cfg = self.config
        left = []
        if self.steps:
            left.append((self.steps - step) * elapsed / step)
        if cfg.time_budget:
            left.append(cfg.time_budget - elapsed)
        return max(0.0, min(left)) if left else None


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


def fit(images, labels, **kwargs) -> TrainResult:
    """Train to the end (no progress events); see `Trainer` for the arguments."""
    cancel = kwargs.pop("cancel", None)
    gen = Trainer(images, labels, **kwargs).run(cancel)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value
