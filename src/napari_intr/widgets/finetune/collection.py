"""Collection box: the image folder to fine-tune on, its classes with image counts (scanned in a
worker with the training package's own `scan_collection`), and the validation split."""
from __future__ import annotations

from typing import Callable

from magicgui.widgets import Container, FloatSpinBox
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QGroupBox, QPushButton

from ..qt_helpers import PathEdit, TextLabel, fill_table, read_only_table, stack
from ..workers.jobs import FEW_IMAGES, CollectionSummary, scan_job
from ..workers.task_bar import TaskBar

SKIPPED_SHOWN = 5


class CollectionBox(QGroupBox):
    def __init__(self, parent=None):
        super().__init__("Collection", parent)
        self.folder = PathEdit("folder: <class name>/<images>, or train/ and val/",
                               "Choose the image collection", folder=True, label="Folder")
        self.folder.edit.textChanged.connect(self._forget)
        self.val_split = FloatSpinBox(label="Validation split", min=0.0, max=0.5, step=0.05, value=0.1, tooltip=(
            "Fraction of each class held out for validation (when the folder has no train/ and val/ "
            "subfolders); 0: no validation"))
        self.val_split.changed.connect(self._forget)
        self.form = Container(widgets=[self.folder, self.val_split])  # a magicgui form
        self.form.margins = (0, 0, 0, 0)
        self.scan_button = QPushButton("Scan collection")
        self.scan_button.clicked.connect(lambda: self.scan())
        self.task = TaskBar()
        self.task.busy_changed.connect(lambda busy: self.scan_button.setEnabled(not busy))
        self.table = read_only_table(("Class", "Train", "Val"))
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.table.setMinimumHeight(120)
        self.table.setVisible(False)
        self.notes = TextLabel("")
        stack(self, self.form.native, self.scan_button, self.task, self.table, self.notes)
        self.summary: CollectionSummary | None = None
        self.seed = 0  # the split's seed: the settings' seed, set by the owner before a scan

    def scan(self, then: Callable[[CollectionSummary], None] | None = None) -> None:
        """Scan the folder in a worker; `then(summary)` runs after a successful scan."""
        root = self.folder.path
        if not root:
            from ..workers import messages
            messages.notify("Choose the collection folder first (one subfolder of images per class)", "warning")
            return
        self.task.start(scan_job, root, self.val_split.value, self.seed, doing=f"Scanning '{root}'",
                        on_result=lambda summary: self._scanned(summary, then))

    def _scanned(self, summary: CollectionSummary, then) -> None:
        self.summary = summary
        fill_table(self.table, [(name, str(train), str(val)) for name, train, val in summary.counts],
                   numeric_columns=(1, 2))
        self.table.setVisible(True)
        total_train = sum(train for _, train, _ in summary.counts)
        total_val = sum(val for _, _, val in summary.counts)
        where = "from the val/ folder" if summary.val_folder else f"held out ({summary.val_split:.0%} per class)"
        notes = [f"{len(summary.counts)} classes, {total_train} training images, {total_val} validation "
                 f"images {where}."]
        few = summary.few_image_classes()
        if few:
            shown = ", ".join(few[:5]) + (f" and {len(few) - 5} more" if len(few) > 5 else "")
            notes.append(f"Few images (under {FEW_IMAGES}) in {len(few)} classes: {shown}. The model "
                         "will struggle to learn them; add images if you can.")
        if total_val == 0:
            notes.append("No validation images: the best epoch cannot be chosen, the last one is kept.")
        notes += summary.notes[:5]
        skipped = summary.skipped
        if skipped:  # counted always, listed in part here and whole in the tooltip
            notes.append(f"{len(skipped)} images skipped, each for its reason"
                         + (f" (the first {SKIPPED_SHOWN} here, all on hover):" if len(skipped) > SKIPPED_SHOWN else ":"))
            notes += skipped[:SKIPPED_SHOWN]
        self.notes.setText("\n".join(notes))
        self.notes.setToolTip("\n".join(skipped))
        if then is not None:
            then(summary)

    def _forget(self, *_) -> None:
        self.summary = None
