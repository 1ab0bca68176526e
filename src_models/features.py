"""Filter responses as extra input channels: the random forest's own view of an image.

`skimage.feature.multiscale_basic_features` (smoothed intensity, edge strength and two texture
measures at a few scales) is what an ilastik-style pixel classifier learns from. Given to the
U-Net beside the image, it starts from features of this image instead of learning them from a
few strokes. The recipe (scales, and each channel's mean and spread on the training images) is
stored with the model, so prediction computes the same channels, tile by tile with a margin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["FilterFeatures"]


@dataclass(frozen=True)
class FilterFeatures:
    """Multiscale filter responses of every image channel, standardised.

    Parameters
    ----------
    sigma_min, sigma_max : float
        Smallest and largest Gaussian scale, in pixels; the scales double between them.
    mean, std : tuple of float
        Per feature channel, fitted on the training images (`fitted`); empty before that.
    """

    sigma_min: float = 1.0
    sigma_max: float = 16.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self):
        ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (self.sigma_min, self.sigma_max))
        if not ok or not 0.3 <= self.sigma_min <= self.sigma_max <= 64:
            raise InputError(f"Filter scales need 0.3 <= sigma_min <= sigma_max <= 64, got {self.sigma_min!r} and "
                             f"{self.sigma_max!r}.")
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) != len(std) or not all(math.isfinite(v) for v in mean + std) or any(v <= 0 for v in std):
            raise InputError("Filter feature statistics need one finite mean and one positive spread per channel.")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def n_sigmas(self) -> int:
        return int(np.log2(self.sigma_max) - np.log2(self.sigma_min) + 1)

    @property
    def per_channel(self) -> int:
        """Feature channels per image channel: intensity, edges and two texture measures per scale."""
        return 4 * self.n_sigmas

    @property
    def margin(self) -> int:
        """Pixels of context a window needs on each side for its filter responses to be those of the
        whole image: the reach of the largest Gaussian (scikit-image truncates at 4 sigma)."""
        return int(math.ceil(4 * self.sigma_max)) + 1

    def input_channels(self, image_channels: int) -> int:
        """Network input channels for images of ``image_channels`` channels."""
        return image_channels * (1 + self.per_channel)

    def image_channels(self, input_channels: int) -> int | None:
        """Image channels behind ``input_channels`` network inputs (None when they do not divide)."""
        n, rest = divmod(input_channels, 1 + self.per_channel)
        return n if n and not rest else None

    def responses(self, block: np.ndarray) -> np.ndarray:
        """Raw filter responses ``(C * per_channel, h, w)`` of a scaled block ``(C, h, w)``."""
        from skimage.feature import multiscale_basic_features

        parts = [multiscale_basic_features(plane, sigma_min=self.sigma_min, sigma_max=self.sigma_max,
                                           num_sigma=self.n_sigmas) for plane in block]
        return np.concatenate([np.moveaxis(p, -1, 0) for p in parts]).astype(np.float32)

    def fitted(self, blocks: list[np.ndarray]) -> "FilterFeatures":
        """These scales with each channel's mean and spread measured on ``blocks`` (scaled images)."""
        sums, count = None, 0
        for block in blocks:
            r = self.responses(block).reshape(-1, block.shape[-2] * block.shape[-1]).astype(np.float64)
            part = np.stack([r.sum(1), (r ** 2).sum(1)])
            sums = part if sums is None else sums + part
            count += r.shape[1]
        if sums is None:
            raise InputError("No image to fit the filter features on.")
        mean = sums[0] / count
        std = np.sqrt(np.maximum(sums[1] / count - mean ** 2, 0.0))
        return FilterFeatures(self.sigma_min, self.sigma_max, tuple(mean), tuple(np.maximum(std, 1e-6)))

    def network_input(self, block: np.ndarray) -> np.ndarray:
        """``(C * (1 + per_channel), h, w)``: the scaled block followed by its standardised responses."""
        responses = self.responses(block)
        if len(self.mean) != len(responses):
            raise InputError(f"The model's filter features were fitted for {len(self.mean)} channels but this "
                             f"image gives {len(responses)}; use images like the training ones.")
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return np.concatenate([block, (responses - mean) / std]).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "mean": list(self.mean),
                "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "FilterFeatures":
        if not isinstance(data, dict):
            raise InputError("Filter features must be described by a record of scales and statistics.")
        return cls(data.get("sigma_min", 1.0), data.get("sigma_max", 16.0), tuple(data.get("mean", ())),
                   tuple(data.get("std", ())))
