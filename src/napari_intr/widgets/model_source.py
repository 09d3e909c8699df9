"""Choosing a model: the source picker the Explorer and Fine-tune share, and the Explorer's Model
box, which loads the chosen model once, in a worker, and publishes it in the shared state."""
from __future__ import annotations

import gc
from pathlib import Path

from magicgui.widgets import ComboBox, Container
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QPushButton,
    QWidget,
)

from ..devices import DEVICES, PRECISIONS
from .qt_helpers import PathEdit, TextLabel, stack
from .state import ExplorerState, follow
from .workers import messages
from .workers.jobs import load_model_job
from .workers.task_bar import TaskBar

SAMPLE = "sample"
CHECKPOINT_FILE = "file"
EXPLORER_MODEL = "explorer"  # Fine-tune only: start from the model the Explorer has loaded
NEW_MODEL = "new:"  # Fine-tune only: "new:<backbone>", a new model on a foundation backbone's published weights


class ModelSourcePicker(QWidget):
    """Where a model comes from: the bundled sample, a zoo model or a checkpoint file (and, for
    fine-tuning, the Explorer's current model). The Explorer and Fine-tune docks both use it."""

    def __init__(self, with_explorer_model: bool = False, parent=None):
        super().__init__(parent)
        from napari_intr import zoo
        self.source = QComboBox()
        self.source.addItem("Bundled: tiny INTR, synthetic butterflies", SAMPLE)
        for name, item in zoo.ZOO.items():
            if item.kind == "intr":
                where = "cached" if zoo.cached_path(name).exists() else "downloads on first use"
                self.source.addItem(f"Zoo: {name} ({item.num_classes} classes, {where})", name)
        self.source.addItem("Checkpoint file (.safetensors or official .pth)…", CHECKPOINT_FILE)
        if with_explorer_model:
            from napari_intr.model.config import VIT_BACKBONES
            self.source.addItem("The Explorer's current model", EXPLORER_MODEL)
            for name in VIT_BACKBONES:
                where = "cached" if zoo.cached_path(name).exists() else "downloads on first use"
                self.source.addItem(f"New model on {name} (published weights, {where})", NEW_MODEL + name)
        self.source.currentIndexChanged.connect(self._source_changed)
        self.source.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.source.setMinimumContentsLength(12)
        self.checkpoint = PathEdit("checkpoint file", "Choose an INTR checkpoint",
                                    file_filter="Checkpoints (*.safetensors *.pth *.pt);;All files (*)")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Source", self.source)
        form.addRow("Checkpoint", self.checkpoint.native)
        self._source_changed()

    def choice(self) -> str:
        """SAMPLE, a zoo name, CHECKPOINT_FILE or EXPLORER_MODEL."""
        return self.source.currentData()

    def chosen_source(self) -> str:
        """"sample", a zoo name, a checkpoint path or EXPLORER_MODEL; ValueError when incomplete."""
        if self.choice() != CHECKPOINT_FILE:
            return self.choice()
        if not self.checkpoint.path:
            raise ValueError("choose a checkpoint file (Browse…) or another model source")
        return self.checkpoint.path

    def label(self) -> str:
        """A short name for messages: the file's name for a checkpoint, else the source itself."""
        source = self.chosen_source()
        return Path(source).name if self.choice() == CHECKPOINT_FILE else source

    def show_source(self, source: str) -> None:
        """Show `source` ("sample", a zoo name or a checkpoint path) as the choice, e.g. for a model
        that another dock published (Fine-tune's "Use in Explorer"), so the box never names a
        model other than the one loaded."""
        index = self.source.findData(source)
        if index < 0:
            index = self.source.findData(CHECKPOINT_FILE)
            self.checkpoint.path = source
        self.source.setCurrentIndex(index)

    def _source_changed(self) -> None:
        self.checkpoint.enabled = self.choice() == CHECKPOINT_FILE


