"""Frozen configuration records for the network, training and tiled prediction.

Each has ``to_dict``/``from_dict`` so it can be stored as JSON beside the weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import math

import numpy as np

from .device import DEVICE_CHOICES, PRECISION_CHOICES
from .errors import InputError

__all__ = ["UNetConfig", "TrainConfig", "TileConfig", "PRESETS", "PRESET_CHOICES", "DEFAULT_TIME_BUDGET",
           "MIN_TILE_SIZE", "preset_config", "preset_name", "z_kernels_for", "z_pooling_for"]

#: Seconds a training without a step limit (full masks, 3D) runs unless told otherwise.
DEFAULT_TIME_BUDGET = 120.0
#: Smallest tile side for prediction: two halos of 32 pixels and a core of 32.
MIN_TILE_SIZE = 96


class _Record:
    """Shared JSON round trip for the frozen config dataclasses."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class UNetConfig(_Record):
    """Architecture of a U-Net (Ronneberger et al. 2015, with same-padding).

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for grey, 3 for RGB).
    n_classes : int
        Output classes K; the head is a 1x1 convolution to K logits.
    depth : int
        Number of 2x2 max-pool steps in the contracting path.
    base_width : int
        Feature channels of the first level; each level doubles it.
    norm : {"batch", "group", "none"}
        Normalisation after each 3x3 convolution.
    up : {"transpose", "bilinear"}
        Up-sampling in the expanding path.
    dropout : float
        Dropout probability at the bottleneck (the paper's drop-out layers).
    dims : {2, 3}
        2: the network sees one plane ``(B, C, H, W)``; 3: a block of a volume
        ``(B, C, Z, H, W)`` with 3x3x3 convolutions (a 3D U-Net).
    z_pooling : tuple of int, optional
        3D only: the pooling factor along Z (1 or 2) of each of the ``depth`` steps; in-plane
        it is always 2. None pools Z at every step (isotropic voxels); `z_pooling_for` derives
        it from the voxel size, pooling Z only where it is not much coarser than Y and X.
    z_kernels : tuple of int, optional
        3D only: the convolutions' kernel size along Z (1 or 3) at each level, from the
        first (full resolution) to the bottleneck (``depth + 1`` values). None: 3 everywhere.
        Where Z is much coarser than Y and X a 1x3x3 kernel costs a third and mixes nothing
        that is not there (`z_pooling_for` gives both).
    """

    in_channels: int
    n_classes: int
    depth: int = 3
    base_width: int = 16
    norm: str = "batch"
    up: str = "transpose"
    dropout: float = 0.5
    dims: int = 2
    z_pooling: tuple[int, ...] | None = None
    z_kernels: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {self.in_channels}.")
        if self.n_classes < 2:
            raise ValueError(f"A segmentation model needs at least 2 classes, got {self.n_classes}.")
        if not 1 <= self.depth <= 6:
            raise ValueError(f"depth must be between 1 and 6, got {self.depth}.")
        if self.base_width < 1:
            raise ValueError(f"base_width must be positive, got {self.base_width}.")
        if self.norm not in ("batch", "group", "none"):
            raise ValueError(f"norm must be 'batch', 'group' or 'none', got {self.norm!r}.")
        if self.up not in ("transpose", "bilinear"):
            raise ValueError(f"up must be 'transpose' or 'bilinear', got {self.up!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims}.")
        if self.z_pooling is not None:
            z_pooling = tuple(int(f) for f in self.z_pooling)  # JSON gives a list
            object.__setattr__(self, "z_pooling", z_pooling)
            if self.dims != 3:
                raise ValueError("z_pooling is for 3D networks (dims=3).")
            if len(z_pooling) != self.depth or not set(z_pooling) <= {1, 2}:
                raise ValueError(f"z_pooling needs one factor, 1 or 2, per level ({self.depth}); got {z_pooling}.")
        if self.z_kernels is not None:
            z_kernels = tuple(int(k) for k in self.z_kernels)
            object.__setattr__(self, "z_kernels", z_kernels)
            if self.dims != 3:
                raise ValueError("z_kernels is for 3D networks (dims=3).")
            if len(z_kernels) != self.depth + 1 or not set(z_kernels) <= {1, 3}:
                raise ValueError(f"z_kernels needs one size, 1 or 3, per level ({self.depth + 1}); got {z_kernels}.")

    @property
    def size_multiple(self) -> int:
        """Input sizes (Y and X) that are multiples of this keep every pooling step exact."""
        return 2 ** self.depth

    @property
    def pool_factors(self) -> tuple[int, ...]:
        """Z pooling factor of each level (all 2 for 2D networks, where Z does not exist)."""
        if self.dims == 2 or self.z_pooling is None:
            return (2,) * self.depth
        return self.z_pooling

    @property
    def kernel_depths(self) -> tuple[int, ...]:
        """Kernel size along Z of each level's convolutions (3D; all 3 unless ``z_kernels``)."""
        return self.z_kernels if self.z_kernels is not None else (3,) * (self.depth + 1)

    @property
    def z_multiple(self) -> int:
        """3D: block depths (Z) that are multiples of this keep every pooling step exact."""
        return int(np.prod(self.pool_factors)) if self.dims == 3 else 1


