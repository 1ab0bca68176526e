"""Image layout and intensity normalisation.

The engine sees every image as ``(S, C, H, W)``: S slices of a stack (1 for a 2D
image), C channels, and two spatial axes. Axes before the last two spatial axes are
stack axes (Z or T). Views are lazy for NumPy, dask and zarr inputs: nothing is
loaded until a tile is read.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .features import FilterFeatures

__all__ = ["ImageView", "Normalization", "guess_channel_axis", "spatial_shape"]


def spatial_shape(shape: tuple[int, ...], channel_axis: int | None) -> tuple[int, ...]:
    """Shape of the labels that go with an image of ``shape`` (the image less its channel axis)."""
    if channel_axis is None:
        return tuple(shape)
    axis = channel_axis % len(shape)
    return tuple(s for i, s in enumerate(shape) if i != axis)


class ImageView:
    """An image seen as ``(S, C, H, W)`` without copying it.

    Parameters
    ----------
    image : array-like
        NumPy, dask, zarr or memory-mapped array, at least 2D.
    channel_axis : int, optional
        Axis holding channels (``-1`` for RGB as napari stores it); None for grey.
    """

    def __init__(self, image, channel_axis: int | None = None):
        if not hasattr(image, "shape") or not hasattr(image, "__getitem__"):
            image = np.asarray(image)
        ndim = len(image.shape)
        min_ndim = 2 if channel_axis is None else 3
        if ndim < min_ndim:
            raise InputError(
                f"An image needs at least {min_ndim} dimensions"
                f"{' with a channel axis' if channel_axis is not None else ''}; got shape {tuple(image.shape)}."
            )
        self.source = image
        self.channel_axis = None if channel_axis is None else channel_axis % ndim
        self.shape = spatial_shape(tuple(image.shape), channel_axis)  # labels shape
        self.n_channels = 1 if channel_axis is None else int(image.shape[self.channel_axis])
        self.stack_shape = self.shape[:-2]
        self.n_slices = int(np.prod(self.stack_shape, dtype=np.int64)) if self.stack_shape else 1
        self.height, self.width = self.shape[-2:]

    def _index(self, s: int, ys: slice, xs: slice) -> tuple:
        """Index into the source for slice ``s`` and a spatial window, channel axis kept whole."""
        stack_idx = np.unravel_index(s, self.stack_shape) if self.stack_shape else ()
        spatial = list(stack_idx) + [ys, xs]
        if self.channel_axis is None:
            return tuple(int(i) if not isinstance(i, slice) else i for i in spatial)
        spatial.insert(self.channel_axis, slice(None))
        return tuple(int(i) if not isinstance(i, slice) else i for i in spatial)

    def read(self, s: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """Read slice ``s`` (window ``ys, xs``) as float32 ``(C, h, w)``."""
        block = np.asarray(self.source[self._index(s, ys, xs)], dtype=np.float32)
        if self.channel_axis is None:
            return block[None]
        # the channel axis is now the only axis left besides the two spatial ones
        c_pos = self.channel_axis - sum(1 for i in range(len(self.stack_shape)) if i < self.channel_axis)
        return np.moveaxis(block, c_pos, 0)

    def read_normalized(self, s: int, stats: tuple[np.ndarray, np.ndarray], ys: slice = slice(None),
                        xs: slice = slice(None)) -> np.ndarray:
        """Read slice ``s`` (window ``ys, xs``) scaled by ``stats = (offset, scale)`` from `Normalization.stats`.

        Returns float32 ``(C, h, w)``; NaN and infinite results become 0, so a broken pixel is
        predicted from its neighbours instead of spreading through every convolution.
        """
        offset, scale = stats
        with np.errstate(invalid="ignore", over="ignore"):
            block = ((self.read(s, ys, xs) - offset) / scale).astype(np.float32, copy=False)
        np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return block

    def sample(self, max_pixels: int = 2_000_000) -> np.ndarray:
        """A strided sample ``(C, N)`` of the whole image for intensity statistics."""
        total = self.n_slices * self.height * self.width
        step = max(1, int(np.ceil(np.sqrt(total / max_pixels))))
        slices = range(0, self.n_slices, max(1, self.n_slices // 16))
        parts = [self.read(s, slice(None, None, step), slice(None, None, step)) for s in slices]
        return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)


@dataclass(frozen=True)
class Normalization:
    """How an image becomes network input: per-image, per-channel percentile scaling
    ``(x - p_low) / (p_high - p_low)``, then optionally `FilterFeatures` as extra channels.

    The method (not the numbers) is stored in the model, so prediction scales each new
    image the same way training did, whatever its dtype (uint8, uint16, float).
    """

    low: float = 1.0
    high: float = 99.8
    features: FilterFeatures | None = None

    def __post_init__(self):
        if not 0.0 <= self.low < self.high <= 100.0:  # also false for NaN
            raise ValueError(f"Normalization percentiles need 0 <= low < high <= 100, got {self.low} and {self.high}.")

    def stats(self, view: ImageView) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(offset, scale)`` arrays of shape ``(C, 1, 1)`` for ``view``.

        Percentiles of the finite values only; a channel with none gets offset 0, scale 1.
        """
        sample = view.sample()
        lo = np.zeros(len(sample), np.float64)
        hi = np.ones(len(sample), np.float64)
        for c, values in enumerate(sample):
            finite = values[np.isfinite(values)]
            if finite.size:
                lo[c], hi[c] = np.percentile(finite, [self.low, self.high])
        scale = np.where(hi - lo > 1e-6, hi - lo, 1.0)
        return lo.astype(np.float32)[:, None, None], scale.astype(np.float32)[:, None, None]

    def input_channels(self, image_channels: int) -> int:
        """Network input channels for images of ``image_channels`` channels."""
        return image_channels if self.features is None else self.features.input_channels(image_channels)

    def image_channels(self, input_channels: int) -> int | None:
        """Image channels a network of ``input_channels`` inputs takes (None when none fits)."""
        return input_channels if self.features is None else self.features.image_channels(input_channels)

    def read(self, view: ImageView, s: int, stats, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """Network input ``(input_channels, h, w)`` of slice ``s`` (window ``ys, xs``) of ``view``.

        With features, the window is read with `FilterFeatures.margin` pixels of context (mirrored
        beyond the image), so a tile's channels match those of the whole image.
        """
        if self.features is None:
            return view.read_normalized(s, stats, ys, xs)
        y0, y1, _ = ys.indices(view.height)
        x0, x1, _ = xs.indices(view.width)
        m = self.features.margin
        ey0, ey1, ex0, ex1 = max(0, y0 - m), min(view.height, y1 + m), max(0, x0 - m), min(view.width, x1 + m)
        block = view.read_normalized(s, stats, slice(ey0, ey1), slice(ex0, ex1))
        pads = ((0, 0), (m - (y0 - ey0), m - (ey1 - y1)), (m - (x0 - ex0), m - (ex1 - x1)))
        block = np.pad(block, pads, mode="symmetric")
        return self.features.network_input(block)[:, m:m + y1 - y0, m:m + x1 - x0]

    def to_dict(self) -> dict:
        data = {"kind": "percentile", "low": self.low, "high": self.high}
        if self.features is not None:
            data["features"] = self.features.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        features = data.get("features")
        return cls(float(data.get("low", 1.0)), float(data.get("high", 99.8)),
                   None if features is None else FilterFeatures.from_dict(features))


def guess_channel_axis(image_shape: tuple[int, ...], labels_shape: tuple[int, ...] | None = None,
                       n_channels: int | None = None) -> int | None:
    """Guess which axis of an image holds channels.

    With ``labels_shape`` the channel axis is the one whose removal gives the labels' shape
    (last axis preferred, then first). With ``n_channels`` (a model's input channels) it is
    the last, else the first axis of that length (except for 3 or 4 channels: a first axis of
    3 could be 3 planes, so that is refused as ambiguous). A 3-or-4-long last axis behind two larger
    ones is read as RGB(A). Returns None for grey images and stacks.
    """
    image_shape = tuple(image_shape)
    if labels_shape is not None:
        labels_shape = tuple(labels_shape)
        if image_shape == labels_shape:
            return None
        if len(image_shape) == len(labels_shape) + 1:
            for axis in [len(image_shape) - 1, *range(len(image_shape) - 1)]:
                if image_shape[:axis] + image_shape[axis + 1:] == labels_shape:
                    return axis
        raise InputError(
            f"Labels of shape {labels_shape} do not fit an image of shape {image_shape}; "
            "labels must have the image's shape (without its colour channels).")
    if n_channels is not None and n_channels > 1:
        if image_shape[-1] == n_channels:
            return len(image_shape) - 1
        if image_shape[0] == n_channels:
            if n_channels in (3, 4):
                raise InputError(
                    f"An image of shape {image_shape} is ambiguous for a {n_channels}-channel model: its first axis "
                    f"could be {n_channels} planes or {n_channels} colours; RGB images keep their colours in the last "
                    "axis, so move them there.")
            return 0
        raise InputError(f"The model expects {n_channels}-channel images but this image has shape {image_shape}; "
                         "use a model trained on images like this one.")
    rgb_like = len(image_shape) >= 3 and image_shape[-1] in (3, 4) and min(image_shape[-3:-1]) > 4
    if n_channels == 1 and rgb_like:
        raise InputError(f"The model expects grey images but this image looks like RGB (shape {image_shape}); "
                         "use a model trained on colour images, or convert the image to grey.")
    if n_channels is None and rgb_like:
        return len(image_shape) - 1
    return None

