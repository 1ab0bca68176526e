"""The engine's sentences in the widget's words: an error that names an engine setting gets the
name of the control that changes it."""

from __future__ import annotations

__all__ = ["CONTROLS", "user_sentence"]

#: The widget control that changes each engine setting named by `InputError.setting`.
CONTROLS = {
    "precision": "Precision in 2. Model",
    "device": "Device in 2. Model",
    "model": "New model in 2. Model",
    "dims": "the 3D network box in 2. Model",
    "mode": "Mode in 1. Data",
    "preset": "New model size in 2. Model",
    "time_budget": "Time budget in 3. Train",
    "steps": "Steps in 3. Train",
}


def user_sentence(error: BaseException) -> str:
    """``str(error)`` (or of the engine error behind a worker's error), with the control to use."""
    cause = error.__cause__ if error.__cause__ is not None else error
    setting = getattr(cause, "setting", None)
    control = CONTROLS.get(setting or "")
    text = str(error)
    return f"{text} (see {control})" if control else text
