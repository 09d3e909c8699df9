"""Our checkpoint format: one .safetensors file, weights plus config, class names and provenance
in its metadata. Reading it never runs code from the file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .model import INTR, IntrConfig, build_model

FORMAT = "napari-intr"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(temporary_path), then rename over `path`: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save_model(model: INTR, path: str | os.PathLike, **provenance) -> Path:
    """Write `model` to `path` (.safetensors) atomically; keyword arguments go into its provenance."""
    from . import __version__
    provenance = {"package_version": __version__, **provenance}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json(),
        "class_names": json.dumps(model.class_names),
        "provenance": json.dumps(provenance, default=str),
    }
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    return atomic_write(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def read_metadata(path: str | os.PathLike) -> dict:
    """Config, class names and provenance of one of our checkpoints, without loading weights."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as reader:
            metadata = reader.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable .safetensors file ({error}); it may be "
                              "truncated or not a checkpoint: save or download it again") from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a .safetensors file but not a napari-intr checkpoint "
                              "(no napari-intr metadata); save models with napari_intr.save_model")
    try:
        return {
            "config": IntrConfig.from_json(metadata["config"]),
            "class_names": json.loads(metadata["class_names"]),
            "provenance": json.loads(metadata.get("provenance", "{}")),
        }
    except (KeyError, json.JSONDecodeError, TypeError) as error:
        raise CheckpointError(f"{path} has damaged napari-intr metadata ({error})") from error


def load_checkpoint(path: str | os.PathLike, class_names=None, device=None) -> INTR:
    from .class_names import check_class_count, read_class_names
    path = Path(path)
    info = read_metadata(path)
    config = info["config"]
    names = info["class_names"] if class_names is None else read_class_names(class_names)
    check_class_count(names, config.num_classes)
    model = build_model(config, names)
    try:
        with safe_open(str(path), framework="pt") as reader:
            state = {key: reader.get_tensor(key) for key in reader.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} could not be read ({error}); it may be truncated: "
                              "save or download it again") from error
    load_state(model, state, path)
    model.provenance = info["provenance"]
    return model.to(device or "cpu").eval()


def load_state(model: INTR, state: dict[str, torch.Tensor], origin) -> None:
    """Load weights, listing every missing, unexpected or mis-shaped key in one message."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(f"{key} {list(state[key].shape)} (expected {list(expected[key].shape)})"
                       for key in set(expected) & set(state) if state[key].shape != expected[key].shape)
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", … ({len(keys) - 20} more)" if len(keys) > 20 else "")
                parts.append(f"{label} keys: {shown}")
        raise CheckpointError(f"{origin} does not match the {model.config.backbone} INTR architecture; "
                              + "; ".join(parts))
    model.load_state_dict(state)
