"""Shared fixtures. napari's own pytest plugin (registered by napari) provides
``make_napari_viewer``; pytest-qt provides ``qtbot``. GUI tests run under ``xvfb-run``."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The project's real data beside the checkout (``../shared/data``), or a skip.

    Name it before a viewer fixture (``make_napari_viewer``, ``dock``): the skip must come
    before a viewer exists, or napari's viewer teardown, which reads the test's call report,
    turns the skip into an error."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the checkout in CI)")
    return SHARED_DATA


def cell_grid(size: int = 128, period: int = 32, width: int = 3):
    """Grid of square "cells" (2) separated by "membranes" (1) ``width`` px wide, every ``period`` px."""
    import numpy as np

    truth = np.full((size, size), 2, dtype=np.uint8)
    for k in range(0, size, period):
        truth[k:k + width, :] = 1
        truth[:, k:k + width] = 1
    return truth


def stroke_labels(mask, every: int = 8, width: int = 1):
    """Thin horizontal strokes copied from a ground-truth ``mask`` (0/1 → classes 1/2).

    One stroke of ``width`` rows every ``every`` rows; everything else stays 0
    ("not painted"). Works on 2D masks and stacks (strokes on every slice).
    """
    import numpy as np

    labels = np.zeros(mask.shape, dtype=np.uint8)
    rows = np.zeros(mask.shape[-2], dtype=bool)
    for start in range(every // 2, mask.shape[-2], every):
        rows[start:start + width] = True
    labels[..., rows, :] = mask[..., rows, :].astype(np.uint8) + 1
    return labels


def paint(layer, labels) -> None:
    """Paint ``labels``' non-zero pixels into a napari Labels layer, the way a brush does
    (through ``data_setitem``: undo history and a paint event)."""
    import numpy as np

    where = np.nonzero(labels)
    layer.data_setitem(where, labels[where])


@pytest.fixture
def nuclei():
    """A small synthetic nuclei image and its 0/1 mask."""
    from napari_unet._sample_data import synthetic_nuclei

    return synthetic_nuclei((96, 96), n_nuclei=12, seed=1)


@pytest.fixture
def notifications():
    """Messages of the napari notifications shown during the test, newest last."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)

    class _Seen:
        def messages(self):
            return [str(n.message) for n in notification_manager.records[start:]]

        def errors(self):
            return [str(n.message) for n in notification_manager.records[start:]
                    if str(n.severity).lower() == "error"]

    return _Seen()


@pytest.fixture
def dock(make_napari_viewer):
    """Return ``open(image, **add_image_kw) -> (viewer, widget)``: a viewer with the image
    and the plugin docked through its manifest, run synchronously (``threaded=False``)."""

    def _open(image, threaded: bool = False, **kwargs):
        viewer = make_napari_viewer()
        viewer.add_image(image, name=kwargs.pop("name", "img"), **kwargs)
        _, widget = viewer.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
        widget.threaded = threaded
        return viewer, widget

    return _open
