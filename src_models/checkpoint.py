"""Safe model files: safetensors weights plus JSON metadata, in one file.

Reading parses a JSON header and raw tensors; nothing in the file is executed, so a pickle
with a payload is refused as "not a napari-unet model" without being run. Every field of the
metadata is checked, and the tensor shapes the header declares are compared with those the
architecture needs (built on PyTorch's "meta" device, which allocates nothing) before any
network is allocated, so a small file cannot ask for gigabytes. Writing is atomic.

This module knows the parts of a model (`ModelParts`), not `UNetModel`, which builds on it.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as serialize

from .classmap import MAX_CLASS_ID, ClassMap
from .config import UNetConfig
from .errors import InputError, ModelFileError, WriteError
from .features import FilterFeatures
from .images import Normalization
from .model import UNet

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelParts", "read_metadata", "read_model", "write_model"]

FORMAT = "napari-unet"
FORMAT_VERSION = 1

#: Upper bounds on architecture numbers a model file may state (far above any preset).
_MAX_CHANNELS = 4096
_MAX_BASE_WIDTH = 4096


@dataclass(frozen=True)
class ModelParts:
    """What a model file holds: the network, its classes, its input scaling and its records.

    Parameters
    ----------
    net : UNet
        The network, its ``config`` giving the architecture.
    class_map : ClassMap
        Label ids of the network's outputs, in order.
    normalization : Normalization
        Intensity scaling of every input image.
    info : dict
        Free-form JSON record of how the model was trained.
    class_prior : numpy.ndarray or None
        Class frequencies ``(K,)`` prediction weighs by; None for equal weights.
    """

    net: UNet
    class_map: ClassMap
    normalization: Normalization
    info: dict
    class_prior: np.ndarray | None = None


def _clean_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict on the CPU with ``torch.compile`` / DDP wrappers unwrapped."""
    state = {}
    for key, value in net.state_dict().items():
        for prefix in ("_orig_mod.", "module."):
            key = key.removeprefix(prefix)
        state[key] = value.detach().to("cpu").contiguous()
    return state


def write_model(path, parts: ModelParts) -> None:
    """Write ``parts`` to ``path``: under a hidden name beside it, then renamed, so it is complete or absent.

    An `OSError` (full disk, no permission) becomes `WriteError` with a sentence; no temporary
    file is left behind, whatever the failure.
    """
    path = Path(path)
    config = parts.net.config
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "architecture": config.to_dict(),
        "classes": parts.class_map.to_dict(),
        "normalization": parts.normalization.to_dict(),
        "info": parts.info,
        "class_prior": None if parts.class_prior is None else [float(v) for v in parts.class_prior],
    }
    header = {FORMAT: json.dumps(meta)}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = serialize(_clean_state(parts.net), metadata=header)  # in memory: its I/O errors are OSErrors
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the rename makes it the model file
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a model file is an ordinary file
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise WriteError(f"Could not write the model to {path}: {exc.strerror or exc}; free some space or choose "
                         "another folder.", path=path) from None
    finally:  # every exception, KeyboardInterrupt included
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    """The process's umask, read without changing it (Linux); 0o022 where it cannot be read."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def read_metadata(path) -> dict:
    """The JSON metadata of a model file, or `ModelFileError` with a sentence.

    Checks that the file is a napari-unet model of a version this program reads; the fields
    themselves are checked by `read_model`.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}. Check the path, or train a model first.")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for foreign files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise ModelFileError(
            f"{path} is not a napari-unet model file (it is not in safetensors format: {reason}); "
            "choose a file saved by napari-unet.") from None
    if FORMAT not in header:
        raise ModelFileError(f"{path} is a safetensors file but not a napari-unet model (no metadata found).")
    try:
        meta = json.loads(header[FORMAT])
    except (json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{path} has corrupt napari-unet metadata; the file is damaged.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} was written by a different program; choose a file saved by napari-unet.")
    version = meta.get("version", FORMAT_VERSION)
    if not _is_int(version) or version < 1:
        raise ModelFileError(f"{path} has an invalid format version ({version!r}); the file is damaged.")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer napari-unet (format {version}); update napari-unet.")
    return meta


def read_model(path, device=None) -> ModelParts:
    """Read the parts of a model written by `write_model`, on the CPU.

    ``device`` is accepted for symmetry and not used: the caller moves the network. Raises
    `ModelFileError` with one sentence for any file that is missing, foreign, damaged or whose
    metadata disagrees with its weights, before allocating a network for it.
    """
    path = Path(path)
    meta = read_metadata(path)
    config = _architecture(path, meta.get("architecture"))
    class_map = _classes(path, meta.get("classes"), config.n_classes)
    normalization = _normalization(path, meta.get("normalization"))
    features = normalization.features
    if features is not None:
        channels = features.image_channels(config.in_channels)
        if channels is None or len(features.mean) != channels * features.per_channel:
            raise _damaged(path, "filter features that do not fit the network's input channels")
    info = meta.get("info")
    if info is None:
        info = {}
    if not isinstance(info, dict):
        raise _damaged(path, f"its training record is a {type(info).__name__}, not a mapping")
    ridge = info.get("separator_ridge")
    if ridge is not None and not (_is_number(ridge) and 0 < ridge <= 1):
        raise _damaged(path, f"a separator ridge of {ridge!r}, not a number in (0, 1]")
    class_prior = _class_prior(path, meta.get("class_prior"), config.n_classes)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())  # a safetensors handle, not a dict
            _check_shapes(path, config, {key: tuple(f.get_slice(key).get_shape()) for key in keys})
            net = UNet(config)
            net.load_state_dict({key: f.get_tensor(key) for key in keys}, strict=True)
    except ModelFileError:
        raise
    except Exception as exc:  # safetensors and load_state_dict raise several types for damaged data
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise _damaged(path, reason) from None
    return ModelParts(net, class_map, normalization, dict(info), class_prior)


