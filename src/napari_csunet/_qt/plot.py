"""A light live plot of training loss and validation IoU, painted with QPainter.

Cheap enough to repaint on every step event (no matplotlib import, no figure re-layout), so a
fast training child never makes napari stutter. Loss uses the left axis (raw faint, smoothed
bold), validation mean IoU the right axis (0..1), the best evaluation is ringed.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, QSize
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QWidget

__all__ = ["TrainingPlot"]

LOSS, VAL, GRID = QColor("#4fa3ff"), QColor("#ffb000"), QColor(128, 128, 128, 90)
#: radius of the ring around the best evaluation (px): the plot area keeps this far from the captions
RING = 6


class TrainingPlot(QWidget):
    """Loss per step and validation IoU per evaluation, against the step number."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.clear()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(320, 170)

    def clear(self, steps: int = 1) -> None:
        self.steps = max(int(steps), 1)
        self.loss: list[tuple[int, float]] = []
        self.smooth: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.best: tuple[int, float] | None = None
        self.update()

    def add_loss(self, step: int, loss: float | None) -> None:
        if loss is None:
            return
        self.loss.append((step, float(loss)))
        prev = self.smooth[-1][1] if self.smooth else float(loss)
        self.smooth.append((step, 0.9 * prev + 0.1 * float(loss)))
        self.update()

    def add_val(self, step: int, value: float | None, best: bool = False) -> None:
        if value is None:
            return
        self.val.append((step, float(value)))
        if best or self.best is None:
            self.best = (step, float(value))
        self.update()

    def area(self, fm=None) -> QRectF:
        """Where the curves are drawn: below the caption line, above the step axis, clear of the
        captions by the best ring's radius (so a value of 1.0 never runs through a caption)."""
        fm = fm or self.fontMetrics()
        return QRectF(self.rect()).adjusted(fm.horizontalAdvance("0.000") + 6, self.caption_height(fm) + RING + 2,
                                            -fm.horizontalAdvance("1.0") - 8, -fm.height() - RING - 2)

    def caption_height(self, fm=None) -> int:
        """The caption line's height ("loss", "val mIoU best ... @ step")."""
        return (fm or self.fontMetrics()).height()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = p.fontMetrics()
        area = self.area(fm)
        p.setPen(QPen(GRID, 1))
        for i in range(5):
            y = area.top() + area.height() * i / 4
            p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
        top = max((v for _, v in self.loss), default=1.0) or 1.0

        def xy(step: float, value: float, scale: float) -> QPointF:
            return QPointF(area.left() + area.width() * min(step / self.steps, 1.0),
                           area.bottom() - area.height() * max(0.0, min(value / scale, 1.0)))

        for series, color, width, scale in ((self.loss, QColor(LOSS.red(), LOSS.green(), LOSS.blue(), 70), 1, top),
                                            (self.smooth, LOSS, 2, top), (self.val, VAL, 2, 1.0)):
            if len(series) > 1:
                path = QPainterPath(xy(*series[0], scale))
                for point in series[1:]:
                    path.lineTo(xy(*point, scale))
                p.setPen(QPen(color, width))
                p.drawPath(path)
        p.setPen(QPen(VAL, 2))
        for point in self.val:
            p.drawEllipse(xy(*point, 1.0), 2.5, 2.5)
        if self.best is not None:
            p.drawEllipse(xy(*self.best, 1.0), RING, RING)
        text = self.palette().color(self.foregroundRole())
        p.setPen(text)
        p.drawText(QPointF(2, area.top() + fm.ascent() / 2), f"{top:.3g}")
        p.drawText(QPointF(2, area.bottom()), "0")
        p.drawText(QPointF(area.right() + 4, area.top() + fm.ascent() / 2), "1.0")
        p.drawText(QPointF(area.right() + 4, area.bottom()), "0")
        p.drawText(QPointF(area.right() - fm.horizontalAdvance(f"step {self.steps}"), self.height() - 2),
                   f"step {self.steps}")
        p.setPen(LOSS)
        p.drawText(QPointF(area.left(), fm.ascent()), "loss")
        p.setPen(VAL)
        label = "val mIoU" + (f"  best {self.best[1]:.3f} at step {self.best[0]}" if self.best else "")
        p.drawText(QPointF(area.right() - fm.horizontalAdvance(label), fm.ascent()), label)
        p.end()
