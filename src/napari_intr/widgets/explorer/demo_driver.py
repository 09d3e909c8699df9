"""Drive an Explorer from code (the `intr demo` command): load, then explain, then wait."""
from __future__ import annotations

from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication


def explain_when_ready(explorer) -> None:
    """Explain the chosen image as soon as a model is loaded (now, if one is)."""
    state = explorer.state
    if state.model is not None:
        explorer.explain()
        return

    def on_model(model):
        if model is not None:
            state.events.model.disconnect(on_model)
            explorer.explain()

    state.events.model.connect(on_model)


def wait_for_explanation(explorer, timeout_s: float):
    """Run the Qt event loop until loading and explaining are over (shown, failed or timed out)."""
    loop = QEventLoop()

    def check(*_):
        if not explorer.model_source.task.busy and not explorer.explain_box.task.busy:
            loop.quit()

    explorer.model_source.task.busy_changed.connect(check)
    explorer.explain_box.task.busy_changed.connect(check)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    explain_when_ready(explorer)
    if explorer.model_source.task.busy or explorer.explain_box.task.busy:
        loop.exec_()
    QApplication.processEvents()  # let the boxes lay out their final text
    return explorer.state.explanation
