"""GUI-thread work in small steps, one step per turn of the event loop.

Adding a napari layer costs its layer-list row, its controls and its vispy node: 40-400 ms on a
2-core laptop (issue 24, benchmarks/RESULTS.md). Adding the nine attention layers of a resnet50
explanation in one callback froze napari for seconds. Queued here, each is added in its own turn,
and napari repaints and answers the user between them.

`TURNS` is the one queue of the process (napari has one GUI thread). A TaskBar whose job's result
queued steps stays busy until they have run (`after_steps`), so a finished task means its result
is fully shown."""
from __future__ import annotations

from collections import deque
from typing import Callable

from qtpy.QtCore import QObject, QTimer


class GuiTurns(QObject):
    def __init__(self):
        super().__init__()
        self._steps: deque[Callable[[], None]] = deque()
        self._waiting: list[Callable[[], None]] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._next_turn)

    @property
    def pending(self) -> int:
        return len(self._steps)

    def queue(self, step: Callable[[], None]) -> None:
        """Run `step` on the GUI thread in a later turn of the event loop, after those queued before."""
        self._steps.append(step)
        if not self._timer.isActive():
            self._timer.start()

    def after_steps(self, callback: Callable[[], None]) -> None:
        """Call `callback` once every step queued so far (and any they queue) has run: at once if none."""
        if self._steps:
            self._waiting.append(callback)
        else:
            callback()

    def run_all(self) -> None:
        """Run every queued step now (for an explicit action that needs the result at once)."""
        self._timer.stop()
        while self._steps:
            self._steps.popleft()()
        self._release()

    def _next_turn(self) -> None:
        try:
            if self._steps:
                self._steps.popleft()()
        finally:  # a failing step (it reports its own error) does not stop the queue
            if self._steps:
                self._timer.start()
            else:
                self._release()

    def _release(self) -> None:
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()


_TURNS: GuiTurns | None = None


def turns() -> GuiTurns:
    """The process's queue, made on first use (a QObject needs napari's QApplication)."""
    global _TURNS
    if _TURNS is None:
        _TURNS = GuiTurns()
    return _TURNS
