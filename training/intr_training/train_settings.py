"""The settings of one `intr train` run, resolved once from four sources; a later one wins:

1. the defaults (`DEFAULTS`);
2. the recipe: `--recipe paper` (its start, `PAPER_START`, and `PAPER`) or the backbone's
   (`recipes.RECIPES`), its learning rates scaled to the effective batch;
3. the saved run, on --resume: what it was trained with, in place of 1 and 2;
4. the command line: every value given (on --resume only `RUNTIME_ARGUMENTS`; the others are
   reported as ignored).

`TrainSettings` is frozen and checks its ranges (`RANGES`, from which `intr train` also builds
its argument types) when it is made; `TrainingRun` and the loop see nothing else. The run folder stores `saved()` (training_state.pt's "args"), and `resumed` reads it
back, runs saved before this class included (their argument dicts hold the same names).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from napari_intr.recipes import PAPER, PAPER_START, RECIPES, RUNTIME_ARGUMENTS, STEP_DROP_SHARE

# torch, numpy and Python's random all take seeds in [0, 2**32) without wrapping or overflowing.
SEED_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1  # the most an open-ended whole number may be (the int32 it goes into later)


@dataclass(frozen=True)
class Range:
    """The values one setting may take: [low, high], either end open (None) or exclusive."""
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    whole: bool = False        # an integer (an open high end then stops at INT32_MAX)
    what: str = ""             # the unit, as " px"
    below: str | None = None   # what a value below `low` is told to be, where the general words fall short

    def problem(self, value) -> str | None:
        """What `value` must be ("must be at least 1"), or None where it is in range."""
        if self.below is not None and (value < self.low if self.low_inclusive else value <= self.low):
            return f"must be {self.below}"
        return out_of_range(value, self.low, self.high, self.low_inclusive, self.high_inclusive, self.what,
                            INT32_MAX if self.whole else None)


# The one definition of each setting's range: TrainSettings checks it, `intr train` parses by it.
RANGES = {
    "epochs": Range(1, whole=True),
    "batch_size": Range(1, 4096, whole=True),
    "lr": Range(0, 10, low_inclusive=False),  # below 0 climbs the loss
    "lr_backbone": Range(0, 10),               # 0 keeps the backbone as initialised
    "warmup_epochs": Range(0, 1000, below="0 or more"),
    "lr_drop": Range(1, whole=True),
    "image_size": Range(32, 4096, whole=True, what=" px"),  # preprocess.MIN_IMAGE_SIZE (imports torch)
    "seed": Range(0, SEED_MAX, whole=True),
    "val_split": Range(0, 0.9),
    "accumulate": Range(1, whole=True),
    "workers": Range(0, 64, whole=True),
    "dropout": Range(0, 1, high_inclusive=False),  # the model config's range
    "sampled_queries": Range(2, whole=True),
    "encoder_window": Range(0, whole=True, below="0 (global attention) or more cells"),
    "enc_layers": Range(0, 12, whole=True, what=" layers"),
    "null_keys": Range(0, 64, whole=True, what=" keys"),
    "backbone_epochs": Range(0, 1000, whole=True, what=" epochs"),
}


@dataclass(frozen=True)
class TrainSettings:
    """Fields without a default come from the recipe (or the saved run); the defaults are source 1."""
    data: str
    out: str
    epochs: int
    batch_size: int
    lr: float
    lr_backbone: float
    schedule: str
    warmup_epochs: float
    augment: str
    backbone: str | None = None        # None: the --init checkpoint's (or the default backbone)
    init: str | None = None
    recipe: str | None = None          # None or "default": the backbone's; "paper"
    lr_drop: int | None = None         # --schedule step: the epoch after which the rates drop 10x
    image_size: int | None = None      # None: the model's own short side
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    progress: str | None = None
    val_split: float = 0.1
    freeze: str | None = None
    accumulate: int = 1
    workers: int | None = None         # None: chosen from what the loader reads
    cache_features: bool | None = None  # None: on whenever a part is frozen (resolved for a new run)
    precision: str = "auto"
    dropout: float | None = None       # None: the model's own (a resumed model keeps its saved dropout)
    sampled_queries: int | None = None
    encoder_window: int | None = None   # a new model's local encoder attention (K cells; 0: global)
    enc_layers: int | None = None       # a new model's encoder depth (None: the backbone's NEW_MODEL / config default)
    null_keys: int | None = None        # a new model's learned null keys per cross-attention (None: NEW_MODEL's)
    backbone_weights: str | None = None  # a foundation backbone's published weights (--init pretrained)
    backbone_epochs: int = 0            # epochs of the backbone alone before INTR's (backbone_stage.py)

    def __post_init__(self):
        check_ranges(vars(self))

    def saved(self) -> dict:
        """Plain values for the run folder (training_state.pt's "args")."""
        return dataclasses.asdict(self)


FIELDS = tuple(field.name for field in dataclasses.fields(TrainSettings))
# 1. The defaults: what neither a recipe nor the command line sets.
DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainSettings)
            if field.default is not dataclasses.MISSING}
