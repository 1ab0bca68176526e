"""Safe model files: safetensors weights plus JSON metadata, in one file.

Loading parses a JSON header and raw tensors; nothing in the file is executed, so a
pickle with a payload is refused as "not a napari-unet model" without being run.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .classmap import ClassMap
from .config import UNetConfig
from .errors import ModelFileError
from .images import Normalization
from .model import UNet

__all__ = ["save_model", "load_model", "FORMAT", "FORMAT_VERSION"]

FORMAT = "napari-unet"
FORMAT_VERSION = 1


def _clean_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict on the CPU with ``torch.compile`` / DDP wrappers unwrapped."""
    state = {}
    for key, value in net.state_dict().items():
        for prefix in ("_orig_mod.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value.detach().to("cpu").contiguous()
    return state


def save_model(model, path) -> None:
    """Write ``model`` (a `UNetModel`) to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "architecture": model.config.to_dict(),
        "classes": model.class_map.to_dict(),
        "normalization": model.normalization.to_dict(),
        "info": model.info,
        "class_prior": None if model.class_prior is None else [float(v) for v in model.class_prior],
    }
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(_clean_state(model.net), tmp, metadata={FORMAT: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_metadata(path) -> dict:
    """The JSON metadata of a model file, or `ModelFileError` with a sentence."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}. Check the path, or train a model first.")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for foreign files
        raise ModelFileError(
            f"{path} is not a napari-unet model file (it is not in safetensors format: {exc}). "
            "Choose a file saved by napari-unet.") from None
    if FORMAT not in header:
        raise ModelFileError(f"{path} is a safetensors file but not a napari-unet model (no metadata found).")
    try:
        meta = json.loads(header[FORMAT])
    except json.JSONDecodeError:
        raise ModelFileError(f"{path} has corrupt napari-unet metadata; the file is damaged.") from None
    if meta.get("format") != FORMAT or int(meta.get("version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer or different program; update napari-unet.")
    return meta


def load_model(path, device="auto"):
    """Read a `UNetModel` from ``path`` on ``device``."""
    from .segmenter import UNetModel

    meta = read_metadata(path)
    try:
        config = UNetConfig.from_dict(meta["architecture"])
        class_map = ClassMap.from_dict(meta["classes"])
        normalization = Normalization.from_dict(meta.get("normalization", {}))
        net = UNet(config)
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        net.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path} is a damaged napari-unet model ({exc}); re-save or re-train it.") from None
    return UNetModel(net, class_map, normalization, device, meta.get("info", {}), meta.get("class_prior"))
