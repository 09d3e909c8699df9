"""Settings box of the fine-tuning widget: the base model, the training settings and the output
folder; turns them into `intr train` arguments (empty fields keep the training recipe's value)."""
from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLineEdit, QSpinBox

from ...devices import DEVICES
from ..model_source import EXPLORER_MODEL, ModelSourcePicker
from ..qt_helpers import FileField
from ..state import ExplorerState

BASE_MODEL_FILE = "base_model.safetensors"  # the Explorer's in-memory model, saved into the run
FREEZE = (("nothing", None), ("backbone", "backbone"), ("backbone and encoder", "encoder"))


def default_runs_folder() -> Path:
    """The user's data directory (never the installed package): ~/.local/share/napari-intr/runs
    on Linux, ~/Library/Application Support/napari-intr/runs on macOS, %LOCALAPPDATA% on Windows."""
    from platformdirs import user_data_dir
    return Path(user_data_dir("napari-intr", appauthor=False)) / "runs"


def new_run_folder() -> Path:
    return default_runs_folder() / time.strftime("%Y%m%d-%H%M%S")


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    return box


class SettingsBox(QGroupBox):
    def __init__(self, state: ExplorerState, parent=None):
        super().__init__("Base model and settings", parent)
        self.state = state
        self.base = ModelSourcePicker(with_explorer_model=True)
        self.base.setToolTip("The model to start from; classes it knows keep what they learned, "
                             "new classes get fresh queries")
        self.epochs = _spin(1, 100_000, 20, "Epochs in total (Resume may raise it)")
        self.batch_size = _spin(1, 4096, 8, "Images per step: lower it when memory runs out")
        self.lr = QLineEdit()
        self.lr.setPlaceholderText("recipe (tiny 1e-3, resnet 1e-4; peak of the schedule)")
        self.lr_backbone = QLineEdit()
        self.lr_backbone.setPlaceholderText("recipe (tiny 1e-3, resnet 1e-5)")
        self.image_size = _spin(0, 4096, 0, "Short side in px; lower it when memory runs out")
        self.image_size.setSpecialValueText("model's")
        self.freeze = QComboBox()
        for label, value in FREEZE:
            self.freeze.addItem(label, value)
        self.freeze.setToolTip("Keep parts of the base model as they are: faster, and safer on few images. A "
                               "frozen backbone's features are computed once per image and kept in the run "
                               "folder (feature_cache), so later epochs skip the backbone")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setToolTip("auto: CUDA GPU, then Apple MPS, then CPU")
        self.seed = _spin(0, 2**31 - 1, 0, "Seed for the split, the order and the augmentation")
        self.out = FileField("output folder", "Choose the run's output folder", folder=True)
        self.out.path = new_run_folder()
        form = QFormLayout(self)
        form.addRow(self.base)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Learning rate", self.lr)
        form.addRow("Backbone LR", self.lr_backbone)
        form.addRow("Image size", self.image_size)
        form.addRow("Freeze", self.freeze)
        form.addRow("Device", self.device)
        form.addRow("Seed", self.seed)
        form.addRow("Output folder", self.out)

    def output_folder(self) -> Path:
        if not self.out.path:
            raise ValueError("choose an output folder for the run")
        out = Path(self.out.path).expanduser()
        if out.exists() and not out.is_dir():
            raise ValueError(f"the output folder {out} is a file; choose a folder")
        return out

    def init_argument(self, out: Path) -> str:
        """--init: "sample", a zoo name or a checkpoint path. The Explorer's model is used from its
        file when it came from one; otherwise it is saved into the run folder first."""
        choice = self.base.chosen_source()
        if choice != EXPLORER_MODEL:
            return choice
        model, name = self.state.model, self.state.model_name
        if model is None:
            raise ValueError("the Explorer has no model loaded; load one there or choose another base model")
        if name and Path(name).is_file():
            return name
        from napari_intr import save_model
        out.mkdir(parents=True, exist_ok=True)
        return str(save_model(model, out / BASE_MODEL_FILE, source=f"INTR Explorer model '{name}'"))

    def train_arguments(self, data: str, val_split: float, out: Path) -> list[str]:
        """Arguments of a new run (ValueError with a message for a bad field)."""
        arguments = ["--data", data, "--out", str(out), "--init", self.init_argument(out),
                     "--epochs", str(self.epochs.value()), "--batch-size", str(self.batch_size.value()),
                     "--device", self.device.currentText(), "--seed", str(self.seed.value()),
                     "--val-split", str(val_split)]
        for flag, field, label in (("--lr", self.lr, "learning rate"),
                                   ("--lr-backbone", self.lr_backbone, "backbone learning rate")):
            if field.text().strip():
                arguments += [flag, str(self._rate(field.text(), label))]
        if self.image_size.value():
            arguments += ["--image-size", str(self.image_size.value())]
        if self.freeze.currentData():
            arguments += ["--freeze", self.freeze.currentData()]
        return arguments

    def resume_arguments(self, data: str, out: Path) -> list[str]:
        """A resumed run keeps its saved settings; only these may change."""
        return ["--data", data, "--out", str(out), "--epochs", str(self.epochs.value()),
                "--device", self.device.currentText(), "--resume"]

    @staticmethod
    def _rate(text: str, label: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"the {label} must be a number such as 1e-4, not {text!r}") from None
        if not 0 < value < 1:
            raise ValueError(f"the {label} must be above 0 and below 1 (e.g. 1e-4), not {text}")
        return value
