"""napari-unet's engine: a U-Net trained from painted labels, pure PyTorch and NumPy.

No napari or Qt import anywhere in this package; use it from a script, a notebook or
the ``napari-unet`` command line. Two front doors: `make_trainer` trains a model for a
`Task`, `UNetModel.segment` segments with it.

>>> trainer = make_trainer([image], [painted], task=Task("classes"))    # doctest: +SKIP
>>> for progress in trainer.run(): pass                                  # doctest: +SKIP
>>> masks = trainer.result.model.segment(new_image).labels               # doctest: +SKIP
"""
from .batch import BatchReport, Skipped, list_images, mask_path, segment_file, segment_files
from .classmap import MAX_CLASS_ID, UNPAINTED, ClassMap
from .config import (
    DEFAULT_TIME_BUDGET,
    MIN_TILE_SIZE,
    PRESET_CHOICES,
    PRESETS,
    TileConfig,
    TrainConfig,
    UNetConfig,
    preset_config,
)
from .device import DEVICE_CHOICES, PRECISION_CHOICES, pick_device
from .distributed_training import ProcessGroup
from .errors import Cancelled, InputError, ModelFileError, WriteError
from .images import ImageView, Normalization, guess_channel_axis
from .io import STREAM_PIXELS, read_image, read_labels, write_labels_tiff
from .model import UNet
from .segmentation import PLANE_CONTEXT, Segmentation
from .segmenter import UNetModel
from .task import Mode, Task
from .training import STROKE_STEPS, Progress, Trainer, TrainResult, fit, make_trainer

__all__ = [
    "ClassMap", "MAX_CLASS_ID", "UNPAINTED", "DEFAULT_TIME_BUDGET", "MIN_TILE_SIZE", "PRESETS", "PRESET_CHOICES",
    "TileConfig", "TrainConfig", "UNetConfig", "preset_config", "DEVICE_CHOICES", "PRECISION_CHOICES",
    "pick_device", "ProcessGroup", "Cancelled", "InputError", "ModelFileError", "WriteError", "ImageView",
    "Normalization", "guess_channel_axis", "STREAM_PIXELS", "read_image", "read_labels", "write_labels_tiff", "UNet",
    "PLANE_CONTEXT", "Segmentation", "UNetModel", "Mode", "Task", "STROKE_STEPS", "Progress", "Trainer",
    "TrainResult", "fit", "make_trainer", "BatchReport", "Skipped", "list_images", "mask_path", "segment_file",
    "segment_files",
]
__version__ = "0.1.0"
