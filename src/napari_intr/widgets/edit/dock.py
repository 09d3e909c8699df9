"""The "INTR Edit" dock widget: paint a region, edit it, see what the edit does to the prediction.

Edit adds a labels layer over the chosen image to paint on. Apply runs the chosen operation on
the painted region in a worker, writes the result to the layer `<image> (edited)` (the original
is never changed) and explains the edited image: the report shows before vs after. Edits stack;
Undo and Reset restore earlier images and their predictions exactly (nothing is re-run). Export
writes the edited image and a JSON + CSV report (`napari_intr.editing.export`).

A separate dock widget sharing the Explorer's state (the loaded model): editing is its own
workflow and needs the room of its own dock."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QWidget,
)

from napari_intr.editing import EditSession, check_region, compare_explanations, export, pillow_can_write
from napari_intr.filenames import SAFE_NAME_BYTES, apart_from_case_twins, fitting_name, safe_stem

from ..layers import LayerPicker, is_labels
from ..qt_helpers import PathEdit, TextLabel, group_box, scroll_column, set_items, tabbed_dock
from ..state import follow, shared_state
from ..workers import messages
from ..workers.jobs import edit_job
from ..workers.task_bar import TaskBar
from .options import EditOptions, plain_image
from .report import EditReport

SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}  # what export's writer handles


def export_paths(session: EditSession, image_layer, folder: Path) -> tuple[Path, Path]:
    """(image file, report stem) named after the image, in the input file's format where the
    layer came from a file; otherwise PNG for 8-bit images and TIFF for the rest (lossless)."""
    # fitted: the report adds " report.json" and a long layer name must still make a file name
    stem = fitting_name(f"{safe_stem(session.name)} (edited)", "", SAFE_NAME_BYTES - 16)
    stem = apart_from_case_twins(folder, stem, session.name)  # "Moth" and "moth" would be one file on macOS
    path = getattr(getattr(image_layer, "source", None), "path", None)
    suffix = Path(path).suffix.lower() if path else ""
    if suffix not in SUFFIXES:
        image = session.original
        suffix = ".png" if image.dtype == np.uint8 and pillow_can_write(image) else ".tif"
    return folder / (stem + suffix), folder / f"{stem} report"


class EditWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        tabbed_dock(self)
        self.viewer, self.state = napari_viewer, shared_state(napari_viewer)
        self.session: EditSession | None = None
        self.image_layer = self.region_layer = self.edited_layer = None
        self.current_explanation = None     # of session.current, with the current model
        self.image = LayerPicker(napari_viewer, tooltip="The image to edit; it is never changed (edits go to "
                                                        "'<image> (edited)')")
        self.start_button = QPushButton("Edit")
        self.start_button.setToolTip("Add a labels layer over the image: paint the region to edit")
        self.start_button.clicked.connect(self.start)
        self.mask = LayerPicker(napari_viewer, is_labels,
                                tooltip="The labels layer whose painted (non-zero) pixels are the region")
        self.options = EditOptions(napari_viewer)
        self.attention_class = QComboBox()
        self.attention_class.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.attention_class.setMinimumContentsLength(12)
        self.attention_class.setToolTip("The class whose attention is compared before vs after")
        self.attention_class.currentTextChanged.connect(self.show_last_effect)
        self.apply_button = QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply)
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.undo)
        self.reset_button = QPushButton("Reset")
        self.reset_button.clicked.connect(self.reset)
        self.task = TaskBar()
        self.task.busy_changed.connect(self._busy_changed)
        self.edits = QListWidget()
        self.edits.setTextElideMode(Qt.ElideMiddle)  # "transplant from <layer> over 700 px": both ends matter
        self.edits.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # elide, never scroll sideways
        self.edits.setMaximumHeight(90)
        self.status = TextLabel("Choose an image and press Edit, then paint the region to edit")
        self.report = EditReport(napari_viewer)
        self.folder = PathEdit("folder for the edited image and the report", "Choose a folder", folder=True)
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.export)

        form = QFormLayout()
        form.addRow("Image", self.image.native)
        form.addRow("", self.start_button)
        form.addRow("Painted region", self.mask.native)
        form.addRow(self.options)
        form.addRow("Attention of", self.attention_class)
        buttons = QHBoxLayout()
        for button in (self.apply_button, self.undo_button, self.reset_button):
            buttons.addWidget(button)
        edit_box = group_box("Paint and edit", self.status, form, buttons, self.task, self.edits)
        export_box = group_box("Export", self.folder.native, self.export_button)
        # the report's tables grow with the class count, so boxes keep their stretch
        scroll_column(self, (edit_box, self.report, export_box), min_width=400, natural_height=False)
        follow(self.state.events.model, self._new_model, self)
        self._new_model(self.state.model)

    # --- session -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start editing the chosen image: a fresh history and a labels layer to paint on."""
        layer = self.image.layer()
        if layer is None:
            messages.notify("Edit: choose an image layer to edit (File ▸ Open Sample ▸ napari-intr "
                            "has specimens)", "warning")
            return
        try:
            data = plain_image(layer)
        except ValueError as error:
            messages.notify(f"Edit: {error}", "warning")
            return
        reuse = (self.session is not None and self.session.name == layer.name
                 and self.region_layer is not None and self.region_layer in self.viewer.layers
                 and self.region_layer.data.shape == data.shape[:2])
        if self.session is not None and self.session.history:
            messages.notify(f"Started new edits of '{layer.name}'; the earlier edited layer "
                            f"'{self.edited_layer.name}' is kept as it is")
        self.session = EditSession(data, layer.name)
        self.image_layer, self.edited_layer = layer, None
        self.current_explanation = None
        if not reuse:  # a new painting layer, unless this image's one is still there
            scale, translate = tuple(layer.scale[-2:]), tuple(layer.translate[-2:])
            self.region_layer = self.viewer.add_labels(np.zeros(data.shape[:2], np.uint8),
                                                       name=f"{layer.name} (edit region)",
                                                       scale=scale, translate=translate)
            self.region_layer.brush_size = max(3, min(data.shape[:2]) // 25)
        self.region_layer.mode = "paint"
        self.viewer.layers.selection.active = self.region_layer
        self.mask.choose(self.region_layer.name)
        self.report.clear("")
        self._show_edits()
        self.status.setText(f"Editing '{layer.name}': paint the region on '{self.region_layer.name}', "
                            "choose an operation and press Apply")

    def apply(self) -> None:
        session = self.session
        if session is None:
            messages.notify("Apply: press Edit first to choose the image and paint a region", "warning")
            return
        if self.state.model is None:
            messages.notify("Apply: no model loaded; load one in the INTR Explorer", "warning")
            return
        mask_layer = self.mask.layer()
        if mask_layer is None:
            messages.notify("Apply: choose the labels layer with the painted region", "warning")
            return
        try:
            region = check_region(np.asarray(mask_layer.data), session.current.shape)
            edit = self.options.make_edit(session.current.shape)
        except ValueError as error:
            messages.notify(f"Apply: {error}", "warning")
            return
        from napari_intr.explanation import Explainer
        self.task.start(edit_job, Explainer(self.state.model, self.state.model_name), session, edit,
                        region, self.current_explanation,
                        doing=f"Editing '{session.name}' ({edit.describe()})", on_result=self._applied)

    def _applied(self, step) -> None:
        if self.session is None:
            return
        self.session.push(step)
        self.current_explanation = step.after if self.state.model is step.explained_by else None
        if len(self.session.history) == 1:  # the first edit: compare the class the model picked before
            self.attention_class.blockSignals(True)
            self.attention_class.setCurrentText(step.before.top_class())
            self.attention_class.blockSignals(False)
        self._show_image()
        self._show_edits()
        self.show_last_effect()

    def undo(self) -> None:
        if self.session is None or not self.session.history:
            messages.notify("Undo: nothing to undo, no edits have been applied", "warning")
            return
        undone = self.session.history[-1]
        self.session.undo()
        self._explained_before(undone)
        self._show_image()
        self._show_edits()
        self.show_last_effect()

    def reset(self) -> None:
        if self.session is None or not self.session.history:
            messages.notify("Reset: nothing to reset, no edits have been applied", "warning")
            return
        first = self.session.history[0]
        self.session.reset()
        self._explained_before(first)
        self._show_image()
        self._show_edits()
        self.show_last_effect()

    def _explained_before(self, step) -> None:
        """The image is back to what `step` edited: reuse its explanation if the model is the same."""
        self.current_explanation = step.before if step.explained_by is self.state.model else None

    # --- report --------------------------------------------------------------------------------
    def effect(self, index: int):
        """The effect of edit `index` (0-based) on the chosen class, or a ValueError."""
        step = self.session.history[index]
        return compare_explanations(step.before, step.after, step.region, self.attention_class.currentText())

    def current_prediction(self):
        """The explanation of the image as it is now (after the last kept edit)."""
        history = self.session.history if self.session is not None else ()
        return history[-1].after if history else self.current_explanation

    def show_last_effect(self, *_) -> None:
        if self.session is None or not self.session.history:
            prediction = self.current_explanation
            self.report.clear("No edits." + ("" if prediction is None else
                              f" Prediction: '{prediction.top_class()}' "
                              f"(p = {prediction.probabilities.max():.3f})"))
            return
        try:
            effect = self.effect(len(self.session.history) - 1)
        except ValueError as error:
            messages.notify(f"Showing the edit's effect failed: {error}", "warning")
            return
        self.report.show_effect(effect, self.session.history[-1].after, self.image_layer, self.edited_layer.name)

    def export(self) -> None:
        session = self.session
        if session is None or not session.history:
            messages.notify("Export: nothing to export, apply an edit first", "warning")
            return
        if not self.folder.path:
            messages.notify("Export: choose a folder for the edited image and the report", "warning")
            return
        folder = Path(self.folder.path).expanduser()
        image_path, report_stem = export_paths(session, self.image_layer, folder)
        existing = [path for path in (image_path, report_stem.with_name(report_stem.name + ".json"),
                                      report_stem.with_name(report_stem.name + ".csv")) if path.exists()]
        if existing:
            messages.notify(f"Export: {existing[0]} exists from an earlier export; nothing was "
                            "overwritten: choose another folder or move the files", "warning")
            return
        effects = []
        for index in range(len(session.history)):
            try:
                effects.append(self.effect(index))
            except ValueError:  # the class is not among this edit's decoded classes (another model)
                effects.append(None)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            paths = export(session, effects, image_path, report_stem)
        except (OSError, ValueError) as error:
            messages.notify(messages.describe_error(error, "Exporting the edit"), "error")
            return
        messages.notify(f"Exported '{paths['image'].name}' and the report ({paths['json'].name}, "
                        f"{paths['csv'].name}) to {folder}")

    # --- helpers -------------------------------------------------------------------------------
    def _show_image(self) -> None:
        """Write the session's current image to '<image> (edited)' (made on the first edit)."""
        data, name = self.session.current, f"{self.session.name} (edited)"
        layer = self.edited_layer
        if layer is not None and layer in self.viewer.layers:
            layer.data = data
            return
        source = self.image_layer
        self.edited_layer = self.viewer.add_image(
            data, name=name, rgb=source.rgb, scale=tuple(source.scale[-2:]),
            translate=tuple(source.translate[-2:]), contrast_limits=source.contrast_limits,
            colormap=source.colormap.name if not source.rgb else None)
        if self.region_layer is not None and self.region_layer in self.viewer.layers:
            self.viewer.layers.move(self.viewer.layers.index(self.region_layer), len(self.viewer.layers))

    def _show_edits(self) -> None:
        self.edits.clear()
        descriptions = self.session.descriptions() if self.session is not None else []
        self.edits.addItems(descriptions or ["(no edits yet)"])
        for row in range(self.edits.count()):  # the whole description, however narrow the dock
            self.edits.item(row).setToolTip(self.edits.item(row).text())

    def _new_model(self, model) -> None:
        set_items(self.attention_class, self.state.class_names if model is not None else (), keep_current=True)
        self.current_explanation = None  # explained by the previous model

    def _busy_changed(self, busy: bool) -> None:
        for button in (self.start_button, self.apply_button, self.undo_button, self.reset_button,
                       self.export_button):
            button.setEnabled(not busy)
