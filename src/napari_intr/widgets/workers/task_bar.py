"""A progress bar, a Cancel button and a status line that run one worker job at a time."""
from __future__ import annotations

import functools
import threading
from typing import Callable

from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..gui_turns import turns
from ..qt_helpers import TextLabel
from . import messages
from .jobs import Cancelled, JobFailed, Progress, Result


class TaskBar(QWidget):
    """`start(job, *args)` runs a generator job (see jobs.py) on a napari thread worker.

    Results and errors arrive on the GUI thread; `busy_changed` fires on start and on every
    end (success, error or cancel), so owners re-enable their buttons in one place. A task ends
    once the steps its result queued for later turns of the event loop (gui_turns) have run.
    """
    busy_changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current step; nothing is half-written")
        self.cancel_button.clicked.connect(self.cancel)
        self.status = TextLabel("")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.worker = None
        self._alive = [True]
        self.destroyed.connect(lambda *_, alive=self._alive: alive.__setitem__(0, False))
        self._cancel_event = threading.Event()
        self._napari_bar = None
        self._errored = self._cancelled = False
        self._show_state()

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(self, job: Callable, *args, doing: str, on_result: Callable,
              with_cancel_event: bool = False, show_in_activity: bool = False) -> None:
        """doing: "Explaining 'x'" — used in the status line and in error messages."""
        if self.busy:
            messages.notify(f"{doing}: wait for the running task to finish or cancel it", "warning")
            return
        self._cancel_event = threading.Event()
        self._cooperative = with_cancel_event
        if with_cancel_event:  # the job stops itself when the event is set, and may still report
            args = (*args, self._cancel_event)
        self._doing, self._on_result = doing, on_result
        self._cancelled = self._errored = False
        self.worker = create_worker(below_gui(job), *args, _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self._on_message)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        if show_in_activity:
            self._napari_bar = napari_progress(total=0, desc=doing)
        self.bar.setRange(0, 0)  # busy indicator until the first progress message
        self.cancel_button.setEnabled(True)
        self.status.setText(f"{doing}…")
        self._show_state()
        self.busy_changed.emit(True)
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is None:
            return
        self._cancelled = True
        self._cancel_event.set()
        if not self._cooperative:
            self.worker.quit()
        self.cancel_button.setEnabled(False)
        self.status.setText(f"{self._doing}: cancelling after the current step…")

    def _on_message(self, message) -> None:
        if isinstance(message, Result):
            if self._cooperative or not self._cancelled:
                try:
                    self._on_result(message.value)
                except Exception as error:  # showing a result must not leave a traceback
                    self._on_error(error)
            return
        if not isinstance(message, Progress):
            return
        if message.total > 0:
            self.bar.setRange(0, message.total)
            self.bar.setValue(min(message.done, message.total))
        else:
            self.bar.setRange(0, 0)
        self.status.setText(f"{self._doing}: {message.text}" if message.text else self._doing)
        bar = self._napari_bar  # napari's bar may process events: the task can end meanwhile
        if bar is not None:
            if message.text:
                bar.set_description(f"{self._doing}: {message.text}"[:80])
            if message.total > 0 and bar.total != message.total:
                bar.total = message.total
            if message.done > bar.n:
                bar.update(message.done - bar.n)

    def _on_error(self, error: BaseException) -> None:
        if isinstance(error, JobFailed):
            error = error.error
        if isinstance(error, Cancelled) or (self._cancelled and not self._cooperative):
            return
        text = messages.describe_error(error, self._doing)
        self.status.setText(text)
        messages.notify(text, "error")
        self._errored = True

    def _on_finished(self) -> None:
        # what the result queued for later turns (gui_turns: new layers) is part of the task;
        # a bar closed meanwhile (its dock or viewer) has nothing left to show
        alive = self._alive
        turns().after_steps(lambda: self._finish() if alive[0] else None)

    def _finish(self) -> None:
        self.worker = None
        if self._napari_bar is not None:
            self._napari_bar.close()
            self._napari_bar = None
        if self._cancelled and not self._errored:
            self.status.setText(f"{self._doing}: cancelled")
            messages.notify(f"{self._doing}: cancelled", "info")
        elif not self._errored:
            self.status.setText("")
        self._show_state()
        self.busy_changed.emit(False)

    def _show_state(self) -> None:
        """Bar and Cancel while busy; the whole bar only while busy or with something to say."""
        self.bar.setVisible(self.busy)
        self.cancel_button.setVisible(self.busy)
        self.setVisible(self.busy or bool(self.status.full_text))


def below_gui(job: Callable) -> Callable:
    """`job` (a generator function) run on a thread below the GUI thread's priority
    (napari_intr.threads.lower_thread_priority), so that napari stays responsive while it computes."""
    @functools.wraps(job)
    def run(*args, **kwargs):
        from napari_intr.threads import lower_thread_priority
        lower_thread_priority()
        return (yield from job(*args, **kwargs))
    return run
