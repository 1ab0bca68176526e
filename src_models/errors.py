"""Errors the engine raises for things a user can fix.

Each carries one sentence, in the engine's own words, that says what went wrong and what
to do, so a command line or a GUI can show ``str(error)`` as it is. ``setting`` names the
engine setting that fixes it (``"overwrite"``, ``"device"``, ``"precision"``, ``"time_budget"``,
...), so that each face can add its own word for it (a flag, a button).
"""
from __future__ import annotations

__all__ = ["InputError", "ModelFileError", "WriteError", "Cancelled"]


class InputError(ValueError):
    """The images, labels, settings or paths given cannot be used as they are."""

    def __init__(self, message: str, *, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


class ModelFileError(InputError):
    """A model file is missing, corrupt, or not a napari-unet model."""


class WriteError(InputError):
    """A file could not be written (full disk, no permission, not a folder); nothing partial is left."""

    def __init__(self, message: str, *, path=None, setting: str | None = None):
        super().__init__(message, setting=setting)
        self.path = path


class Cancelled(RuntimeError):
    """Long work (prediction) was cancelled by the user; nothing partial is returned."""
