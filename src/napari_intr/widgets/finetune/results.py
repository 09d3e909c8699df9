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


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


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
        self.setVisible(False)

    def show_done(self, event: dict) -> None:
        self.model_path = Path(event["model"])
        per_class = event.get("per_class_accuracy") or {}
        self.summary.setText(f"Best validation accuracy: {_percent(event.get('best_val_acc'))}\n"
                             f"Model: {self.model_path}")
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
