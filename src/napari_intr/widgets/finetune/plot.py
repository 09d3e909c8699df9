"""A live plot of a training run: loss (left axis), train/validation accuracy and the learning
rate as a fraction of its peak (right axis) against epochs, on matplotlib's Qt canvas. (When a
run stalls, `intr train` says so itself: its "diagnosis" events, shown under the plot.)"""
from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer

REDRAW_MS = 1_000     # a redraw costs tens of ms on the GUI thread: at most one a second

EPOCH_SERIES = (("loss", "tab:blue", "loss (epoch)"), ("train_acc", "tab:orange", "train acc"),
                ("val_acc", "tab:green", "val acc"))


class TrainingPlot(FigureCanvasQTAgg):
    """Lines are made once and only their data change: a full re-plot with layout took
    hundreds of ms on the GUI thread and stalled napari while a run streamed progress."""

    def __init__(self, parent=None):
        figure = Figure(figsize=(4, 2.6))
        super().__init__(figure)
        self.setParent(parent)
        self.setMinimumHeight(200)
        self.loss_axes = figure.add_subplot(111)
        self.accuracy_axes = self.loss_axes.twinx()
        self.step_line, = self.loss_axes.plot([], [], color="tab:blue", linewidth=0.8, alpha=0.5,
                                              label="loss (steps)")
        self.epoch_lines = {
            key: (self.loss_axes if key == "loss" else self.accuracy_axes).plot(
                [], [], "o-", color=colour, markersize=3, label=label)[0]
            for key, colour, label in EPOCH_SERIES}
        self.loss_axes.set_xlabel("epoch")
        self.loss_axes.set_ylabel("loss", color="tab:blue")
        self.accuracy_axes.set_ylabel("accuracy")
        self.accuracy_axes.set_ylim(0, 1.02)
        # the epoch's learning rate (metrics.jsonl "lr") over its peak: warm-up, decay, drops
        self.lr_line, = self.accuracy_axes.plot([], [], "--", color="tab:gray", linewidth=1, label="lr / peak")
        self.accuracy_axes.legend(handles=[self.step_line, *self.epoch_lines.values(), self.lr_line],
                                  fontsize="x-small", loc="center right")
        figure.tight_layout()  # once: layout on every draw is what made redraws slow
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self._redraw)
        self.clear()

    def clear(self) -> None:
        self.steps: list[tuple[float, float]] = []    # (fractional epoch, running loss)
        self.epochs: list[dict] = []                   # the `epoch` events (or metrics.jsonl rows)
        self._redraw()

    def add_step(self, epoch: int, step: int, steps: int, loss: float | None) -> None:
        if loss is not None:
            self.steps.append((epoch - 1 + step / max(steps, 1), loss))
            self._schedule()

    def add_epoch(self, record: dict) -> None:
        self.epochs = [row for row in self.epochs if row["epoch"] != record["epoch"]] + [record]
        self._schedule()

    def point_count(self) -> int:
        return len(self.steps) + len(self.epochs)

    def _schedule(self) -> None:
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def _redraw(self) -> None:
        self.step_line.set_data(*(zip(*self.steps) if self.steps else ([], [])))
        rows = sorted(self.epochs, key=lambda row: row["epoch"])
        for key, line in self.epoch_lines.items():
            points = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
            line.set_data(*(zip(*points) if points else ([], [])))
        rates = [(row["epoch"], row["lr"]) for row in rows if row.get("lr")]
        peak = max((rate for _, rate in rates), default=1.0)
        self.lr_line.set_data(*(zip(*[(epoch, rate / peak) for epoch, rate in rates]) if rates else ([], [])))
        self.loss_axes.relim()
        self.loss_axes.autoscale_view()
        self.draw_idle()
