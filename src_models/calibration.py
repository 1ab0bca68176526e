"""Class-prior correction of predicted probabilities (label shift; Saerens et al., Neural Comput. 2002).

Training balances the classes (each painted class weighs the same), so the network's
probabilities assume equal class frequencies. Real images are not balanced — in EM, say,
membranes cover a quarter of the pixels — and unpainted transition pixels then lean towards
the rarer class. Expectation-maximisation on the network's own predictions for the
training images estimates the real frequencies; prediction re-weights by them.
"""
from __future__ import annotations

import numpy as np

__all__ = ["estimate_class_prior", "apply_class_prior"]


def estimate_class_prior(probabilities, iterations: int = 50, tol: float = 1e-5,
                         floor: float = 0.1) -> np.ndarray:
    """Estimate class frequencies from probabilities made under a uniform prior.

    No class is given less than ``floor / K``: an under-trained network can make the
    estimate run away (all background), which would erase every object from predictions.

    Parameters
    ----------
    probabilities : sequence of ndarray ``(K, ...)``
        Softmax outputs for the pixels of one or more images.
    floor : float
        Least frequency of a class, as a fraction of the uniform ``1 / K``.

    Returns
    -------
    ndarray ``(K,)``
        Frequencies summing to 1.
    """
    probs = [np.asarray(p, dtype=np.float64).reshape(p.shape[0], -1) for p in probabilities]
    if not probs:
        raise ValueError("No probabilities given to estimate class frequencies from.")
    k = probs[0].shape[0]
    prior = np.full(k, 1.0 / k)
    for _ in range(iterations):
        total = np.zeros(k)
        count = 0
        for p in probs:
            q = p * (prior * k)[:, None]
            q /= np.maximum(q.sum(0, keepdims=True), 1e-12)
            total += q.sum(1)
            count += q.shape[1]
        new = total / max(count, 1)
        if np.abs(new - prior).max() < tol:
            prior = new
            break
        prior = new
    return (1.0 - floor) * prior + floor / k  # a mixture with uniform: every class keeps floor / K


def apply_class_prior(probabilities: np.ndarray, prior, axis: int = 1) -> np.ndarray:
    """Re-weight probabilities made under a uniform prior by ``prior`` along ``axis``; renormalised."""
    prior = np.asarray(prior, dtype=np.float32)
    shape = [1] * probabilities.ndim
    shape[axis] = prior.size
    adjusted = probabilities * (prior * prior.size).reshape(shape)
    return adjusted / np.maximum(adjusted.sum(axis, keepdims=True), 1e-12)
