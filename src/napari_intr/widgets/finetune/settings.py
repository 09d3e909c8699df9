"""Settings box of the fine-tuning widget: the base model, the training settings and the output
folder; turns them into `intr train` arguments (empty fields keep the training recipe's value)."""
from __future__ import annotations

import time
from pathlib import Path

from magicgui.widgets import ComboBox, Container, LineEdit, SpinBox
from qtpy.QtWidgets import QGroupBox

from ... import run_folder
from ...devices import DEVICES
from ..model_source import EXPLORER_MODEL, NEW_MODEL, ModelSourcePicker
from ..qt_helpers import PathEdit, stack
from ..state import ExplorerState

# How the Freeze box names `intr train --freeze`'s choices (napari_intr.recipes.FREEZE_CHOICES).
FREEZE_LABELS = {"none": "nothing", "encoder": "backbone and encoder"}


def default_runs_folder() -> Path:
    """The user's data directory (never the installed package): ~/.local/share/napari-intr/runs
    on Linux, ~/Library/Application Support/napari-intr/runs on macOS, %LOCALAPPDATA% on Windows."""
    from platformdirs import user_data_dir
    return Path(user_data_dir("napari-intr", appauthor=False)) / "runs"


def new_run_folder() -> Path:
    return default_runs_folder() / time.strftime("%Y%m%d-%H%M%S")


def _freeze_choices() -> list[tuple[str, str | None]]:
    """The recipe's choice (a foundation ViT's backbone, nothing for the others), or one of
    `intr train --freeze`'s choices."""
    from napari_intr.recipes import FREEZE_CHOICES
    return [("recipe (ViT: backbone, others: nothing)", None),
            *((FREEZE_LABELS.get(choice, choice), choice) for choice in FREEZE_CHOICES)]


def _rate_field(label: str, key: str, note: str = "") -> LineEdit:
    """A learning-rate field; empty means the recipe's value, which its placeholder shows (read
    from napari_intr.recipes, which imports no torch)."""
    from napari_intr.recipes import RECIPES
    field = LineEdit(label=label, tooltip="Empty: the training recipe's value")
    field.native.setPlaceholderText(f"recipe (tiny {RECIPES['tiny'][key]:g}, resnet {RECIPES['resnet50'][key]:g}, "
                                    f"ViT {RECIPES['dinov2-vits14'][key]:g}{note})")
    return field


class SettingsBox(QGroupBox):
    def __init__(self, state: ExplorerState, parent=None):
        super().__init__("Base model and settings", parent)
        self.state = state
        self.base = ModelSourcePicker(with_explorer_model=True)
        self.base.setToolTip("The model to start from; classes it knows keep what they learned, "
                             "new classes get fresh queries")
        # the training settings: a magicgui form
        self.epochs = SpinBox(label="Epochs", min=1, max=100_000, value=20,
                              tooltip="Epochs in total (Resume may raise it)")
        self.batch_size = SpinBox(label="Batch size", min=1, max=4096, value=8,
                                  tooltip="Images per step: lower it when memory runs out")
        self.lr = _rate_field("Learning rate", "lr", "; peak of the schedule")
        self.lr_backbone = _rate_field("Backbone LR", "lr_backbone")
        # magicgui's SpinBox (superqt's) shows no special text for 0, so the label says what 0 means
        self.image_size = SpinBox(label="Image size (0: model's)", min=0, max=4096, value=0,
                                  tooltip="Short side in px, 0 for the model's own; lower it when memory runs out")
        self.backbone_epochs = SpinBox(label="Backbone alone first (epochs)", min=0, max=1000, value=0, tooltip=(
            "Before the epochs above, train the backbone alone for this many epochs as a plain classifier "
            "(intr train --backbone-epochs). Where a run stalled at the level of look-alike groups, 12 of "
            "them found the trait. 0: none. Needs Freeze: nothing"))
        self.freeze = ComboBox(label="Freeze", choices=_freeze_choices(), tooltip=(
            "Keep parts of the base model as they are: faster, and safer on few images. A frozen backbone's "
            "features are computed once per image and kept in the run folder (feature_cache), so later "
            "epochs skip the backbone"))
        self.device = ComboBox(label="Device", choices=DEVICES, tooltip="auto: CUDA GPU, then Apple MPS, then CPU")
        self.seed = SpinBox(label="Seed", min=0, max=2**31 - 1, value=0,
                            tooltip="Seed for the split, the order and the augmentation")
        self.out = PathEdit("output folder", "Choose the run's output folder", folder=True, label="Output folder")
        self.out.path = new_run_folder()
        self.form = Container(widgets=[self.epochs, self.batch_size, self.lr, self.lr_backbone, self.image_size,
                                       self.backbone_epochs, self.freeze, self.device, self.seed, self.out])
        self.form.margins = (0, 0, 0, 0)
        stack(self, self.base, self.form.native)

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
        return str(save_model(model, out / run_folder.BASE_MODEL_FILE, source=f"INTR Explorer model '{name}'"))

    def start_arguments(self, out: Path) -> list[str]:
        """--init of the base model, or --backbone of a new model on a foundation backbone (whose
        recipe starts from its published weights, frozen)."""
        choice = self.base.choice()
        if choice.startswith(NEW_MODEL):
            return ["--backbone", choice[len(NEW_MODEL):]]
        return ["--init", self.init_argument(out)]

    def train_arguments(self, data: str, val_split: float, out: Path) -> list[str]:
        """Arguments of a new run (ValueError with a message for a bad field)."""
        arguments = ["--data", data, "--out", str(out), *self.start_arguments(out),
                     "--epochs", str(self.epochs.value), "--batch-size", str(self.batch_size.value),
                     "--device", self.device.value, "--seed", str(self.seed.value),
                     "--val-split", str(val_split)]
        for flag, field, label in (("--lr", self.lr, "learning rate"),
                                   ("--lr-backbone", self.lr_backbone, "backbone learning rate")):
            if field.value.strip():
                arguments += [flag, str(self._rate(field.value, label))]
        if self.image_size.value:
            arguments += ["--image-size", str(self.image_size.value)]
        if self.freeze.value:
            arguments += ["--freeze", self.freeze.value]
        if self.backbone_epochs.value:
            if self.freeze.value not in (None, "none"):
                raise ValueError("Backbone alone first trains the backbone, but Freeze keeps it as it is: set "
                                 "Freeze to nothing, or Backbone alone first to 0")
            arguments += ["--backbone-epochs", str(self.backbone_epochs.value)]
        return arguments

    def resume_arguments(self, data: str, out: Path) -> list[str]:
        """A resumed run keeps its saved settings; only these may change."""
        return ["--data", data, "--out", str(out), "--epochs", str(self.epochs.value),
                "--device", self.device.value, "--resume"]

    @staticmethod
    def _rate(text: str, label: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"the {label} must be a number such as 1e-4, not {text!r}") from None
        if not 0 < value < 1:
            raise ValueError(f"the {label} must be above 0 and below 1 (e.g. 1e-4), not {text}")
        return value
