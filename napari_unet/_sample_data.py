"""A generated sample image: nuclei-like blobs on a noisy, uneven background (no download)."""

from __future__ import annotations

import numpy as np
from skimage.draw import ellipse
from skimage.filters import gaussian

__all__ = ["make_sample_data", "synthetic_nuclei"]


def synthetic_nuclei(
    shape: tuple[int, int] = (256, 256), n_nuclei: int = 40, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a fluorescence-like image of elliptical nuclei.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the image.
    n_nuclei : int
        How many nuclei to draw (they may touch or overlap).
    seed : int
        Seed of the generator, so the sample is the same on every call.

    Returns
    -------
    image : np.ndarray
        ``(H, W)`` uint8 image.
    mask : np.ndarray
        ``(H, W)`` uint8, 1 inside a nucleus, 0 outside.
    """
    if len(shape) != 2 or min(shape) < 16:
        raise ValueError(f"shape must be two sides of at least 16 pixels, got {shape}.")
    rng = np.random.default_rng(seed)
    height, width = shape
    signal = np.zeros(shape, dtype=np.float32)
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(n_nuclei):
        r_major = rng.uniform(6, 14)
        r_minor = r_major * rng.uniform(0.6, 1.0)
        rr, cc = ellipse(
            rng.uniform(0, height), rng.uniform(0, width), r_major, r_minor,
            shape=shape, rotation=rng.uniform(0, np.pi),
        )
        signal[rr, cc] = np.maximum(signal[rr, cc], rng.uniform(0.5, 1.0))
        mask[rr, cc] = 1
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = 0.15 + 0.1 * (xx / width) + 0.05 * (yy / height)
    image = gaussian(signal, sigma=1.5) + background
    image += rng.normal(0.0, 0.04, size=shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    return (image * 255).astype(np.uint8), mask


def make_sample_data():
    """npe2 sample-data command: one synthetic nuclei image layer."""
    image, _ = synthetic_nuclei()
    return [(image, {"name": "nuclei (synthetic)"}, "image")]