class ModelSourceBox(QGroupBox):
    """The Explorer's Model box: a source, class names and a device; loads once, in a worker, and
    publishes the model in the shared state."""

    def __init__(self, state: ExplorerState, parent=None):
        super().__init__("Model", parent)
        self.state = state
        self.picker = ModelSourcePicker()
        # the loading settings: a magicgui form
        self.class_names = PathEdit("optional: text file, one class name per line", "Choose a class-names file",
                                    file_filter="Text (*.txt);;All files (*)", label="Class names")
        self.device = ComboBox(label="Device", choices=DEVICES, tooltip="auto: CUDA GPU, then Apple MPS, then CPU")
        self.precision = ComboBox(label="Precision", choices=PRECISIONS,
                                  tooltip="auto: bf16 where the CPU (AVX512-BF16, AMX) or a CUDA GPU computes it "
                                          "natively, else fp32; fp32: exact float32 (slower on such CPUs)")
        self.form = Container(widgets=[self.class_names, self.device, self.precision])
        self.form.margins = (0, 0, 0, 0)
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load)
        self.task = TaskBar()
        self.task.busy_changed.connect(lambda busy: self.load_button.setEnabled(not busy))
        self.loaded = TextLabel("No model loaded")
        stack(self, self.picker, self.form.native, self.load_button, self.task, self.loaded)
        follow(state.events.model, self._show_loaded, self)
        self.picker.source.currentIndexChanged.connect(self._hint_class_names)
        self._hint_class_names()
        self._show_loaded()

    def load(self) -> None:
        try:
            source, label = self.picker.chosen_source(), self.picker.label()
        except ValueError as error:
            messages.notify(str(error), "warning")
            return
        self.task.start(load_model_job, source, self.class_names.path or None, self.device.value,
                        self.precision.value, doing=f"Loading model '{label}'", with_cancel_event=True,
                        show_in_activity=True, on_result=lambda model: self._publish(model, label))

    def ensure_loading(self) -> bool:
        """Start loading the chosen model unless a load is running; True if one is on its way."""
        if not self.task.busy:
            self.load()
        return self.task.busy

    def _publish(self, model, name: str) -> None:
        self.state.publish_model(model, name)
        # napari, torch and the model are now ~550 000 long-lived objects: a full garbage
        # collection walks them all (0.3-1.2 s here), stalling napari whenever one happens to
        # fall during an Explain. Frozen, they are left out of collections (1 ms).
        gc.freeze()
        messages.notify(f"Model '{name}' loaded: {len(model.class_names)} classes on {model.device}")
        hint = self._missing_names_hint()
        if hint and not self.class_names.path:
            messages.notify(f"{name}: its classes are shown as numbers; {hint}", "warning")

    def _missing_names_hint(self) -> str:
        """Where to get class names for the chosen zoo model, if none ship with it."""
        from napari_intr import zoo
        item = zoo.ZOO.get(self.picker.choice())
        return item.class_names_hint if item is not None and item.class_list is None else ""

    def _hint_class_names(self, *_) -> None:
        from napari_intr import zoo
        item = zoo.ZOO.get(self.picker.choice())
        if item is not None and item.class_list is not None:
            text = "optional: the species names ship with this model"
        elif self._missing_names_hint():
            text = "needed for species names: text file, one name per line"
        else:
            text = "optional: text file, one class name per line"
        self.class_names.edit.setPlaceholderText(text)
        self.class_names.tooltip = self._missing_names_hint()

    def _show_loaded(self, *_) -> None:
        state = self.state
        if state.model is None:
            self.loaded.setText("No model loaded")
            return
        if state.model_name and state.model_name not in (self.picker.choice(), self.picker.checkpoint.path):
            self.picker.show_source(state.model_name)
        config = state.model.config
        self.loaded.setText(f"Loaded: {state.model_name} — {len(state.class_names)} classes, "
                            f"{config.backbone} backbone, {config.dec_layers} decoder layers × "
                            f"{config.nheads} heads, on {state.device}")