def _damaged(path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{path} is a damaged napari-unet model ({what}); re-save or re-train it.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _architecture(path: Path, data) -> UNetConfig:
    """The `UNetConfig` the metadata states, every field checked for type and range."""
    if not isinstance(data, dict):
        raise _damaged(path, "no architecture record")
    for key in ("in_channels", "n_classes", "depth", "base_width", "dims"):
        if key in data and not _is_int(data[key]):
            raise _damaged(path, f"architecture field {key} is {data[key]!r}, not a whole number")
    for key in ("norm", "up"):
        if key in data and not isinstance(data[key], str):
            raise _damaged(path, f"architecture field {key} is {data[key]!r}, not a name")
    if "dropout" in data and not _is_number(data["dropout"]):
        raise _damaged(path, f"architecture field dropout is {data['dropout']!r}, not a number")
    for key in ("z_pooling", "z_kernels"):
        value = data.get(key)
        if value is not None and not (isinstance(value, list) and len(value) <= 7 and all(map(_is_int, value))):
            raise _damaged(path, f"architecture field {key} is {value!r}, not a short list of whole numbers")
    limits = {"in_channels": _MAX_CHANNELS, "base_width": _MAX_BASE_WIDTH, "n_classes": MAX_CLASS_ID + 1}
    for key, top in limits.items():
        if data.get(key, 0) > top:
            raise _damaged(path, f"architecture field {key} is {data[key]}, above the limit of {top}")
    try:
        return UNetConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise _damaged(path, str(exc).rstrip(".")) from None


def _classes(path: Path, data, n_classes: int) -> ClassMap:
    """The `ClassMap` the metadata states, which must have one id per network output."""
    if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
        raise _damaged(path, "no list of class ids")
    ids, names = data["ids"], data.get("names", [])
    if not all(_is_int(i) for i in ids):
        raise _damaged(path, "class ids that are not whole numbers")
    if any(i < 0 or i > MAX_CLASS_ID for i in ids):
        raise _damaged(path, f"a class id outside 0 to {MAX_CLASS_ID}")
    if len(set(ids)) != len(ids):
        raise _damaged(path, "the same class id twice")
    if len(ids) != n_classes:
        raise _damaged(path, f"{len(ids)} class ids for a network with {n_classes} outputs")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) not in (0, len(ids)):
        raise _damaged(path, "class names that do not match its ids")
    return ClassMap(tuple(ids), tuple(names))


def _normalization(path: Path, data) -> Normalization:
    """The `Normalization` the metadata states (percentiles with 0 <= low < high <= 100)."""
    if data is None:
        return Normalization()
    if not isinstance(data, dict) or data.get("kind", "percentile") != "percentile":
        raise _damaged(path, "an unknown intensity normalisation")
    low, high = data.get("low", Normalization.low), data.get("high", Normalization.high)
    if not (_is_number(low) and _is_number(high) and 0 <= low < high <= 100):
        raise _damaged(path, f"normalisation percentiles {low!r} and {high!r}, which need 0 <= low < high <= 100")
    features = None
    if data.get("features") is not None:
        try:
            features = FilterFeatures.from_dict(data["features"])
        except (InputError, TypeError, ValueError) as error:
            raise _damaged(path, f"filter features that do not hold together ({error})") from None
    return Normalization(float(low), float(high), features)


def _class_prior(path: Path, data, n_classes: int) -> np.ndarray | None:
    """The class prior the metadata states: None, or ``n_classes`` finite non-negative numbers, not all 0."""
    if data is None:
        return None
    if not isinstance(data, list) or len(data) != n_classes or not all(_is_number(v) and v >= 0 for v in data) \
            or sum(data) <= 0:
        raise _damaged(path, f"a class prior that is not {n_classes} non-negative numbers")
    return np.asarray(data, dtype=np.float32)


def _check_shapes(path: Path, config: UNetConfig, found: dict[str, tuple[int, ...]]) -> None:
    """Refuse weights whose names or shapes differ from what ``config`` builds, before anything is allocated."""
    with torch.device("meta"):  # shapes only: no memory, however large the stated network
        expected = {key: tuple(value.shape) for key, value in UNet(config).state_dict().items()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        names = ", ".join((missing or extra)[:3])
        raise _damaged(path, f"its weights do not match its architecture: {'missing' if missing else 'unexpected'} "
                             f"{names}")
    for key, shape in expected.items():
        if found[key] != shape:
            raise _damaged(path, f"its weights do not match its architecture: {key} has shape {found[key]} "
                                 f"where the architecture needs {shape}")
