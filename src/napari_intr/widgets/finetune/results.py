"""Result box of a fine-tuning run: best validation accuracy, per-class accuracy (from the `done`
event), and "Use in Explorer", which loads the new model in a worker and publishes it."""
from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QGroupBox, QPushButton

from ..qt_helpers import TextLabel, fill_table, read_only_table, stack
from ..state import ExplorerState
from ..workers import messages
from ..workers.jobs import load_model_job
from ..workers.task_bar import TaskBar

FEW_VALIDATION_IMAGES = 30  # below this an accuracy is too uncertain to compare runs by


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def clopper_pearson(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of a proportion: it never claims more than the
    images show, also at 0 or all correct, where the normal approximation collapses to a point."""
    from scipy.stats import beta
    tail = (1 - confidence) / 2
    low = 0.0 if correct == 0 else float(beta.ppf(tail, correct, total - correct + 1))
    high = 1.0 if correct == total else float(beta.ppf(1 - tail, correct + 1, total - correct))
    return low, high


def accuracy_text(accuracy: float | None, images: int | None) -> str:
    """"100 % of 9 (66–100 %, 95 % Clopper–Pearson interval)": an accuracy with the count it rests
    on and its uncertainty; just the percentage when the count is unknown."""
    if accuracy is None:
        return "n/a (no validation images)" if images == 0 else "n/a"
    if not images:
        return f"{accuracy:.1%}"
    correct = round(accuracy * images)
    low, high = clopper_pearson(correct, images)
    return f"{100 * accuracy:.0f} % of {images} ({100 * low:.0f}–{100 * high:.0f} %, 95 % Clopper–Pearson interval)"


class RunResultsBox(QGroupBox):
    def __init__(self, state: ExplorerState, parent=None):
        super().__init__("Result", parent)
        self.state = state
        self.summary = TextLabel("")
        self.table = read_only_table(("Class", "Val accuracy"))
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.table.setMinimumHeight(120)
        self.use_button = QPushButton("Use in Explorer")
        self.use_button.setToolTip("Load the fine-tuned model into the INTR Explorer")
        self.use_button.clicked.connect(self.use_in_explorer)
        self.task = TaskBar()
        self.task.busy_changed.connect(lambda busy: self.use_button.setEnabled(not busy))
        stack(self, self.summary, self.table, self.use_button, self.task)
        self.model_path: Path | None = None
        self.device = "auto"
        self.val_images: int | None = None  # from the run's start event
        self.setVisible(False)

    def show_done(self, event: dict) -> None:
        self.model_path = Path(event["model"])
        per_class = event.get("per_class_accuracy") or {}
        lines = [f"Best validation accuracy: {accuracy_text(event.get('best_val_acc'), self.val_images)}"]
        if self.val_images is not None and 0 < self.val_images < FEW_VALIDATION_IMAGES:
            lines.append(f"Warning: only {self.val_images} validation images; with fewer than "
                         f"{FEW_VALIDATION_IMAGES} the accuracy can be far from the truth (see the interval). "
                         "Validate on more images (a val/ folder, or a larger split) before trusting it.")
        lines += [f"Model: {self.model_path}", calibration_text(event.get("calibration"))]
        self.summary.setText("\n".join(lines))
        fill_table(self.table, [(name, _percent(accuracy)) for name, accuracy in sorted(per_class.items())],
                   numeric_columns=(1,))
        self.table.setVisible(bool(per_class))
        self.setVisible(True)

    def rows(self) -> list[tuple[str, str]]:
        return [(self.table.item(row, 0).text(), self.table.item(row, 1).text())
                for row in range(self.table.rowCount())]

    def use_in_explorer(self) -> None:
        if self.model_path is None:
            messages.notify("No fine-tuned model yet: start a run and let it finish", "warning")
            return
        path = self.model_path
        self.task.start(load_model_job, str(path), None, self.device, "auto", doing=f"Loading '{path.parent.name}'",
                        with_cancel_event=True, on_result=lambda model: self._publish(model, path))

    def _publish(self, model, path: Path) -> None:
        self.state.publish_model(model, str(path))
        messages.notify(f"The Explorer now uses the fine-tuned model {path} ({len(model.class_names)} classes)")


def calibration_text(calibration: dict | None) -> str:
    """The run's calibration as the dock says it: what "none of these species" rests on, or why not."""
    if not calibration:
        return "Not calibrated: every image will be named as one of the classes"
    if not calibration.get("calibrated"):
        return f"Not calibrated ({calibration.get('reason', 'no reason given')}): every image will be named as one of the classes"
    return (f"Calibrated on {calibration['images']:,} validation images: images scoring below {calibration['threshold']:.3g} "
            f"are 'none of these species' (keeps {calibration['keep']:.0%} of known ones); "
            f"{1 - calibration['alpha']:.0%} prediction sets")