FROM_THE_RECIPE = tuple(name for name in FIELDS if name not in DEFAULTS and name not in ("data", "out"))


def check_ranges(values: dict) -> None:
    """The one check of the settings' ranges (of those present in `values` and not None)."""
    for name, allowed in RANGES.items():
        value = values.get(name)
        problem = None if value is None else allowed.problem(value)
        if problem:
            raise ValueError(f"--{flag(name)} {problem}, got {value}")


def out_of_range(value: float, low: float | None = None, high: float | None = None, low_inclusive: bool = True,
                 high_inclusive: bool = True, what: str = "", ceiling: int | None = None) -> str | None:
    """What `value` must be ("must be at least 1"), or None where it is in range: the one wording of
    TrainSettings' ranges and of the `intr` commands' checked types (cli_values). `ceiling` caps an
    open high end."""
    if high is None and ceiling is not None and value > ceiling:
        return f"must be at most {ceiling:,}{what}"
    below = low is not None and (value < low if low_inclusive else value <= low)
    above = high is not None and (value > high if high_inclusive else value >= high)
    if not (below or above):
        return None
    if low_inclusive and high_inclusive:
        return f"must be {_range(low, high)}{what}"
    lower = (f"at least {low:g}" if low_inclusive else f"above {low:g}") if low is not None else ""
    upper = (f"at most {high:g}" if high_inclusive else f"below {high:g}") if high is not None else ""
    return f"must be {' and '.join(filter(None, (lower, upper)))}{what}"


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


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
    check_ranges(values)  # what was given, before the data is scanned
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
    if values.get("freeze") == "none":  # --freeze none: train everything, whatever the recipe freezes
        values["freeze"] = None
    frozen = values.get("freeze") is not None
    if values.get("cache_features") and not frozen:
        raise ValueError("--cache-features needs a frozen backbone: add --freeze backbone (or encoder)")
    values["cache_features"] = frozen if values.get("cache_features") is None else values["cache_features"]
    if values["backbone_epochs"] and frozen:
        raise ValueError(f"--backbone-epochs trains the backbone, but this run keeps it frozen (--freeze "
                         f"{values['freeze']}{'' if 'freeze' in chosen else ', the recipe of ' + backbone}): "
                         "add --freeze none, or leave --backbone-epochs out")
    return TrainSettings(**values), warnings


def resumed(command_line: dict, saved: dict, device_type: str) -> tuple[TrainSettings, list[str]]:
    """The saved run's settings (training_state.pt's "args"), except what may change between
    sessions (RUNTIME_ARGUMENTS); returns them and warnings for the other values given."""
    values = {name: value for name, value in saved.items() if name in FIELDS}
    missing = [flag(name) for name in FROM_THE_RECIPE if name not in values]
    if missing:
        raise ValueError(f"--resume: the saved run has no {', '.join(missing)} setting (an earlier napari-intr "
                         "saved it); start a new run")
    # Runs saved before --precision trained in fp32 on a CPU and "auto" on CUDA: continue alike.
    values.setdefault("precision", "auto" if device_type == "cuda" else "fp32")
    if values.get("cache_features") is None:
        values["cache_features"] = values.get("freeze") is not None
    warnings = []
    for name, value in given(command_line).items():
        if name in RUNTIME_ARGUMENTS:
            values[name] = value
        elif value != values.get(name):
            warnings.append(f"--{flag(name)} {value} ignored: --resume continues with the saved run's setting "
                            f"({values.get(name)})")
    return TrainSettings(**values), warnings
