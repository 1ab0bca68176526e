"""napari-unet's engine: a U-Net trained from painted labels, pure PyTorch and NumPy.

No napari or Qt import anywhere in this package; use it from a script, a notebook or
the ``napari-unet`` command line.

>>> from src_models import Trainer, TrainConfig
>>> result = fit(image, painted, config=TrainConfig(time_budget=60))   # doctest: +SKIP
>>> masks = result.model.predict(new_image)                             # doctest: +SKIP
"""
from .classmap import ClassMap, UNPAINTED
from .config import PRESETS, TileConfig, TrainConfig, UNetConfig, preset_config
from .device import pick_device
from .errors import Cancelled, InputError, ModelFileError
from .images import ImageView, Normalization, guess_channel_axis
from .io import read_image, write_labels_tiff
from .model import UNet
from .segmenter import UNetModel
from .training import Progress, Trainer, TrainResult, fit

__all__ = [
    "ClassMap", "UNPAINTED", "PRESETS", "TileConfig", "TrainConfig", "UNetConfig", "preset_config",
    "pick_device", "Cancelled", "InputError", "ModelFileError", "ImageView", "Normalization", "guess_channel_axis",
    "read_image", "write_labels_tiff", "UNet", "UNetModel", "Progress", "Trainer", "TrainResult", "fit",
]
__version__ = "0.1.0"
