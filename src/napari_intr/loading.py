"""`load_model`: one entry point for our checkpoints, official INTR files, zoo names and the sample."""
from __future__ import annotations

import difflib
import os
import warnings
from importlib.resources import files
from pathlib import Path

from . import run_folder
from .checkpoints import CheckpointError, load_checkpoint
from .class_names import bundled_class_list
from .devices import resolve_device
from .model import INTR
from .official import load_official

SAMPLE_MODEL = "sample"


class MissingClassNames(UserWarning):
    """A zoo model loaded without class names: its classes are numbered; the message says where to
    get a list."""


def sample_data_dir() -> Path:
    return Path(str(files("napari_intr").joinpath("sample_data")))


def sample_model_path() -> Path:
    return sample_data_dir() / "intr_tiny_synthetic.safetensors"


def load_model(source: str | os.PathLike, class_names=None, device=None, precision: str | None = "auto") -> INTR:
    """Load an INTR model for inference (eval mode, on the inference path: napari_intr.inference).

    source: "sample" (the bundled tiny model), a zoo name (intr-cub, intr-birds525,
    intr-butterfly; downloaded on first use), a napari-intr `.safetensors` checkpoint, or an
    official INTR `.pth` checkpoint. class_names: a list, or a text file with one name per line;
    intr-cub has its names bundled, intr-birds525 and intr-butterfly warn (MissingClassNames)
    without them.
    device: "auto" (default), "cpu", "cuda", "mps". precision: "auto" (default: bf16 autocast
    where the device computes bf16 natively), "fp32" or "bf16" (inference.PRECISIONS).
    """
    from .inference import prepare_for_inference, resolve_precision
    device = resolve_device(device)
    precision = resolve_precision(precision, device)  # a bad value fails before any loading
    return prepare_for_inference(_load(source, class_names, device), precision)


def _load(source, class_names, device) -> INTR:
    from . import zoo
    name = os.fspath(source)
    if name == SAMPLE_MODEL:
        path = sample_model_path()
        if not path.exists():
            raise CheckpointError(f"the bundled sample model is missing from {path}; reinstall napari-intr")
        return load_checkpoint(path, class_names, device)
    if name in zoo.ZOO:
        if zoo.ZOO[name].kind == "backbone":
            raise CheckpointError(f"{name} holds a backbone's pretrained weights, not a classifier; train a "
                                  f"model on it: intr train --backbone {name}")
        if zoo.ZOO[name].kind != "intr":
            raise CheckpointError(f"{name} holds DETR's COCO detection weights, not a classifier; use it "
                                  f"to initialise training: intr train --init {name}")
        item = zoo.ZOO[name]
        if class_names is None and item.class_list is not None:
            class_names = bundled_class_list(item.class_list)
        elif class_names is None:
            warnings.warn(f"{name}: classes are shown as numbers; {item.class_names_hint}", MissingClassNames,
                          stacklevel=3)
        path = zoo.fetch(name)
        model = load_official(path, class_names, device)
        expected = item.num_classes
        if expected is not None and model.config.num_classes != expected:
            raise CheckpointError(f"{path} has {model.config.num_classes} classes, but {name} has {expected}: "
                                  "it is another model's file. Delete it and download again")
        zoo.trust(path)
        return model
    path = Path(name).expanduser()
    if not path.exists():
        close = difflib.get_close_matches(name, [*zoo.ZOO, SAMPLE_MODEL], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise FileNotFoundError(f"no model at {path}: give a checkpoint file, '{SAMPLE_MODEL}', "
                                f"or a zoo name ({', '.join(zoo.ZOO)}).{hint}")
    if path.is_dir():
        candidate = path / run_folder.MODEL_FILE
        if not candidate.exists():
            raise FileNotFoundError(f"{path} is a folder without {run_folder.MODEL_FILE}; give the checkpoint file")
        path = candidate
    with open(path, "rb") as stream:
        head = stream.read(16)
    # A .safetensors file starts with an 8-byte header length, then JSON; torch files are zip or pickle.
    if path.suffix == ".safetensors" or head[8:9] == b"{":
        return load_checkpoint(path, class_names, device)
    return load_official(path, class_names, device)
