"""A live plot of a training run: loss (left axis), train/validation accuracy and the learning
rate as a fraction of its peak (right axis) against epochs, on matplotlib's Qt canvas; and what the
loss curve says: a plateau (flat: be patient, INTR's tracker #11) or instability (rising or spiking:
lower the learning rate)."""
from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer

FLAT_EPOCHS = 3       # look at the loss after this many epochs …
FLAT_MARGIN = 0.05    # … and call it flat when its best is within 5 % of the first epoch's
RISE_FACTOR = 2.0     # unstable: an epoch's loss above this many times the best epoch before it
REDRAW_MS = 1_000     # a redraw costs tens of ms on the GUI thread: at most one a second


def loss_trend(epoch_losses: list[float]) -> str:
    """How the epoch losses move: "unstable" when one rose above RISE_FACTOR × the best before it
    (a spike, or a climb: training is diverging), "flat" when after FLAT_EPOCHS none fell FLAT_MARGIN
    below the first (a plateau), "" otherwise (falling, or too early to tell)."""
    losses = [loss for loss in epoch_losses if loss is not None]
    if any(loss > RISE_FACTOR * min(losses[:index]) for index, loss in enumerate(losses) if index):
        return "unstable"
    if len(losses) >= FLAT_EPOCHS and min(losses[1:]) >= losses[0] * (1 - FLAT_MARGIN):
        return "flat"
    return ""


def loss_trend_note(epoch_losses: list[float]) -> str:
    """What the dock says about the loss curve, and what to do: "" while it falls."""
    trend, losses = loss_trend(epoch_losses), [loss for loss in epoch_losses if loss is not None]
    if trend == "unstable":
        # the steepest rise: an epoch against the best epoch before it
        ratio, best, rose = max((losses[j] / max(losses[i], 1e-12), i, j)
                                for j in range(1, len(losses)) for i in range(j))
        return (f"The loss is unstable: it rose from {losses[best]:.3f} (epoch {best + 1}) to {losses[rose]:.3f} "
                f"(epoch {rose + 1}, ×{ratio:.1f}). This is not a plateau and waiting will not help: Cancel, "
                "and start again with a lower learning rate (e.g. a tenth) or a larger batch.")
    if trend == "flat":
        return (f"The loss is on a plateau: flat for {len(losses)} epochs ({losses[0]:.3f} → {losses[-1]:.3f}). "
                "INTR often needs many epochs before its loss falls: be patient (more epochs; Resume "
                "continues); if it stays flat much longer, start again with a lower learning rate (a tenth).")
    return ""


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

    def epoch_losses(self) -> list[float]:
        return [row.get("loss") for row in sorted(self.epochs, key=lambda row: row["epoch"])]

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
