"""Atlas box: a class-labelled folder, an output folder and the atlas options; runs `intr atlas`'s
work in the background with progress and cancel (a cancelled run continues where it stopped)."""
from __future__ import annotations

import warnings
from pathlib import Path

from magicgui.widgets import Container, LineEdit, SpinBox
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QPushButton

from ...atlas.folder import holds_atlas
from ..qt_helpers import PathEdit, TextLabel, stack
from ..state import ExplorerState
from ..workers import messages
from ..workers.jobs import atlas_job
from ..workers.task_bar import TaskBar


def default_output(data: str) -> str:
    folder = Path(data).expanduser()
    return str(folder.parent / f"{folder.name}-atlas")


class AtlasRunBox(QGroupBox):
    """Emits `atlas_ready(out_folder)` when an atlas is written or an existing one is opened."""
    atlas_ready = Signal(str)

    def __init__(self, state: ExplorerState, parent=None):
        super().__init__("Collection", parent)
        self.state = state
        # the collection, the atlas folder and the atlas options: a magicgui form
        self.data = PathEdit("folder: one subfolder of images per class", "Choose the collection", folder=True,
                             label="Images")
        self.data.edit.editingFinished.connect(self._suggest_output)
        self.out = PathEdit("output folder (default: <collection>-atlas)", "Choose the atlas folder", folder=True,
                            label="Atlas folder")
        # magicgui's SpinBox (superqt's) shows no special text for 0, so the label says what 0 means
        self.layer = SpinBox(label="Decoder layer (0: last)", min=0, max=64, value=0, tooltip=(
            "Decoder layer whose attention is summarised (1-based; 0: the last, as in the paper)"))
        self.per_head = SpinBox(label="Patches per head", min=1, max=50, value=6,
                                tooltip="Top images (patches) kept per class and head")
        self.pairs = LineEdit(label="Look-alike pairs")
        self.pairs.native.setPlaceholderText("A:B, C:D (default: the most confused pairs)")
        self.parts = PathEdit("optional: CUB parts/part_locs.txt", "Choose CUB's part_locs.txt",
                              file_filter="Text (*.txt);;All files (*)", label="Part annotations")
        self.form = Container(widgets=[self.data, self.out, self.layer, self.per_head, self.pairs, self.parts])
        self.form.margins = (0, 0, 0, 0)
        self.run_button = QPushButton("Build atlas")
        self.run_button.setToolTip("Encode every image once, decode its class and its prediction, write "
                                   "atlas.html, heads.csv, pairs.csv and montages; a re-run skips done images")
        self.run_button.clicked.connect(self.run)
        self.open_button = QPushButton("Open atlas")
        self.open_button.setToolTip("Browse an atlas written earlier (its atlas.json) without running")
        self.open_button.clicked.connect(self.open_existing)
        self.task = TaskBar()
        self.task.busy_changed.connect(self._busy_changed)
        self.summary = TextLabel("")
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.open_button)
        stack(self, self.form.native, buttons, self.task, self.summary)

    def output_folder(self) -> str:
        if not self.out.path and self.data.path:
            self.out.path = default_output(self.data.path)
        return self.out.path

    def options(self) -> dict:
        from napari_intr.class_names import RepeatedNames, parse_pairs  # the CLI's rule
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", RepeatedNames)
            pairs = parse_pairs(self.pairs.value, "Look-alike pairs")
        for note in notes:  # a repeated pair is dropped: say so, as the CLI does
            messages.notify(str(note.message), "info")
        return {"layer": self.layer.value or None, "per_head": self.per_head.value,
                "pairs": pairs, "parts": self.parts.path or None}

    def run(self) -> None:
        if self.state.model is None:
            messages.notify("No model loaded yet: press 'Load model' in the Model box", "warning")
            return
        if not self.data.path:
            messages.notify("Choose the image folder first (one subfolder per class)", "warning")
            return
        try:
            options = self.options()
        except ValueError as error:
            messages.notify(str(error), "warning")
            return
        out = self.output_folder()
        self.summary.setText("")
        self.task.start(atlas_job, self.state.model, self.state.model_name, self.data.path, out, options,
                        doing=f"Building the atlas of '{Path(self.data.path).name}'", with_cancel_event=True,
                        show_in_activity=True, on_result=lambda result: self._finished(result, out))

    def open_existing(self) -> None:
        out = self.output_folder()
        if not out or not holds_atlas(out):
            messages.notify(f"No atlas in '{out or '(no folder chosen)'}': choose the folder an atlas was "
                            "written to, or build one", "warning")
            return
        self.atlas_ready.emit(out)

    def _finished(self, result, out: str) -> None:
        if result.cancelled:
            self.summary.setText(f"Stopped: {result.reused + result.summarised_now} of {result.total} images "
                                 "summarised and kept; Build atlas continues from there.")
            return
        rejected = result.atlas.rejected
        listed = "".join(f"\n  {Path(key).name} (folder {name})" for key, name, _ in rejected[:10])
        more = f"\n  … {len(rejected) - 10} more in atlas.json" if len(rejected) > 10 else ""
        none_of = (f"; {len(rejected)} are none of the {len(result.atlas.classes)} species (below the calibrated "
                   f"open-set threshold) and left out of the summaries:{listed}{more}") if rejected else ""
        self.summary.setText(f"{result.summarised_now} images summarised now, {result.reused} reused, "
                             f"{len(result.atlas.skipped)} unreadable{none_of}; written to {out}")
        for warning in result.warnings:
            messages.notify(warning, "warning")
        self.atlas_ready.emit(out)

    def _suggest_output(self) -> None:
        if self.data.path and not self.out.path:
            self.out.path = default_output(self.data.path)

    def _busy_changed(self, busy: bool) -> None:
        self.form.enabled = not busy
        for button in (self.run_button, self.open_button):
            button.setEnabled(not busy)
