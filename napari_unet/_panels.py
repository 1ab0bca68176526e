"""Which U-Net panel belongs to which viewer, so that other panels can use its model.

A weak map: a closed panel (or viewer) drops out by itself. napari hands each plugin widget its
own proxy of the viewer, so the viewer behind the proxy is the key.
"""

from __future__ import annotations

import weakref

__all__ = ["panel_for", "register_panel"]

_PANELS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _real(viewer):
    """The viewer itself, behind any proxy napari put around it."""
    while hasattr(viewer, "__wrapped__"):
        viewer = viewer.__wrapped__
    return viewer


def register_panel(viewer, panel) -> None:
    """Remember ``panel`` as the U-Net panel of ``viewer`` (the latest one wins)."""
    _PANELS[id(_real(viewer))] = panel


def panel_for(viewer):
    """The U-Net panel of ``viewer``, or None when it has none (or it was closed)."""
    viewer = _real(viewer)
    panel = _PANELS.get(id(viewer))
    return panel if panel is not None and _real(getattr(panel, "viewer", None)) is viewer else None
