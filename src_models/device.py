"""Choice of the compute device (CUDA, then Apple MPS, then CPU) and of its arithmetic precision."""
from __future__ import annotations

import contextlib
import functools

import torch

from .errors import InputError

__all__ = ["pick_device", "DEVICE_CHOICES", "PRECISION_CHOICES", "autocast", "uses_bf16"]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "bf16", "fp32")


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
            raise InputError("CUDA was asked for but no CUDA GPU is available here; use the CPU or auto.", setting="device")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise InputError("Apple MPS was asked for but is not available here; use the CPU or auto.", setting="device")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"Unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}.", setting="device")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX), where oneDNN's
    bf16 convolutions run about twice as fast as fp32 ones. Read from ``/proc/cpuinfo``;
    False where it cannot be read (macOS, Windows), so those stay in fp32."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def uses_bf16(device: torch.device, precision: str = "auto", cpu_auto: bool = True) -> bool:
    """Whether the network runs under bf16 autocast on ``device``.

    ``precision``: ``"fp32"`` never, ``"bf16"`` always (CUDA or CPU), ``"auto"`` on CUDA and
    on CPUs with hardware bf16 (unless ``cpu_auto`` is False: 3D networks, whose bf16
    training on the CPU (torch 2.13, oneDNN) turned the loss into NaN within a few steps).
    """
    if precision not in PRECISION_CHOICES:
        raise InputError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}.",
                         setting="precision")
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return False
    if precision == "bf16" or device.type == "cuda":
        return True
    return cpu_auto and cpu_has_native_bf16()


def autocast(device: torch.device, precision: str = "auto", cpu_auto: bool = True):
    """The context the network's forward pass runs in: bf16 autocast where `uses_bf16`, else nothing."""
    if uses_bf16(device, precision, cpu_auto):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
