"""Errors the engine raises for things a user can fix.

Both derive from ``ValueError`` and carry one sentence that says what went wrong and
what to do, so a command line or a GUI can show ``str(error)`` as it is.
"""
from __future__ import annotations

__all__ = ["InputError", "ModelFileError"]


class InputError(ValueError):
    """The images or labels given for training or prediction cannot be used as they are."""


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or not a napari-unet model."""


class Cancelled(RuntimeError):
    """Long work (prediction) was cancelled by the user; nothing partial is returned."""


__all__.append("Cancelled")
