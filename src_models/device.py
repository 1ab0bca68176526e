"""Choice of the compute device: CUDA, then Apple MPS, then CPU, overridable by name."""
from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["pick_device", "DEVICE_CHOICES"]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``name``.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda", "mps"} or torch.device
        ``"auto"`` (or None) picks CUDA when present, then MPS, then the CPU.

    Raises
    ------
    InputError
        When a device is asked for by name but is not available on this machine.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("CUDA was asked for but no CUDA GPU is available here; use --device cpu or auto.")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise InputError("Apple MPS was asked for but is not available here; use --device cpu or auto.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"Unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
