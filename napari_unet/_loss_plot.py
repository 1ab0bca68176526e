"""A tiny live loss curve (a sparkline painted with QPainter; no plotting library)."""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["LossPlot"]


class LossPlot(QWidget):
    """Draws the training losses seen so far (raw, and smoothed on top), scaled to the widget."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._losses: list[float] = []
        self.setMinimumHeight(48)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss per step")

    @property
    def losses(self) -> list[float]:
        return list(self._losses)

    def set_losses(self, losses: list[float]) -> None:
        self._losses = [float(v) for v in losses]
        self.update()

    def append(self, loss: float) -> None:
        self._losses.append(float(loss))
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(Qt.gray, 1))
        painter.drawRect(self.rect().adjusted(0, 0, -1, -1))
        finite = [v for v in self._losses if v == v and abs(v) != float("inf")]
        if len(finite) < 2:
            painter.end()
            return
        low, high = min(finite), max(finite)
        span = (high - low) or 1.0
        width, height = self.width() - 4, self.height() - 4
        n = len(finite) - 1

        def polyline(values):
            return QPolygonF(
                [QPointF(2 + width * i / n, 2 + height * (1 - (v - low) / span)) for i, v in enumerate(values)]
            )

        smooth, level = [], finite[0]
        for value in finite:  # exponential moving average: the trend through noisy per-step losses
            level = 0.9 * level + 0.1 * value
            smooth.append(level)
        painter.setPen(QPen(Qt.darkCyan, 1))
        painter.drawPolyline(polyline(finite))
        painter.setPen(QPen(Qt.cyan, 2))
        painter.drawPolyline(polyline(smooth))
        painter.end()