def z_pooling_for(z_ratio: float, depth: int) -> tuple[int, ...]:
    """Z pooling factors for voxels ``z_ratio`` times as deep as they are wide (as nnU-Net does).

    Y and X are pooled at every level; Z only at the levels where its current spacing is at
    most twice the in-plane one, so coarse Z is kept until Y and X have caught up.
    ``z_pooling_for(1, 3) == (2, 2, 2)``; ``z_pooling_for(5, 3) == (1, 1, 2)``.
    """
    return _anisotropic_levels(z_ratio, depth)[0]


def z_kernels_for(z_ratio: float, depth: int) -> tuple[int, ...]:
    """Kernel sizes along Z per level (1 or 3): 3 where Z spacing is at most twice the
    in-plane one at that level. ``z_kernels_for(1, 3) == (3, 3, 3, 3)``;
    ``z_kernels_for(12.5, 3) == (1, 1, 1, 3)``."""
    return _anisotropic_levels(z_ratio, depth)[1]


def _anisotropic_levels(z_ratio: float, depth: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if z_ratio <= 0:
        raise ValueError(f"z_ratio (Z voxel size / XY voxel size) must be positive, got {z_ratio}.")
    pools, kernels, z, xy = [], [], float(z_ratio), 1.0
    for level in range(depth + 1):
        fine = z <= 2 * xy
        kernels.append(3 if fine else 1)
        if level < depth:
            pools.append(2 if fine else 1)
            z, xy = z * pools[-1], xy * 2
    return tuple(pools), tuple(kernels)


#: Named architectures: ``small`` trains interactively on a laptop CPU, ``large`` is for a GPU.
PRESETS: dict[str, dict] = {
    "small": {"depth": 3, "base_width": 16},
    "large": {"depth": 4, "base_width": 32},
}
#: What a user may choose as the size of a new network: ``auto`` picks by task and device.
PRESET_CHOICES = ("auto", *PRESETS)


def preset_name(name: str, device_type: str = "cpu") -> str:
    """The preset ``name`` stands for: ``"auto"`` is ``large`` on CUDA and ``small`` elsewhere."""
    if name == "auto":
        return "large" if device_type == "cuda" else "small"
    return name


def preset_config(name: str, in_channels: int, n_classes: int, device_type: str = "cpu") -> UNetConfig:
    """Return the `UNetConfig` of a named preset; ``"auto"`` picks by device type (`preset_name`)."""
    name = preset_name(name, device_type)
    if name not in PRESETS:
        raise InputError(f"Unknown preset {name!r}; choose one of {', '.join(PRESET_CHOICES)}.", setting="preset")
    return UNetConfig(in_channels=in_channels, n_classes=n_classes, **PRESETS[name])


@dataclass(frozen=True)
class TrainConfig(_Record):
    """How to train from painted labels.

    Training ends after ``steps`` steps or ``time_budget`` seconds, whichever comes first.
    ``steps=None`` means the default length: when a 2D model learns from strokes (less than
    half of the painted slices painted, not ``dense``), 1,500 steps (`training.STROKE_STEPS`),
    since longer training from strokes memorises them; otherwise no step limit.
    ``time_budget=None`` means no clock when there is a step limit, so that a slow CPU gives the
    same model as a fast one, only later; without a step limit (full masks, 3D) it means
    `DEFAULT_TIME_BUDGET` seconds.
    ``dense=True`` treats label 0 as a class (background) instead of "not painted".
    ``preset`` names the size of a new network (`PRESETS`); ``"auto"`` is the small one when a 2D
    model learns from strokes, on any device (the large one learnt less from them in 1,500 steps;
    `training.preset_for`), and for full masks the large one on CUDA, the small one elsewhere.

    Learning from few strokes: ``smoothness_weight`` adds `pairwise_smoothness_loss`
    (neighbours of similar intensity share a class); ``pseudo_labels`` re-labels confident
    unpainted pixels of the training images half-way and three quarters through training
    (weight ``pseudo_weight``, confidence above ``pseudo_threshold``); the user's strokes
    are never changed. ``skeleton_weight`` adds `skeleton_recall_loss` (the network must recall
    the centre lines of every painted stroke); off by default: on ISBI strokes it was no better
    at weight 1 and lost at 5 (bench/JOURNAL.md), for about 1.8 times the training time on the CPU.
    ``class_prior`` estimates, after training, how frequent each class
    really is on the training images (`calibration`), and prediction weighs by it instead
    of the equal weights the balanced loss implies; None means on for models of at most
    3 classes (it helped on ISBI; with CamVid's 11 classes the estimate went wrong), except
    for models that separate regions (below). ``channels_last=None`` means on for CUDA and CPU.

    ``border_weight`` adds the U-Net paper's weights (``border_w0``, ``border_sigma``) around
    the connected regions of the last class, stressing thin gaps between them (ISBI: the
    membranes between cells); None means on when exactly two classes are painted.
    ``separate_regions`` makes the model's predictions draw the first class as thin
    separators that keep regions of the second apart (`separation.separate_regions`,
    `UNetModel.separates_regions`); None means decided after training for 2D models trained
    with border weights: on when the predicted first class forms lines (membranes), off
    when it is a background around objects. ``separator_keep``: after every training the
    separators' ridge is fitted so that they keep this share of the pixels the network finds
    most likely separator on the painted slices (`separation.fit_ridge`); a fixed ridge drew
    thinner membranes after every round of corrections. None keeps the fixed ridge
    (`separation.DEFAULT_RIDGE`).

    3D: ``dims=3`` makes a new model a 3D U-Net trained on blocks of ``patch_depth`` planes
    of a stack (Z, Y, X); ``z_ratio`` (Z voxel size / XY voxel size) decides where it pools Z
    (`z_pooling_for`). A given model's own ``dims`` wins.

    Objects mode: ``fill_reach`` (pixels) extends the strokes into the unpainted band between
    background and object strokes, following the image's edges (`objects.fill_between_strokes`);
    0 turns it off. Without it, a model trained from strokes draws every object too large.
    ``object_threshold`` is the object probability (interior + boundary) a pixel needs to be
    drawn as part of an object; None means fitted after training from strokes so that the
    objects' contours lie on the image's edges on the painted slices
    (`objects.fit_foreground_threshold`; strokes painted to the objects' edges with a wide brush
    otherwise make every object grow), and 0.5 after training on full masks.

    ``ema_decay`` (0 = off) keeps an exponential moving average of the weights (and of the
    batch-norm statistics) during training, over roughly the last ``1 / (1 - ema_decay)``
    steps, and the model ends with the averaged weights instead of the last step's. Off by
    default: on ISBI strokes it was no better at 1,500 steps and held up better, but still
    lost Rand error, from 1,500 to 3,000 (bench/JOURNAL.md).

    ``filter_features`` gives a new 2D network the random forest's filter responses
    (`features.FilterFeatures`: smoothed intensity, edges and texture at scales 1-16) as extra
    input channels beside the image; the recipe is stored with the model. Off by default: on the
    tuning split of ``bench/protocol.py`` it lost on every stroke style (bench/JOURNAL.md).

    ``precision``: ``"auto"`` runs the network under bf16 autocast on CUDA and on CPUs with
    hardware bf16, ``"bf16"``/``"fp32"`` force it (`device.uses_bf16`). The time budget's
    default is `DEFAULT_TIME_BUDGET`. Every field is checked; a value out of range raises
    `InputError` naming the allowed range.

    ``retain_weight`` (0 = off): when training goes on from a model with the same classes (*Train*
    after corrections), the unpainted pixels of every patch are also pulled towards the answers of
    the model training started from (soft targets, this weight against the painted pixels' loss),
    so that corrections change the model where they are painted rather than everywhere. It costs
    one more forward pass a step. 15 was chosen on the tuning split of ``bench/correction_loop.py``
    (three rounds of corrections at the default length): with weight 5 a round lost up to 0.11
    Rand error, with 15 at most 0.014 (bench/JOURNAL.md).

    ``fine_tune_lr``: the peak learning rate when training goes on from a model (*Train* after
    corrections), in place of ``lr``; None means ``lr``. A quarter of ``lr`` did not keep the
    correction loop of ``bench/correction_loop.py`` from losing at the third round
    (bench/JOURNAL.md).

    ``correction_share`` (0 = off): when training goes on from a model with the same classes, about
    this share of the patches is centred on the painted pixels that model draws wrong (the user's
    corrections) instead of on any painted pixel. Off by default: at 0.5, three rounds of
    corrections on the tuning split of ``bench/correction_loop.py`` ended lower than without it
    (bench/JOURNAL.md).

    ``micro_batches`` passes of ``batch_size`` patches make one step (gradient accumulation):
    a step learns from ``batch_size x micro_batches`` patches in the memory of ``batch_size``.
    Pass ``j`` draws its patches, augmentation and drop-out from its own random stream (seed
    ``seed + j``), as rank ``j`` of a distributed training does (`distributed_training`), so one
    process with ``micro_batches=N`` repeats an N-process training (batch norm, per pass or per
    process, alike); 1 is the ordinary step.
    """

    steps: int | None = None
    time_budget: float | None = None
    batch_size: int = 4
    patch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dense: bool = False
    dice_weight: float = 0.0
    border_weight: bool | None = None
    border_w0: float = 10.0
    border_sigma: float = 5.0
    augment: bool = True
    elastic: bool = True
    seed: int | None = 0
    preset: str = "auto"
    device: str = "auto"
    channels_last: bool | None = None
    grad_clip: float = 1.0
    smoothness_weight: float = 0.0
    smoothness_sigma: float = 0.15
    skeleton_weight: float = 0.0
    pseudo_labels: bool = False
    pseudo_threshold: float = 0.9
    pseudo_weight: float = 0.5
    class_prior: bool | None = None
    separate_regions: bool | None = None
    fill_reach: int = 8
    object_threshold: float | None = None
    dims: int = 2
    z_ratio: float = 1.0
    patch_depth: int = 16
    ema_decay: float = 0.0
    precision: str = "auto"
    filter_features: bool = False
    micro_batches: int = 1
    retain_weight: float = 15.0
    separator_keep: float | None = 0.65
    fine_tune_lr: float | None = None
    correction_share: float = 0.0

    def __post_init__(self):
        if self.steps is not None:
            _check_number("steps", self.steps, 1, 10**9, integer=True)
        if self.time_budget is not None:
            _check_number("time_budget", self.time_budget, 1e-3, 1e7, unit=" seconds")
        _check_number("batch_size", self.batch_size, 1, 1024, integer=True)
        _check_number("micro_batches", self.micro_batches, 1, 1024, integer=True)
        _check_number("patch_size", self.patch_size, 16, 4096, integer=True, unit=" pixels")
        _check_number("lr", self.lr, 1e-8, 10.0)
        _check_number("fill_reach", self.fill_reach, 0, 1000, integer=True, unit=" pixels")
        _check_number("z_ratio", self.z_ratio, 0.01, 1000.0)
        _check_number("patch_depth", self.patch_depth, 1, 1024, integer=True, unit=" planes")
        _check_number("ema_decay", self.ema_decay, 0.0, 0.99999)
        _check_number("retain_weight", self.retain_weight, 0.0, 100.0)
        _check_number("skeleton_weight", self.skeleton_weight, 0.0, 100.0)
        _check_number("correction_share", self.correction_share, 0.0, 1.0)
        if self.fine_tune_lr is not None:
            _check_number("fine_tune_lr", self.fine_tune_lr, 1e-8, 10.0)
        if self.separator_keep is not None:
            _check_number("separator_keep", self.separator_keep, 1e-3, 1.0)
        if self.object_threshold is not None:
            _check_number("object_threshold", self.object_threshold, 0.5, 0.99)
        if self.seed is not None:
            _check_number("seed", self.seed, 0, 2**32 - 1, integer=True)
        if self.dims not in (2, 3):
            raise InputError(f"dims must be 2 or 3, got {self.dims}.", setting="dims")
        if self.preset not in PRESET_CHOICES:
            raise InputError(f"Unknown preset {self.preset!r}; choose one of {', '.join(PRESET_CHOICES)}.",
                             setting="preset")
        if self.precision not in PRECISION_CHOICES:
            raise InputError(f"Unknown precision {self.precision!r}; choose one of {', '.join(PRECISION_CHOICES)}.",
                             setting="precision")
        if not (self.device in DEVICE_CHOICES or str(self.device).startswith("cuda:")):
            raise InputError(f"Unknown device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)}.",
                             setting="device")


def _check_number(name: str, value, low, high, *, integer: bool = False, unit: str = "") -> None:
    """Refuse ``value`` unless it is a (whole, with ``integer``) finite number in ``[low, high]``,
    with a sentence that names the allowed range; ``setting`` is ``name``."""
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (not integer or float(value).is_integer()) and low <= value <= high
    if not ok:
        raise InputError(f"{name} must be {kind} from {low:g} to {high:g}{unit}, got {value!r}.", setting=name)


@dataclass(frozen=True)
class TileConfig(_Record):
    """Overlap-tile prediction.

    Parameters
    ----------
    tile_size : int
        Side of the square tile fed to the network, halo included.
    halo : int
        Context on each side of a tile's core; pixels outside the image are mirrored.
    blend : int
        How far each tile's output reaches into its halo, fading out linearly, to hide seams.
        ``0`` keeps only the cores (exactly a whole-image pass when ``halo`` covers the
        receptive field).
    batch_size : int
        Tiles per forward pass.
    tta : bool
        Average the 8 flips/90-degree rotations (test-time augmentation).
    z_tile, z_halo : int
        3D networks only: depth of a block along Z, halo included, and its halo along Z.
    """

    tile_size: int = 256
    halo: int = 32
    blend: int = 16
    batch_size: int = 4
    tta: bool = False
    z_tile: int = 16
    z_halo: int = 4

    def __post_init__(self):
        if self.tile_size < 16:
            raise InputError(f"tile_size must be at least 16, got {self.tile_size}.", setting="tile_size")
        if self.halo < 0 or self.blend < 0:
            raise InputError("halo and blend must not be negative.", setting="tile_size")
        if self.blend > self.halo:
            raise InputError(f"blend ({self.blend}) cannot exceed halo ({self.halo}).", setting="tile_size")
        if 2 * self.halo >= self.tile_size:
            raise InputError(f"tile_size ({self.tile_size}) must exceed twice the halo ({self.halo}).",
                             setting="tile_size")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}.", setting="batch_size")
        if self.z_halo < 0 or self.z_tile <= 2 * self.z_halo:
            raise InputError(f"z_tile ({self.z_tile}) must exceed twice z_halo ({self.z_halo}), which is >= 0.",
                             setting="tile_size")
