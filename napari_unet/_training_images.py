"""The "Images to train on" list: every image layer whose annotation layer carries paint, with a
check box (ticked by default) and the painted pixels per class. Train learns from every
ticked image at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QSizePolicy

from ._layers import annotation_name, class_names_of, image_info

__all__ = ["Pair", "TrainingImages", "image_pairs", "painted_summary"]


@dataclass(frozen=True)
class Pair:
    """An image layer and the annotation layer painted on it."""

    image: Image
    annotation: Labels

    @property
    def name(self) -> str:
        return self.image.name


def image_pairs(viewer, current: Pair | None = None) -> list[Pair]:
    """Every image layer with an annotation layer of its shape: ``"<image> annotation"``, or for
    the image of ``current`` (the panel's chosen pair) that pair's annotation, whatever its name."""
    pairs = []
    for layer in viewer.layers:
        if not isinstance(layer, Image):
            continue
        if current is not None and current.image.name == layer.name:  # names: the panel holds proxies of layers
            annotation = current.annotation
        else:
            name = annotation_name(layer)
            annotation = viewer.layers[name] if name in viewer.layers else None
        if isinstance(annotation, Labels) and tuple(annotation.data.shape) == image_info(layer).spatial_shape:
            pairs.append(Pair(layer, annotation))
    return pairs


def painted_counts(annotation: Labels) -> dict[int, int]:
    """``{id: painted pixels}`` of an annotation layer (0, not painted, left out): one pass,
    a histogram for uint8/uint16 layers."""
    data = np.asarray(annotation.data)
    if data.dtype in (np.uint8, np.uint16):
        counts = np.bincount(data.ravel())
        ids = np.flatnonzero(counts)
        counts = counts[ids]
    else:
        ids, counts = np.unique(data, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts) if i != 0}


def painted_summary(annotation: Labels, counts: dict[int, int] | None = None) -> tuple[int, str]:
    """``(painted pixels, "background 800 · foreground 434")`` of an annotation layer."""
    counts = painted_counts(annotation) if counts is None else counts
    names = class_names_of(annotation)
    parts = [f"{names.get(i, f'id {i}')} {c:,}" for i, c in sorted(counts.items())]
    return sum(counts.values()), " · ".join(parts)


class TrainingImages(QListWidget):
    """Check list of the images that carry paint; `checked_pairs` are those Train learns from.

    A box the user unticks stays unticked while the image stays open (kept by layer name).
    Painted pixels are counted once per change of an annotation (`mark_changed`), not at every
    refresh: a big stack's annotation is not read again while another layer is painted.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pairs: list[Pair] = []
        self._unticked: set[str] = set()
        self._counts: dict[str, dict[int, int]] = {}  # per annotation layer name
        self.setToolTip("Train learns from every ticked image at once; untick an image to leave it out.")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)  # long lines end in "…" (the tooltip has them whole)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.itemChanged.connect(self._on_item_changed)
        self._fit_height()

    def refresh(self, viewer, current: Pair | None = None) -> None:
        """List the image layers whose annotation carries paint."""
        open_names = {layer.name for layer in viewer.layers}
        self._counts = {name: counts for name, counts in self._counts.items() if name in open_names}
        for pair in image_pairs(viewer, current):
            if pair.annotation.name not in self._counts:
                self._counts[pair.annotation.name] = painted_counts(pair.annotation)
        pairs = [pair for pair in image_pairs(viewer, current) if self._counts[pair.annotation.name]]
        self._unticked &= open_names
        self.blockSignals(True)
        try:
            self.clear()
            for pair in pairs:
                painted, per_class = painted_summary(pair.annotation, self._counts[pair.annotation.name])
                item = QListWidgetItem(f"{pair.name}: {painted:,} px painted\n{per_class}")
                item.setToolTip(f"{pair.name}: {painted:,} px painted: {per_class}")
                item.setData(Qt.ItemDataRole.UserRole, pair.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Unchecked if pair.name in self._unticked else Qt.CheckState.Checked)
                self.addItem(item)
        finally:
            self.blockSignals(False)
        self._pairs = pairs
        self._fit_height()

    def mark_changed(self, name: str | None = None) -> None:
        """The annotation layer ``name`` was painted (None: any may have been): count it again."""
        if name is None:
            self._counts.clear()
        else:
            self._counts.pop(name, None)

    def pairs(self) -> list[Pair]:
        """Every listed pair, ticked or not."""
        return list(self._pairs)

    def is_ticked(self, name: str) -> bool:
        return name not in self._unticked

    def set_ticked(self, name: str, ticked: bool) -> None:
        """Tick or untick the image ``name`` (also before it is listed)."""
        if ticked:
            self._unticked.discard(name)
        else:
            self._unticked.add(name)
        for row in range(self.count()):
            item = self.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == name:
                self.blockSignals(True)
                item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
                self.blockSignals(False)

    def checked_pairs(self) -> list[Pair]:
        return [pair for pair in self._pairs if pair.name not in self._unticked]

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        name = item.data(Qt.ItemDataRole.UserRole)
        if item.checkState() == Qt.CheckState.Checked:
            self._unticked.discard(name)
        else:
            self._unticked.add(name)

    def _fit_height(self, max_rows: int = 3) -> None:
        """Show up to ``max_rows`` items (two lines each) without a scroll bar."""
        empty = self.fontMetrics().height() + 6
        heights = [max(self.sizeHintForRow(row), empty) for row in range(min(self.count(), max_rows))] or [empty]
        self.setFixedHeight(sum(heights) + 2 * self.frameWidth() + 4)

