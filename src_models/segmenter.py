"""`UNetModel`: a trained network with what it needs to be used on new images.

It bundles the `UNet`, the `ClassMap` (label ids and names), the intensity
`Normalization` and a record of how it was trained, predicts whole images, stacks and
lazy arrays tile by tile, and saves to / loads from one safe file (see `checkpoint`).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np
import torch

from .calibration import apply_class_prior
from .checkpoint import ModelParts, read_model, write_model
from .classmap import ClassMap
from .config import TileConfig, UNetConfig, preset_config
from .device import autocast, pick_device, uses_bf16
from .errors import InputError
from .images import ImageView, Normalization
from .memory import release_file_pages, smaller_after_out_of_memory
from .model import UNet
from .segmentation import Segmentation, segment
from .separation import DEFAULT_RIDGE, separate_regions_in_rows
from .task import Task
from .tiling import count_tiles, count_volume_blocks, predict_tiled, predict_volume_tiled

__all__ = ["UNetModel"]

log = logging.getLogger(__name__)

#: Largest number of output floats (classes x pixels) accumulated at once; bigger images go in bands.
_MAX_REGION_FLOATS = 64 * 2**20



class UNetModel:
    """A U-Net together with its classes and input normalisation.

    Parameters
    ----------
    net : UNet
        The network; its ``config`` gives channels and classes.
    class_map : ClassMap
        Label ids for the network's outputs, in order.
    normalization : Normalization, optional
        Intensity scaling applied to every image before the network.
    device : str or torch.device
        Where the network runs (``"auto"``: CUDA, MPS, CPU).
    info : dict, optional
        Free-form record of how the model was trained (stored in the model file).
    class_prior : sequence of float, optional
        Class frequencies the network's (class-balanced) probabilities are re-weighted by;
        estimated by the `Trainer` on the training images (see `calibration`). None: equal.
    """

    def __init__(self, net: UNet, class_map: ClassMap, normalization: Normalization | None = None,
                 device="auto", info: dict | None = None, class_prior=None):
        if net.config.n_classes != class_map.n_classes:
            raise ValueError(
                f"The network has {net.config.n_classes} outputs but the class map {class_map.n_classes} classes.")
        self.device = pick_device(device)
        self.net = net
        self.to(self.device)
        self.class_map = class_map
        self.normalization = normalization or Normalization()
        self.info = dict(info or {})
        self.class_prior = None if class_prior is None else np.asarray(class_prior, dtype=np.float32)
        if self.class_prior is not None and self.class_prior.shape != (class_map.n_classes,):
            raise ValueError(f"class_prior needs {class_map.n_classes} values, got {self.class_prior.shape}.")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def new(cls, in_channels: int, class_map: ClassMap, preset: str = "auto", device="auto",
            seed: int | None = None, **overrides) -> "UNetModel":
        """A freshly initialised model from a named preset (``small``, ``large`` or ``auto``)."""
        dev = pick_device(device)
        config = preset_config(preset, in_channels, class_map.n_classes, dev.type)
        if overrides:
            config = UNetConfig.from_dict({**config.to_dict(), **overrides})
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = UNet(config)
        else:
            net = UNet(config)
        return cls(net, class_map, device=dev)

    @property
    def config(self) -> UNetConfig:
        return self.net.config

    @property
    def image_channels(self) -> int:
        """Channels of the images the model takes (its network may take filter features beside them)."""
        return self.normalization.image_channels(self.config.in_channels) or self.config.in_channels

    @property
    def task(self) -> Task:
        """What the model does: classes or objects, 2D or 3D (stored in the model file)."""
        return Task.stored(self.info, self.config.dims)

    @task.setter
    def task(self, task: Task) -> None:
        if task.dims != self.config.dims:
            raise InputError(f"This is a {self.config.dims}D network; it cannot do {task}.", setting="dims")
        task.store(self.info)

    def labels_metadata(self) -> dict:
        """TIFF metadata of this model's predictions: class ids and names, or the objects mode."""
        if self.task.objects:
            return {"mode": "objects"}
        return {"class_ids": list(self.class_map.ids), "class_names": list(self.class_map.names)}

    def to(self, device) -> "UNetModel":
        """Move to ``device`` (in place) and return self."""
        self.device = pick_device(device)
        self.net.to(self.device)
        if self.channels_last:
            self.net.to(memory_format=self.memory_format)
        return self

    @property
    def channels_last(self) -> bool:
        """Whether the network runs in channels-last layout (faster on CUDA and on the CPU)."""
        return self.device.type in ("cuda", "cpu")

    @property
    def memory_format(self) -> torch.memory_format:
        """The channels-last layout of this network's tensors (``channels_last_3d`` for 3D)."""
        return torch.channels_last if self.config.dims == 2 else torch.channels_last_3d

    def with_classes(self, class_map: ClassMap) -> "UNetModel":
        """This model extended to the classes of ``class_map`` (fine-tuning with new classes).

        Known classes keep their weights; new ones get a fresh head row. Returns self when
        nothing is new.
        """
        merged = self.class_map.union(class_map)
        if merged.ids == self.class_map.ids:
            return self
        old_head = self.net.head
        config = UNetConfig.from_dict({**self.config.to_dict(), "n_classes": merged.n_classes})
        net = UNet(config)
        state = {k: v for k, v in self.net.state_dict().items() if not k.startswith("head.")}
        net.load_state_dict(state, strict=False)
        with torch.no_grad():
            k = old_head.out_channels
            net.head.weight[:k] = old_head.weight.detach().cpu()
            net.head.bias[:k] = old_head.bias.detach().cpu()
        log.info("Extended the model from classes %s to %s.", self.class_map.ids, merged.ids)
        return UNetModel(net, merged, self.normalization, self.device, self.info)  # prior: re-estimated

    # -- prediction ---------------------------------------------------------------------
    def _inference_net(self) -> UNet:
        """`UNet.for_inference` of the current weights, rebuilt only when they have changed.

        Weights change in place while a `Trainer` runs (live previews predict between
        steps); every parameter and buffer carries a version counter that in-place updates
        bump, so the key below changes with them.
        """
        tensors = [*self.net.parameters(), *self.net.buffers()]
        key = (id(self.net), str(self.device), tuple(t._version for t in tensors),
               tuple(t.data_ptr() for t in tensors))
        if getattr(self, "_inference_key", None) != key:
            net = self.net.for_inference()
            if self.channels_last:
                net = net.to(memory_format=self.memory_format)
            self._inference, self._inference_key = net, key
        return self._inference

    def default_tile(self, **changes) -> TileConfig:
        """Tile settings for this model's device; ``changes`` override fields (e.g. ``tta``).

        CPU: one 512-pixel tile per pass; the 32-pixel halo then re-computes 23 % of the
        pixels instead of 44 % with 256-pixel tiles, and larger tiles fall out of cache.
        CUDA: 1024-pixel tiles when the GPU has room, as many per batch (up to 8) as fit in
        half of the free memory by a rough estimate of the activations; an out-of-memory
        error still shrinks them (see `predict`).
        """
        if self.config.dims == 3:  # blocks of a volume, one per pass; only the cores are kept
            big = self.device.type == "cuda"
            tile = TileConfig(tile_size=256 if big else 192, halo=24, blend=0, batch_size=1,
                              z_tile=32 if big else 24, z_halo=4)
        elif self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            bytes_per_pixel = 48 * self.config.base_width  # bf16 activations kept alive, with margin
            size = 1024 if free > 8 * 2**30 else 512
            batch = int(np.clip(free // 2 // (bytes_per_pixel * size * size), 1, 8))
            tile = TileConfig(tile_size=size, halo=32, blend=16, batch_size=batch)
        elif self.device.type == "mps":
            tile = TileConfig(tile_size=512, halo=32, blend=16, batch_size=2)
        else:
            tile = TileConfig(tile_size=512, halo=32, blend=16, batch_size=1)
        return dataclasses.replace(tile, **changes) if changes else tile

    @property
    def separates_regions(self) -> bool:
        """Whether `predict` draws thin separators between regions (`separation.separate_regions`).

        Decided after training for 2D models of two classes trained with border weights:
        on when the first class forms lines between regions of the second (membranes between
        cells, `separation.separators_are_lines`), off for a background around objects.
        Stored in the model file (``info["separate_regions"]``); set it to False for the
        plain argmax.
        """
        return bool(self.info.get("separate_regions")) and self.class_map.n_classes == 2 and self.config.dims == 2

    @separates_regions.setter
    def separates_regions(self, value: bool) -> None:
        self.info["separate_regions"] = bool(value)

    @property
    def separator_ridge(self) -> float:
        """The ``ridge`` of this model's thin separators (`separation.separate_regions`).

        Fitted after training on the network's own probabilities of the painted slices
        (`separation.fit_ridge`, ``TrainConfig.separator_keep``), so that the separators keep the
        same share of what the network finds most likely separator however sharp its crests have
        become. Stored in the model file (``info["separator_ridge"]``); files without one use
        `separation.DEFAULT_RIDGE`.
        """
        return float(self.info.get("separator_ridge", DEFAULT_RIDGE))

    @separator_ridge.setter
    def separator_ridge(self, value: float) -> None:
        if not (isinstance(value, (int, float, np.floating)) and 0.0 < float(value) <= 1.0):
            raise ValueError(f"separator_ridge must lie in (0, 1], got {value!r}.")
        self.info["separator_ridge"] = float(value)

    #: ``"auto"`` (bf16 autocast on CUDA and on CPUs with hardware bf16), ``"bf16"`` or ``"fp32"``;
    #: set on the instance to override. Not stored in the model file.
    precision = "auto"

    @property
    def bf16(self) -> bool:
        """Whether the network runs under bf16 autocast here (see `device.uses_bf16`)."""
        return uses_bf16(self.device, self.precision, cpu_auto=self.config.dims == 2)

    def _autocast(self):
        return autocast(self.device, self.precision, cpu_auto=self.config.dims == 2)

    @torch.no_grad()
    def predict_probabilities_batch(self, batch: np.ndarray, tta: bool = False,
                                    prior: bool = True) -> np.ndarray:
        """Class probabilities ``(B, K, h, w)`` for a normalised batch ``(B, C, h, w)``.

        With ``prior`` (and a `class_prior` set) they are re-weighted by the class frequencies.
        """
        net = self._inference_net()
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=self.memory_format)
        transforms = [(f, k) for f in (False, True) for k in range(4)] if tta else [(False, 0)]
        total = None
        with self._autocast():
            for flip, k in transforms:
                xt = x.flip(-1) if flip else x
                xt = xt.rot90(k, (-2, -1)) if k else xt
                p = net(xt).float().softmax(1)
                p = p.rot90(-k, (-2, -1)) if k else p
                p = p.flip(-1) if flip else p
                total = p if total is None else total + p
        probs = (total / len(transforms)).cpu().numpy()
        if prior and self.class_prior is not None:
            probs = apply_class_prior(probs, self.class_prior, axis=1)
        return probs

    def probabilities(self, read: Callable, height: int, width: int, tile: TileConfig | None = None,
                      region=None, progress=None, cancel=None, prior: bool = True,
                      carry: dict | None = None) -> np.ndarray:
        """Class probabilities ``(K, h, w)`` of one normalised 2D image given as a reader.

        ``read(ys, xs) -> (C, h, w)`` float32, already normalised; see `predict_tiled` (also
        for ``carry``, the tiles shared by bands of rows).
        """
        tile = tile or self.default_tile()
        return predict_tiled(
            lambda b: self.predict_probabilities_batch(b, tile.tta, prior), read, height, width,
            self.class_map.n_classes, tile_size=tile.tile_size, halo=tile.halo, blend=tile.blend,
            batch_size=tile.batch_size, multiple=self.config.size_multiple, region=region,
            progress=progress, cancel=cancel, carry=carry)

    def segment(self, image, **options) -> Segmentation:
        """Segment an image, one plane of a stack, or a region, the way this model's `task` wants:
        the front door for prediction (see `segmentation.segment` for the options)."""
        return segment(self, image, **options)

    def predict(self, image, *, channel_axis: int | None = None, tile: TileConfig | None = None,
                probabilities: bool = False, progress: Callable[[int, int], None] | None = None,
                cancel=None, out=None, region: tuple[int, int, int, int] | None = None,
                notice: Callable[[str], None] | None = None, separate: bool | None = None, stats=None):
        """Class ids of an image, a multichannel image or a stack, tile by tile (classes only;
        `segment` is the front door that also handles objects, planes and streaming).

        Parameters
        ----------
        image : array-like
            NumPy, dask, zarr or memory-mapped; 2D ``(H, W)``, with a channel axis, or a
            stack ``(Z, H, W)`` (every axis before the last two spatial ones is a stack axis).
        channel_axis : int, optional
            Channel axis of ``image`` (``-1`` for RGB); None for grey.
        tile : TileConfig, optional
            Tile size, halo, blending, batch and test-time augmentation; default
            `default_tile` for the model's device.
        probabilities : bool
            Also return class probabilities ``(*stack, K, H, W)`` float32.
        progress : callable, optional
            ``progress(done, total)`` in tiles.
        cancel : threading.Event, optional
            Stops between tile batches by raising `Cancelled`.
        out : array-like, optional
            Writable array of the labels' shape (e.g. a memory-mapped TIFF or zarr array)
            that receives the labels; returned instead of a new array.
        region : (y0, y1, x0, x1), optional
            Predict only this window of every slice (e.g. the field of view of a live
            preview), with the whole image's normalisation and real context around it;
            the result then has the window's spatial size.
        notice : callable, optional
            ``notice(message)`` when the device runs out of memory and prediction goes on with
            fewer tiles per batch, smaller tiles or blocks, or on the CPU (also logged); after
            a move to the CPU the model stays there (``model.to("cuda")`` moves it back).
        stats : (offset, scale), optional
            The image's intensity scaling from `Normalization.stats`; computed from the whole
            image when None. Whoever predicts many regions of one image (`distributed`) computes
            it once, so every region is scaled alike.

        Returns
        -------
        labels : ndarray
            The painted class ids, shape of the image less its channel axis, uint8
            (uint16/uint32 for larger ids): the most likely class of each pixel, or, for a
            model that `separates_regions`, thin separators between closed regions
            (decided per band of rows on images too large for one band).
        probs : ndarray, only with ``probabilities=True``
        """
        tile = tile or self.default_tile()
        view = ImageView(image, channel_axis)
        if view.n_channels != self.image_channels:
            raise InputError(
                f"The model expects {self.image_channels} channel(s) but the image has {view.n_channels}; "
                "use a model trained on images like this one, or set the channel axis correctly.")
        if self.config.dims == 3 and len(view.stack_shape) != 1:
            raise InputError(f"This is a 3D model: it predicts volumes (Z, Y, X), but the image has shape "
                             f"{view.shape} without channels; open the volume as one stack, or use a 2D model.")
        offset, scale = self.normalization.stats(view) if stats is None else stats
        ry0, ry1, rx0, rx1 = region if region is not None else (0, view.height, 0, view.width)
        if not (0 <= ry0 < ry1 <= view.height and 0 <= rx0 < rx1 <= view.width):
            raise InputError(f"Region {region} lies outside the {view.height}x{view.width} image.")
        out_shape = (*view.stack_shape, ry1 - ry0, rx1 - rx0)
        labels = out if out is not None else np.zeros(out_shape, dtype=self.class_map.dtype)
        if tuple(labels.shape) != out_shape:
            raise InputError(f"The output array has shape {tuple(labels.shape)}, expected {out_shape}.")
        probs = np.zeros((*view.stack_shape, self.class_map.n_classes, *out_shape[-2:]), np.float32) \
            if probabilities else None
        if self.config.dims == 3:
            self._predict_volume(view, (offset, scale), tile, (ry0, ry1, rx0, rx1), labels, probs, progress, cancel,
                                 notice)
            return (labels, probs) if probabilities else labels
        multiple = self.config.size_multiple
        band = max(1, _MAX_REGION_FLOATS // max(1, self.class_map.n_classes * (rx1 - rx0)))
        bands = [(y0, min(ry1, y0 + band)) for y0 in range(ry0, ry1, band)]
        # a band runs only the tiles it does not share with the band above (`predict_tiled`'s carry)
        per_band = [count_tiles(view.height, view.width, tile.tile_size, tile.halo, tile.blend, multiple,
                                (y0, y1, rx0, rx1), after=(bands[n - 1][0], y0, rx0, rx1) if n else None)
                    for n, (y0, y1) in enumerate(bands)]
        total = sum(per_band) * view.n_slices
        separate = self.separates_regions if separate is None else separate and self.separates_regions
        was_training = self.net.training
        self.net.eval()
        try:
            done_before = 0
            for s in range(view.n_slices):
                def read(ys, xs, s=s):
                    return self.normalization.read(view, s, (offset, scale), ys, xs)

                stack_idx = np.unravel_index(s, view.stack_shape) if view.stack_shape else ()
                carry: dict = {}
                for (y0, y1), n_tiles in zip(bands, per_band):
                    region_probs, tile = self._probabilities_or_retry(
                        read, view.height, view.width, tile, region=(y0, y1, rx0, rx1),
                        progress=None if progress is None else
                        (lambda d, base=done_before: progress(base + d, total)),
                        cancel=cancel, notice=notice, carry=carry)
                    done_before += n_tiles
                    rows = slice(y0 - ry0, y1 - ry0)
                    if separate:
                        labels[(*stack_idx, rows)] = self.class_map.to_ids(separate_regions_in_rows(
                            region_probs, ridge=self.separator_ridge))
                    else:
                        for r in range(0, y1 - y0, 256):  # argmax in row chunks: no band-sized int64 array
                            chunk = slice(y0 - ry0 + r, min(y1, y0 + r + 256) - ry0)
                            labels[(*stack_idx, chunk)] = self.class_map.to_ids(
                                region_probs[:, r:r + 256].argmax(0))
                    if probs is not None:
                        probs[(*stack_idx, slice(None), rows)] = region_probs
                    if len(bands) > 1 or view.n_slices > 1:
                        release_file_pages(view.source, labels)
        finally:
            self.net.train(was_training)
        return (labels, probs) if probabilities else labels

    def _predict_volume(self, view: ImageView, stats, tile: TileConfig, region, labels, probs, progress,
                        cancel, notice=None) -> None:
        """3D network: class ids (and probabilities) of a volume, block by block
        (`predict_volume_tiled`); after running out of memory, again with smaller blocks."""
        offset, scale = stats
        depth = view.stack_shape[0]

        def read_plane(z, ys, xs):
            return self.normalization.read(view, z, (offset, scale), ys, xs)

        def write(zs, ys, xs, core):
            labels[zs, ys, xs] = self.class_map.to_ids(core.argmax(0))
            if probs is not None:
                probs[zs, :, ys, xs] = core.transpose(1, 0, 2, 3)

        was_training = self.net.training
        self.net.eval()
        original = tile
        try:
            while True:
                total = count_volume_blocks(depth, view.height, view.width, tile.tile_size, tile.halo, tile.z_tile,
                                            tile.z_halo, self.config.size_multiple, region)
                try:
                    predict_volume_tiled(
                        lambda block, tta=tile.tta: self.predict_probabilities_batch(block, tta), read_plane, depth,
                        view.height, view.width, write, tile_size=tile.tile_size, halo=tile.halo,
                        z_tile=tile.z_tile, z_halo=tile.z_halo, multiple=self.config.size_multiple,
                        z_multiple=self.config.z_multiple, region=region,
                        progress=None if progress is None else (lambda n, total=total: progress(n, total)),
                        cancel=cancel)
                    return
                except torch.OutOfMemoryError:  # blocks already written are written again
                    tile = smaller_after_out_of_memory(self, tile, original, notice)
        finally:
            self.net.train(was_training)

    def _probabilities_or_retry(self, read, height, width, tile: TileConfig, *, region, progress, cancel,
                                notice=None, carry: dict | None = None) -> tuple[np.ndarray, TileConfig]:
        """`probabilities` of one band, retried with smaller settings after running out of
        memory (`memory.smaller_after_out_of_memory`). Returns the probabilities and the tile settings that
        worked (used for the following bands)."""
        original = tile
        while True:
            try:
                return self.probabilities(read, height, width, tile, region=region, progress=progress,
                                          cancel=cancel, carry=carry), tile
            except torch.OutOfMemoryError:
                tile = smaller_after_out_of_memory(self, tile, original, notice)
                if carry is not None:
                    carry.clear()  # tiles of the old size do not fit the new grid

    # -- files ----------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model to one safetensors file (weights + JSON metadata), atomically."""
        write_model(path, ModelParts(self.net, self.class_map, self.normalization, self.info, self.class_prior))

    @classmethod
    def load(cls, path, device="auto") -> "UNetModel":
        """Read a model file written by `save`; never executes code from the file."""
        parts = read_model(path, device)
        return cls(parts.net, parts.class_map, parts.normalization, device, parts.info, parts.class_prior)
