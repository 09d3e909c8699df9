"""Model box: the bundled sample, a zoo model or a checkpoint file; class names; device. Loads once,
in a worker, and publishes the model in the shared state."""
from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QPushButton, QVBoxLayout

from ..devices import DEVICES
from . import messages
from .text_label import TextLabel
from .file_field import FileField
from .state import ExplorerState, follow
from .task_bar import TaskBar
from .workers import load_model_job

SAMPLE = "sample"
CHECKPOINT_FILE = "file"


class ModelPicker(QGroupBox):
    def __init__(self, state: ExplorerState, parent=None):
        super().__init__("Model", parent)
        from napari_intr import zoo
        self.state = state
        self.source = QComboBox()
        self.source.addItem("Bundled: tiny INTR, synthetic butterflies", SAMPLE)
        for name, item in zoo.ZOO.items():
            if item.kind == "intr":
                where = "cached" if zoo.cached_path(name).exists() else "downloads on Load"
                self.source.addItem(f"Zoo: {name} ({item.num_classes} classes, {where})", name)
        self.source.addItem("Checkpoint file (.safetensors or official .pth)…", CHECKPOINT_FILE)
        self.source.currentIndexChanged.connect(self._source_changed)
        self.source.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.source.setMinimumContentsLength(12)
        self.checkpoint = FileField("checkpoint file", "Choose an INTR checkpoint",
                                    file_filter="Checkpoints (*.safetensors *.pth *.pt);;All files (*)")
        self.class_names = FileField("optional: text file, one class name per line",
                                     "Choose a class-names file", file_filter="Text (*.txt);;All files (*)")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setToolTip("auto: CUDA GPU, then Apple MPS, then CPU")
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load)
        self.task = TaskBar()
        self.task.busy_changed.connect(lambda busy: self.load_button.setEnabled(not busy))
        self.loaded = TextLabel("No model loaded")
        form = QFormLayout()
        form.addRow("Source", self.source)
        form.addRow("Checkpoint", self.checkpoint)
        form.addRow("Class names", self.class_names)
        form.addRow("Device", self.device)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.load_button)
        layout.addWidget(self.task)
        layout.addWidget(self.loaded)
        self._source_changed()
        follow(state.events.model, self._show_loaded, self)
        self._show_loaded()

    def chosen_source(self) -> str:
        """"sample", a zoo name or a checkpoint path; raises ValueError when incomplete."""
        choice = self.source.currentData()
        if choice != CHECKPOINT_FILE:
            return choice
        if not self.checkpoint.path:
            raise ValueError("choose a checkpoint file (Browse…) or another model source")
        return self.checkpoint.path

    def load(self) -> None:
        try:
            source = self.chosen_source()
        except ValueError as error:
            messages.notify(str(error), "warning")
            return
        label = Path(source).name if self.source.currentData() == CHECKPOINT_FILE else source
        self.task.start(load_model_job, source, self.class_names.path or None, self.device.currentText(),
                        doing=f"Loading model '{label}'", with_cancel_event=True,
                        show_in_activity=True, on_result=lambda model: self._publish(model, label))

    def _publish(self, model, name: str) -> None:
        self.state.publish_model(model, name)
        messages.notify(f"Model '{name}' loaded: {len(model.class_names)} classes on {model.device}")

    def _source_changed(self) -> None:
        self.checkpoint.setEnabled(self.source.currentData() == CHECKPOINT_FILE)

    def _show_loaded(self, *_) -> None:
        state = self.state
        if state.model is None:
            self.loaded.setText("No model loaded")
            return
        config = state.model.config
        self.loaded.setText(f"Loaded: {state.model_name} — {len(state.class_names)} classes, "
                            f"{config.backbone} backbone, {config.dec_layers} decoder layers × "
                            f"{config.nheads} heads, on {state.device}")
