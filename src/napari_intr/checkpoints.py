"""Our checkpoint format: one .safetensors file, weights plus config, class names and provenance
in its metadata. Reading it never runs code from the file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._version import __version__
from .atomic import atomic_write
from .calibration import METADATA_KEY, Calibration, CalibrationError
from .class_names import check_class_names
from .model import INTR, IntrConfig, build_model

FORMAT = "napari-intr"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def save_model(model: INTR, path: str | os.PathLike, **provenance) -> Path:
    """Write `model` to `path` (.safetensors) atomically; keyword arguments go into its provenance."""
    provenance = {"package_version": __version__, **provenance}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_json(),
        "class_names": json.dumps(model.class_names),
        "provenance": json.dumps(provenance, default=str),
    }
    if model.class_labels != model.class_names:
        metadata["class_labels"] = json.dumps(model.class_labels)
    if getattr(model, "calibration", None) is not None:
        metadata[METADATA_KEY] = model.calibration.to_json()
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
        info = {
            "config": IntrConfig.from_json(metadata["config"]),
            "class_names": json.loads(metadata["class_names"]),
            "class_labels": json.loads(metadata["class_labels"]) if "class_labels" in metadata else None,
            "provenance": json.loads(metadata.get("provenance", "{}")),
            "calibration": None,
        }
        check_class_names(info["class_names"], "its class names")
    except (KeyError, TypeError, ValueError) as error:  # ValueError: bad JSON, config or names
        raise CheckpointError(f"{path} has damaged or unsupported napari-intr metadata ({error}); "
                              "save or download it again") from error
    if METADATA_KEY in metadata:
        try:
            info["calibration"] = Calibration.from_json(metadata[METADATA_KEY])
        except CalibrationError as error:
            raise CheckpointError(f"{path}: {error}") from error
        if info["calibration"].classes != info["config"].num_classes:
            raise CheckpointError(f"{path}: its calibration is for {info['calibration'].classes} classes, the model "
                                  f"has {info['config'].num_classes}; calibrate it again with intr calibrate")
        scale = info["calibration"].scale
        features = None if scale is None else scale.classes
        if features is not None and features.means.shape[1] != info["config"].hidden_dim:
            raise CheckpointError(f"{path}: its calibration's class-feature statistics are of hidden size "
                                  f"{features.means.shape[1]}, the model's is {info['config'].hidden_dim}; "
                                  "calibrate it again with intr calibrate")
    return info


def load_checkpoint(path: str | os.PathLike, class_names=None, device=None) -> INTR:
    from .class_names import check_class_count, describe_source, read_class_list
    path = Path(path)
    info = read_metadata(path)
    config = info["config"]
    if class_names is None:
        names, labels = info["class_names"], info["class_labels"]
    else:
        names, labels = read_class_list(class_names)
    check_class_count(names, config.num_classes,
                      "the checkpoint's class names" if class_names is None else describe_source(class_names))
    try:
        with safe_open(str(path), framework="pt") as reader:
            state = {key: reader.get_tensor(key) for key in reader.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} could not be read ({error}); it may be truncated: "
                              "save or download it again") from error
    model = model_from_state(config, names, state, path)
    if labels is not None and len(labels) == len(names):
        model.class_labels = labels
    model.provenance = info["provenance"]
    model.calibration = info["calibration"]
    return model.to(device or "cpu").eval()


def load_state(model: INTR, state: dict[str, torch.Tensor], origin) -> None:
    """Load weights, listing every missing, unexpected or mis-shaped key in one message."""
    _check_state(model, state, origin)
    model.load_state_dict(state)


def model_from_state(config: IntrConfig, class_names, state: dict[str, torch.Tensor], origin) -> INTR:
    """A model holding `state`, built on the meta device: no time goes into a random
    initialisation that the weights would overwrite (seconds for a ResNet-50)."""
    with torch.device("meta"):
        model = build_model(config, class_names)
    _check_state(model, state, origin)
    state = {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
    model.load_state_dict(state, assign=True)  # keeps each parameter's requires_grad
    return model


def _check_state(model: INTR, state: dict[str, torch.Tensor], origin) -> None:
    """Keys and shapes as the architecture expects, tensors only, no NaN or infinite weights."""
    not_tensors = sorted(f"{key} ({type(value).__name__})" for key, value in state.items()
                         if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{origin} holds values that are not weight tensors: {', '.join(not_tensors[:10])}; "
                              "it is damaged or not an INTR checkpoint")
    non_finite = sorted(key for key, value in state.items()
                        if value.is_floating_point() and not bool(torch.isfinite(value).all()))
    if non_finite:
        raise CheckpointError(f"{origin} has NaN or infinite weights in {', '.join(non_finite[:10])}"
                              f"{f' and {len(non_finite) - 10} more' if len(non_finite) > 10 else ''}: the "
                              "training that wrote it diverged or the file is damaged; use an earlier checkpoint")
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
