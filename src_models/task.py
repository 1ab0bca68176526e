"""What a model is for, decided once: classes or objects, 2D or 3D.

A `Task` is chosen when a model is first trained and stored with it; `UNetModel.task` reads
it back, and `UNetModel.segment` and `training.make_trainer` act on it, so no caller tests
modes itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import InputError

__all__ = ["Mode", "Task"]


class Mode(str, Enum):
    """``classes``: every painted id is a class. ``objects``: 1 is background and every other
    id one object; predictions give one id per object (`objects`)."""

    CLASSES = "classes"
    OBJECTS = "objects"


@dataclass(frozen=True)
class Task:
    """The kind of segmentation a model does.

    Parameters
    ----------
    mode : Mode or str
        ``"classes"`` or ``"objects"``.
    dims : {2, 3}
        2: a 2D network that sees one plane; 3: a 3D U-Net that sees blocks of a volume.
    """

    mode: Mode = Mode.CLASSES
    dims: int = 2

    def __post_init__(self):
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise InputError(f"Unknown mode {self.mode!r}; choose classes or objects.", setting="mode") from None
        if self.dims not in (2, 3):
            raise InputError(f"A network is 2D or 3D, not {self.dims}D.", setting="dims")
        if self.objects and self.dims == 3:
            raise InputError("Objects mode works with 2D networks only; train objects with a 2D model.",
                             setting="dims")

    @property
    def objects(self) -> bool:
        """Whether predictions give one id per object."""
        return self.mode is Mode.OBJECTS

    def __str__(self) -> str:
        return f"{self.mode.value}, {self.dims}D"

    def mismatch(self, other: "Task") -> str | None:
        """A sentence saying why a model of this task cannot go on training as ``other``; None when it can."""
        if other == self:
            return None
        return (f"The model was trained for {self} but this training asks for {other}; start a new model, "
                "or train with the model's own settings.")

    def store(self, info: dict) -> None:
        """Write the mode into a model's ``info`` record (the dims live in its architecture)."""
        info["mode"] = self.mode.value

    @classmethod
    def stored(cls, info: dict, dims: int) -> "Task":
        """The task of a model from its ``info`` record and its network's ``dims``."""
        return cls(info.get("mode", Mode.CLASSES.value), dims)
