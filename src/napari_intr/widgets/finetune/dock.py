"""The "INTR Fine-tune" dock widget: wires the Collection, Settings, Run and Result boxes.

Training runs in a child process (training_process.py), never in napari: the widget reads its
JSON progress into a progress bar (here and in napari's activity dock, where Cancel works too),
a live plot and a log. Cancel sends SIGTERM (the run keeps its last completed epoch; Resume
continues it). The finished model goes to every Explorer through the shared state.
"""
from __future__ import annotations

from pathlib import Path

from napari.utils.progress import cancelable_progress
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ... import run_folder
from ...devices import training_precision_text
from ..qt_helpers import TextLabel, group_box, scroll_column, tabbed_dock
from ..state import shared_state
from ..workers import messages
from ..workers.jobs import CollectionSummary
from ..workers.training_process import TrainingProcess
from .collection import CollectionBox
from .plot import TrainingPlot
from .results import RunResultsBox, accuracy_text, calibration_text
from .settings import SettingsBox, default_runs_folder, new_run_folder

WIDGET_NAME = "INTR Fine-tune"
LOG_LINES = 5_000


class _ActivityBar(cancelable_progress):
    """napari's cancelable bar only flags itself when its Cancel is pressed (it expects to wrap a
    loop); this one also calls back, so the activity dock's Cancel stops the training process."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


class FineTuneWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        tabbed_dock(self)
        self.viewer = napari_viewer
        self.state = shared_state(napari_viewer)
        self.collection = CollectionBox()
        self.settings = SettingsBox(self.state)
        self.results = RunResultsBox(self.state)
        self.process = TrainingProcess(self)  # a child QObject: Qt kills the process with the widget
        self.process.message.connect(self._on_event)
        self.process.log_line.connect(self._on_log_line)
        self.process.ended.connect(self._on_ended)
        run_box = self._build_run_box()

        scroll_column(self, (self.collection, self.settings, run_box, self.results))
        self._activity = None
        self._task_status = None
        self._reset_run()
        self._show_running(False)

    def _build_run_box(self) -> QGroupBox:
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Scan the collection, then fine-tune in a separate process")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop; the last completed epoch is kept and Resume continues")
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the run saved in the output folder")
        self.resume_button.clicked.connect(self.resume)
        self.bar = QProgressBar()
        self.status = TextLabel("")
        self.plot = TrainingPlot()
        self.note = TextLabel("")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setPlaceholderText("Messages of the training process")
        self.log.setFixedHeight(110)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.cancel_button, self.resume_button):
            buttons.addWidget(button)
        return group_box("Run", buttons, self.bar, self.status, self.plot, self.note, self.log)

    # -- actions ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process.running

    def start(self) -> None:
        """Scan the collection (a worker), then start a new run."""
        if self._refuse_while_running():
            return
        self.collection.seed = self.settings.seed.value
        self.collection.scan(then=self._start_scanned)

    def resume(self) -> None:
        if self._refuse_while_running():
            return
        try:
            out = self.settings.output_folder()
            if not run_folder.holds_run(out):
                raise ValueError(f"{out} holds no saved run to resume; choose the output folder of a "
                                 "stopped run, or press Start for a new one")
            if not self.collection.folder.path:
                raise ValueError("choose the collection folder the run was trained on")
            arguments = self.settings.resume_arguments(self.collection.folder.path, out)
        except ValueError as error:
            messages.notify(str(error), "warning")
            return
        self._launch(arguments, out, resumed=True)

    def cancel(self) -> None:
        if not self.running or self._cancelling:
            return
        self._cancelling = True
        self.cancel_button.setEnabled(False)
        self.status.setText("Stopping after saving what is done…")
        self.process.terminate()

    def stop_and_wait(self) -> None:
        """Stop training now (closing napari or the widget): terminate, wait, kill if need be."""
        if self.running:
            self._cancelling = True
            self.process.stop()

    def _start_scanned(self, summary: CollectionSummary) -> None:
        if self._refuse_while_running():
            return
        try:
            out = self.settings.output_folder()
            if run_folder.holds_run(out):
                raise ValueError(f"{out} already holds a run: press Resume to continue it, or choose "
                                 "another output folder")
            arguments = self.settings.train_arguments(summary.root, summary.val_split, out)
        except (ValueError, OSError, RuntimeError) as error:
            messages.notify(messages.describe_error(error, "Starting fine-tuning"), "warning")
            return
        self._launch(arguments, out, resumed=False)

    def _launch(self, arguments: list[str], out: Path, resumed: bool) -> None:
        self._reset_run()
        self.plot.clear()
        if resumed:
            for record in run_folder.read_metrics(out):
                self.plot.add_epoch(record)
        self.results.setVisible(False)
        try:
            self.process.start(arguments, out)
        except OSError as error:
            messages.notify(messages.describe_error(error, "Starting fine-tuning"), "error")
            return
        self.log.appendPlainText(f"— {'resuming' if resumed else 'starting'} a run in {out} "
                                 f"(log: {self.process.log_path})")
        self.status.setText("Starting the training process…")
        self._activity = _ActivityBar(total=0, desc=f"{WIDGET_NAME}: starting", cancel_callback=self.cancel)
        self._register_task()
        self._show_running(True)

    def _refuse_while_running(self) -> bool:
        if self.running:
            messages.notify("A fine-tuning run is in progress: wait for it or Cancel it", "warning")
        return self.running

    # -- the process's messages ------------------------------------------------------------------

    def _on_event(self, event: dict) -> None:
        handler = getattr(self, f"_on_{event['event']}_event", None)
        if handler is not None:
            handler(event)

    def _on_start_event(self, event: dict) -> None:
        self._first_epoch, self._epochs = event["first_epoch"], event["epochs"]
        self.results.val_images = event["val_images"]
        self._steps_per_epoch = max(1, event["steps_per_epoch"])
        total = max(1, (self._epochs - self._first_epoch + 1) * self._steps_per_epoch)
        self.bar.setRange(0, total)
        self.bar.setValue(0)
        if self._activity is not None:
            self._activity.total = total
            self._activity.set_description(f"{WIDGET_NAME}: epoch {self._first_epoch}/{self._epochs}")
        self.status.setText(f"Training on {event['train_images']} images ({event['val_images']} for "
                            f"validation) of {len(event['classes'])} classes in {training_precision_text(event)}; "
                            f"{event['init']}")

    def _on_step_event(self, event: dict) -> None:
        self.plot.add_step(event["epoch"], event["step"], event["steps"], event.get("loss"))
        done = (event["epoch"] - self._first_epoch) * self._steps_per_epoch + event["step"]
        self.bar.setValue(min(done, self.bar.maximum()))
        loss = "n/a" if event.get("loss") is None else f"{event['loss']:.4f}"
        self.status.setText(f"Epoch {event['epoch']}/{self._epochs}, step {event['step']}/{event['steps']}: "
                            f"loss {loss}, accuracy {event['accuracy']:.1%}; about "
                            f"{_duration(event['eta_seconds'])} left")
        activity = self._activity
        if activity is not None:
            if done > activity.n:
                activity.update(done - activity.n)
            activity.set_description(f"{WIDGET_NAME}: epoch {event['epoch']}/{self._epochs}")

    def _on_epoch_event(self, event: dict) -> None:
        self.plot.add_epoch({key: event.get(key) for key in ("epoch", "loss", "train_acc", "val_acc", "lr")})
        val = "n/a" if event.get("val_acc") is None else f"{event['val_acc']:.1%}"
        loss = "n/a" if event.get("loss") is None else f"{event['loss']:.4f}"
        self.log.appendPlainText(f"epoch {event['epoch']}/{self._epochs}: loss {loss}, train accuracy "
                                 f"{event['train_acc']:.1%}, validation accuracy {val}")

    def _on_backbone_epoch_event(self, event: dict) -> None:
        """--backbone-epochs: the backbone learns alone before INTR's epoch 1 (no steps reported)."""
        val = "n/a" if event.get("val_acc") is None else f"{event['val_acc']:.1%}"
        text = (f"backbone alone, epoch {event['epoch']}/{event['epochs']}: train accuracy "
                f"{event['train_acc']:.1%}, validation accuracy {val}")
        self.log.appendPlainText(text)
        self.status.setText(f"Training the backbone alone before INTR's epochs: {text}")

    def _on_warning_event(self, event: dict) -> None:
        messages.notify(f"Fine-tuning: {event['message']}", "warning")

    def _on_diagnosis_event(self, event: dict) -> None:
        """The run stalls (a group plateau, a flat or a rising loss): said under the plot and once
        as a notification; the run goes on."""
        self.note.setText(f"Epoch {event['epoch']}: {event['message']}")
        messages.notify(f"Fine-tuning, epoch {event['epoch']}: {event['message']}", "warning")

    def _on_done_event(self, event: dict) -> None:
        self._done = event
        final = event.get("diagnosis")
        if final:
            self.note.setText(f"The run ended in a {final['kind'].replace('_', ' ')} (found at epoch "
                              f"{final['epoch']}): {final['message']}")
        elif self.note.text():
            self.note.setText(f"{self.note.text()}\nIt recovered: the run did not end in it.")
        self.results.device = self.settings.device.value
        self.results.show_done(event)

    def _on_error_event(self, event: dict) -> None:
        self._error = event["message"]

    def _on_interrupted_event(self, event: dict) -> None:
        self._interrupted = event

    def _on_log_line(self, line: str) -> None:
        self._last_line = line
        if not line.startswith("warning: "):  # warnings arrive as events too; shown once, there
            self.log.appendPlainText(line)

    def _on_ended(self, exit_code: int, crashed: bool) -> None:
        log = self.process.log_path
        if self._done is not None and exit_code == 0:
            best = accuracy_text(self._done.get("best_val_acc"), self.results.val_images)
            text = (f"Fine-tuning finished: best validation accuracy {best}; model in {self._done['model']}. "
                    f"{calibration_text(self._done.get('calibration'))}")
            level, status = "info", "Finished"
            if log is not None and log.parent.parent == default_runs_folder():
                self.settings.out.path = new_run_folder()  # Start again makes a new run
        elif self._interrupted is not None or self._cancelling:
            epoch = (self._interrupted or {}).get("epoch", 0)
            text = (f"Fine-tuning stopped after epoch {epoch}: Resume continues it" if epoch else
                    "Fine-tuning stopped before its first epoch ended; nothing to resume, Start again")
            level, status = "info", "Cancelled"
        else:
            reason = self._error or self._last_line.removeprefix("intr train: error: ") or \
                f"the process ended with exit code {exit_code}"
            text = f"Fine-tuning failed: {reason}. Full log: {log}"
            level, status = "error", "Failed"
        self.status.setText(text)
        messages.notify(text, level)
        self._finish_task(status)
        self._show_running(False)

    # -- napari's activity dock and task list ----------------------------------------------------

    def _register_task(self) -> None:
        """napari asks before closing while a registered task runs, and cancels it on close.
        Private napari API (as napari's own thread workers use it): skipped where it is absent."""
        viewer = getattr(self.viewer, "__wrapped__", self.viewer)  # plugins get a proxy viewer
        try:
            self._task_status = viewer.window._register_task_status(
                "napari-intr", _status("BUSY"), f"{WIDGET_NAME}: training in {self.process.log_path.parent}",
                cancel_callback=self.stop_and_wait)
        except (AttributeError, TypeError, ImportError):
            self._task_status = None

    def _finish_task(self, status: str) -> None:
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        if self._task_status is not None:
            viewer = getattr(self.viewer, "__wrapped__", self.viewer)
            try:
                viewer.window._update_task_status(self._task_status, _status(status.upper()))
            except (AttributeError, TypeError, ImportError, RuntimeError):
                pass
            self._task_status = None

    # -- closing -----------------------------------------------------------------------------------

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self.running and not self._confirm_stop():
            event.ignore()
            return
        self.stop_and_wait()
        super().closeEvent(event)

    def event(self, event) -> bool:
        # napari's close button on a dock takes the widget out (setParent(None)) without a close
        # event: ask then, and put the widget back if the user keeps training.
        if event.type() == QEvent.ParentChange and self.parent() is None and self.running:
            QTimer.singleShot(0, self._removed_while_training)
        return super().event(event)

    def _removed_while_training(self) -> None:
        if not self.running or self.parent() is not None:
            return
        if self._confirm_stop():
            self.stop_and_wait()
        else:
            self.viewer.window.add_dock_widget(self, name=WIDGET_NAME, area="right")

    def _confirm_stop(self) -> bool:
        answer = QMessageBox.question(
            None, WIDGET_NAME, "A fine-tuning run is in progress. Stop it?\n\nThe last completed epoch "
            "is kept; Resume continues the run.", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    # -- helpers -----------------------------------------------------------------------------------

    def _reset_run(self) -> None:
        self._first_epoch, self._epochs, self._steps_per_epoch = 1, 0, 1
        self._done = self._interrupted = None
        self._error = self._last_line = ""
        self._cancelling = False
        self.note.setText("")

    def _show_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.bar.setVisible(running)
        if running:
            self.bar.setRange(0, 0)


def _status(name: str):
    from napari.utils.task_status import Status
    return getattr(Status, name)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    return f"{seconds // 60} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
