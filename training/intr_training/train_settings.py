"""The settings of one `intr train` run, resolved once from four sources; a later one wins:

1. the defaults (`DEFAULTS`);
2. the recipe: `--recipe paper` (its start, `PAPER_START`, and `PAPER`) or the backbone's
   (`recipes.RECIPES`), its learning rates scaled to the effective batch;
3. the saved run, on --resume: what it was trained with, in place of 1 and 2;
4. the command line: every value given (on --resume only `RUNTIME_ARGUMENTS`; the others are
   reported as ignored).

`TrainSettings` is frozen and checks its ranges when it is made; `TrainingRun` and the loop see
nothing else. The run folder stores `saved()` (training_state.pt's "args"), and `resumed` reads it
back, runs saved before this class included (their argument dicts hold the same names).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from napari_intr.recipes import PAPER, PAPER_START, RECIPES, RUNTIME_ARGUMENTS, STEP_DROP_SHARE


@dataclass(frozen=True)
class TrainSettings:
    data: str
    out: str
    backbone: str | None = None        # None: the --init checkpoint's (or the default backbone)
    init: str | None = None
    recipe: str | None = None          # None or "default": the backbone's; "paper"
    epochs: int = 1
    batch_size: int = 1
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    lr_drop: int | None = None         # --schedule step: the epoch after which the rates drop 10x
    augment: str = "flip"
    image_size: int | None = None      # None: the model's own short side
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    progress: str | None = None
    val_split: float = 0.1
    freeze: str | None = None
    accumulate: int = 1
    workers: int | None = None         # None: chosen from what the loader reads
    cache_features: bool = False
    precision: str = "auto"
    dropout: float | None = None       # None: the model's own (a resumed model keeps its saved dropout)
    sampled_queries: int | None = None

    def __post_init__(self):
        for name in ("epochs", "batch_size", "accumulate", "lr_drop"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{flag(name)} must be at least 1, got {value}")
        if self.dropout is not None and not 0 <= self.dropout < 1:  # the model config's range
            raise ValueError(f"--dropout must be at least 0 and below 1, got {self.dropout}")
        if self.warmup_epochs < 0:
            raise ValueError(f"--warmup-epochs must be 0 or more, got {self.warmup_epochs}")

    def saved(self) -> dict:
        """Plain values for the run folder (training_state.pt's "args")."""
        return dataclasses.asdict(self)


FIELDS = tuple(field.name for field in dataclasses.fields(TrainSettings))
# 1. The defaults: what neither a recipe nor the command line sets.
DEFAULTS = {"seed": 0, "val_split": 0.1, "accumulate": 1, "precision": "auto", "device": "auto", "resume": False}


def flag(name: str) -> str:
    return name.replace("_", "-")


def given(command_line: dict) -> dict:
    """The settings the command line gives (argparse leaves the others None)."""
    return {name: value for name, value in command_line.items() if name in FIELDS and value is not None}


def start_values(command_line: dict) -> dict:
    """What building the first model needs, before its backbone (and so its recipe) is known:
    the defaults, --recipe paper's start, the command line."""
    values = dict(DEFAULTS)
    if command_line.get("recipe") == "paper":
        values.update(PAPER_START)
    values |= given(command_line)
    TrainSettings(**values)  # the given values' ranges, before the data is scanned
    return values


def new_run(command_line: dict, backbone: str, world_size: int) -> tuple[TrainSettings, list[str]]:
    """A new run's settings, its model's backbone known; returns them and warnings to report."""
    recipe = PAPER if command_line.get("recipe") == "paper" else RECIPES[backbone]
    chosen = given(command_line)
    values = start_values(command_line)
    values |= {name: value for name, value in recipe.items() if name not in chosen}
    effective = world_size * values["batch_size"] * values["accumulate"]
    scale = (effective / recipe["batch_size"]) ** 0.5
    for name in {"lr", "lr_backbone"} - set(chosen):
        values[name] = recipe[name] * scale
    warnings = []
    if values["schedule"] == "step" and values.get("lr_drop") is None:
        values["lr_drop"] = max(1, round(values["epochs"] * STEP_DROP_SHARE))
    if values["schedule"] == "step" and values["lr_drop"] >= values["epochs"]:
        warnings.append(f"--lr-drop {values['lr_drop']} is not before the last epoch ({values['epochs']}): the "
                        "learning rate never drops")
    if values["schedule"] != "step" and values.get("lr_drop") is not None and "lr_drop" not in recipe:
        warnings.append(f"--lr-drop {values['lr_drop']} ignored: it applies to --schedule step only")
    frozen = values.get("freeze") is not None
    if values.get("cache_features") and not frozen:
        raise ValueError("--cache-features needs a frozen backbone: add --freeze backbone (or encoder)")
    values["cache_features"] = frozen if values.get("cache_features") is None else values["cache_features"]
    return TrainSettings(**values), warnings


def resumed(command_line: dict, saved: dict, device_type: str) -> tuple[TrainSettings, list[str]]:
    """The saved run's settings (training_state.pt's "args"), except what may change between
    sessions (RUNTIME_ARGUMENTS); returns them and warnings for the other values given."""
    values = {name: value for name, value in saved.items() if name in FIELDS}
    # Runs saved before --precision trained in fp32 on a CPU and "auto" on CUDA: continue alike.
    values.setdefault("precision", "auto" if device_type == "cuda" else "fp32")
    values.setdefault("cache_features", values.get("freeze") is not None)
    warnings = []
    for name, value in given(command_line).items():
        if name in RUNTIME_ARGUMENTS:
            values[name] = value
        elif value != values.get(name):
            warnings.append(f"--{flag(name)} {value} ignored: --resume continues with the saved run's setting "
                            f"({values.get(name)})")
    return TrainSettings(**values), warnings
