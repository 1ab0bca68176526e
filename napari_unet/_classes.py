"""The class list of an annotation layer: id, colour swatch, editable name.

Names live in the layer's metadata (see `_layers.class_names_of`), colours come from the
layer's own colormap, and choosing a row sets the brush to that class.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._layers import class_names_of

__all__ = ["ClassTable"]


class ClassTable(QWidget):
    """Edit the named classes of the annotation layer set with `set_layer`.

    ``add_button`` is created here and placed by the parent widget.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._layer: Labels | None = None
        self._filling = False
        self._table = QTableWidget(0, 2)
        self._table.setHorizontalHeaderLabels(["id", "class name"])
        self._table.verticalHeader().setVisible(False)
        self._table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self._table.horizontalHeader().setStretchLastSection(True)
        self._table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self._table.setToolTip("Pick a row to paint that class; double-click a name to rename it.")
        self.add_button = QPushButton("Add class")
        self.add_button.setToolTip("Add a class with the next free label id.")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._table)
        # never squeezed below its rows when the panel runs out of height
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

        self.add_button.clicked.connect(lambda: self.add_class())
        self._table.itemChanged.connect(self._on_item_changed)
        self._table.itemSelectionChanged.connect(self._on_selection)
        self.set_layer(None)

    def set_layer(self, layer: Labels | None) -> None:
        """Show the classes of ``layer`` (None empties the table)."""
        self._layer = layer
        self.add_button.setEnabled(layer is not None)
        self._fill()

    def names(self) -> dict[int, str]:
        """``{id: name}`` of the current layer's classes."""
        return {} if self._layer is None else dict(class_names_of(self._layer))

    def add_class(self, name: str | None = None) -> int | None:
        """Add a class with the next free id; returns the id."""
        if self._layer is None:
            return None
        names = class_names_of(self._layer)
        new_id = max(names, default=0) + 1
        names[new_id] = name or f"class {new_id}"
        self._fill()
        self.select(new_id)
        return new_id

    def rename(self, label_id: int, name: str) -> None:
        if self._layer is None:
            return
        class_names_of(self._layer)[label_id] = name
        self._fill()

    def select(self, label_id: int) -> None:
        """Choose the row of ``label_id``: the brush paints that class."""
        for row in range(self._table.rowCount()):
            if self._table.item(row, 0).data(Qt.ItemDataRole.UserRole) == label_id:
                self._table.selectRow(row)

    def _fill(self) -> None:
        self._filling = True
        try:
            self._table.setRowCount(0)
            if self._layer is None:
                return
            for row, (label_id, name) in enumerate(sorted(class_names_of(self._layer).items())):
                self._table.insertRow(row)
                id_item = QTableWidgetItem(str(label_id))
                id_item.setData(Qt.ItemDataRole.UserRole, label_id)
                id_item.setFlags(id_item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                rgba = np.asarray(self._layer.get_color(label_id), dtype=float).ravel()
                if rgba.size >= 3:
                    id_item.setBackground(QColor.fromRgbF(*rgba[:3].clip(0, 1)))
                    id_item.setForeground(QColor("black" if rgba[:3].mean() > 0.5 else "white"))
                self._table.setItem(row, 0, id_item)
                self._table.setItem(row, 1, QTableWidgetItem(name))
        finally:
            self._filling = False
            self._fit_height()

    def _fit_height(self, max_rows: int = 5) -> None:
        """Show up to ``max_rows`` rows without a scroll bar."""
        rows = min(max(self._table.rowCount(), 2), max_rows)
        default = self._table.verticalHeader().defaultSectionSize()
        heights = [max(self._table.rowHeight(r), default) for r in range(min(self._table.rowCount(), rows))]
        heights += [default] * (rows - len(heights))
        header = self._table.horizontalHeader()
        header_height = max(header.sizeHint().height(), header.height())
        self._table.setFixedHeight(header_height + sum(heights) + 2 * self._table.frameWidth() + 4)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self._fit_height()  # styles are applied now: measure the real row and header heights

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or self._layer is None or item.column() != 1:
            return
        label_id = self._table.item(item.row(), 0).data(Qt.ItemDataRole.UserRole)
        class_names_of(self._layer)[label_id] = item.text().strip() or f"class {label_id}"

    def _on_selection(self) -> None:
        rows = self._table.selectionModel().selectedRows()
        if self._layer is None or not rows:
            return
        self._layer.selected_label = self._table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
