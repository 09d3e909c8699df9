"""Batch box: explain every image of a folder into an output folder (predictions.csv plus one
TIFF of head maps per image), in a worker with progress and cancel."""
from __future__ import annotations

from pathlib import Path

from magicgui.widgets import Container, SpinBox
from qtpy.QtWidgets import QGroupBox, QPushButton

from ..qt_helpers import PathEdit, TextLabel, stack
from ..state import ExplorerState
from ..workers import messages
from ..workers.jobs import batch_job
from ..workers.task_bar import TaskBar


class BatchBox(QGroupBox):
    def __init__(self, state: ExplorerState, parent=None):
        super().__init__("Batch: a folder of images", parent)
        self.state = state
        self.inputs = PathEdit("folder of images (searched recursively)", "Choose the image folder",
                               folder=True, label="Images")
        self.output = PathEdit("new folder for the results", "Choose the output folder", folder=True, label="Output")
        self.top_k = SpinBox(label="Top-k", min=1, max=50, value=5, tooltip="Classes per image in predictions.csv")
        # the settings: a magicgui form (FileEdit paths and a SpinBox)
        self.form = Container(widgets=[self.inputs, self.output, self.top_k])
        self.form.margins = (0, 0, 0, 0)
        self.run_button = QPushButton("Explain folder")
        self.run_button.clicked.connect(self.run)
        self.task = TaskBar()
        self.task.busy_changed.connect(lambda busy: self.run_button.setEnabled(not busy))
        self.summary = TextLabel("")
        stack(self, self.form.native, self.run_button, self.task, self.summary)

    def run(self) -> None:
        problem = self._problem()
        if problem:
            messages.notify(problem, "warning")
            return
        self.summary.setText("")
        self.task.start(batch_job, self.state.model, self.inputs.path, self.output.path, self.top_k.value,
                        doing=f"Explaining the images in '{Path(self.inputs.path).name}'",
                        with_cancel_event=True, show_in_activity=True, on_result=self._report)

    def _problem(self) -> str | None:
        from napari_intr.collection.explain import PREDICTIONS_FILE
        if self.state.model is None:
            return "No model loaded yet: press 'Load model' in the Model box"
        if not self.inputs.path or not Path(self.inputs.path).is_dir():
            return f"Choose an existing folder of images (got '{self.inputs.path}')"
        if not self.output.path:
            return "Choose an output folder for predictions.csv and the attention TIFFs"
        output = Path(self.output.path)
        if output.is_file():
            return f"'{output}' is a file; choose a folder for the results"
        if (output / PREDICTIONS_FILE).exists():
            return (f"'{output}' already holds the results of an earlier run ({PREDICTIONS_FILE}); "
                    "choose a new output folder so they are not overwritten")
        return None

    def _report(self, summary: dict) -> None:
        from napari_intr.large_images import READ_REDUCED
        done, total = summary["done"], summary["total"]
        parts = [f"Explained {done} of {total} images in {summary['seconds']:.1f} s"]
        if summary["cancelled"]:
            parts.append("cancelled before the end")
        if summary["skipped"]:
            first_file, first_reason = summary["skipped"][0]
            parts.append(f"{len(summary['skipped'])} skipped, e.g. {Path(first_file).name}: {first_reason}")
        reduced = [note for _, note in summary["notes"] if READ_REDUCED in note]
        if reduced:  # too large to decode whole: the maps are right, but made from fewer pixels
            parts.append(f"{len(reduced)} too large to decode whole, explained from a reduced image, e.g. {reduced[0]}")
        parts += summary.get("left_out", [])  # outputs of a job inside the folder: never explained as images
        calibration = summary.get("calibration")
        if calibration is not None and summary.get("judged"):  # counted and listed, never named as a species
            from napari_intr.calibration import rejected_text
            parts.append(rejected_text(calibration, [Path(item).name for item, _ in summary["rejected"]], done)
                         + " (known = no in predictions.csv)")
        elif calibration is None and done:
            parts.append("model not calibrated: every image is named as one of its classes")
        parts.append(f"results in {summary['predictions'].parent}")
        text = "; ".join(parts)
        self.summary.setText(text)
        level = "info" if done == total else "warning"
        if total == 0:
            text, level = f"No images found in '{self.inputs.path}' (PNG, JPEG, TIFF…)", "warning"
            self.summary.setText(text)
        messages.notify(text, level)
