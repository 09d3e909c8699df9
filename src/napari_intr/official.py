"""Released INTR checkpoints (.pth) and DETR's COCO weights, read without unpickling code.

Both are pickled dicts; `torch.load(weights_only=True)` admits tensors and plain containers
only, and we allow exactly one more type: the `argparse.Namespace` of training arguments.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import re
from pathlib import Path

import torch

from .checkpoints import CheckpointError, model_from_state
from .model import INTR, IntrConfig

# torch.save writes a zip archive (since 1.6) or, in the legacy format, a protocol-2 pickle that
# starts with torch's magic number (a LONG1 opcode of 10 bytes).
_ZIP_HEAD, _LEGACY_TORCH_HEAD = b"PK\x03\x04", b"\x80\x02\x8a\x0a"


def _check_torch_file(path: Path) -> None:
    with open(path, "rb") as stream:
        head = stream.read(4)
    if head.startswith((_ZIP_HEAD, _LEGACY_TORCH_HEAD)):
        return
    if not head:
        raise CheckpointError(f"{path} is an empty file (0 bytes), not a PyTorch checkpoint; download or copy "
                              "it again")
    if head[:1] == b"\x80" and len(head) > 1:  # a pickle, but not one torch.save wrote
        raise CheckpointError(f"{path} is a plain Python pickle (protocol {head[1]}), not a file written by "
                              "torch.save, so it is not read; if you trust it, load it in Python and save "
                              "its state dict with torch.save, or give an INTR .pth or .safetensors file")
    raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a torch.save "
                          "pickle); give an INTR .pth file or a napari-intr .safetensors file")


def read_pickled_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    _check_torch_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names what it refused as "GLOBAL module.name".
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        if refused and not refused.group(1).startswith("torch."):
            raise CheckpointError(
                f"{path} was refused: it contains Python objects other than weights "
                f"({refused.group(1)}), which could run code when loaded. Only INTR/DETR checkpoints "
                "(weights plus training arguments) are accepted; if you trust the file, re-save its "
                "state dict with plain torch.save") from error
        # torch's own names are allowed, so a broken one means a damaged stream.
        raise CheckpointError(f"{path} is damaged (truncated?) or not a PyTorch checkpoint; "
                              "download or copy it again") from error
    except Exception as error:  # truncated zip, bad pickle stream, I/O: all mean "not usable"
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint; it may be truncated "
                              f"or another kind of file ({type(error).__name__}: {error}): download or "
                              "copy it again") from error
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path} is a PyTorch file but not an INTR/DETR checkpoint: "
                              "it has no 'model' state dict")
    return data


def _state_dict(data: dict) -> dict[str, torch.Tensor]:
    # Frozen batch norm keeps no step counter; some exports still carry one.
    return {key: value for key, value in data["model"].items() if not key.endswith("num_batches_tracked")}


def config_from_official(data: dict, path) -> IntrConfig:
    state = data["model"]
    queries = state.get("query_embed.weight")
    if not isinstance(queries, torch.Tensor) or queries.ndim != 2:
        raise CheckpointError(f"{path} has no query_embed.weight matrix, so its class count is unknown; "
                              "it is not an INTR checkpoint")
    args = data.get("args")
    if isinstance(args, dict):
        args = argparse.Namespace(**{str(key): value for key, value in args.items()})

    def arg(name, default):
        return getattr(args, name, default) if args is not None else default

    if arg("pre_norm", False) or arg("dilation", False):
        raise CheckpointError(f"{path} was trained with pre-norm or a dilated backbone, "
                              "which this package does not implement")
    try:
        return IntrConfig(
            num_classes=queries.shape[0],
            backbone=arg("backbone", "resnet50"),
            hidden_dim=arg("hidden_dim", 256), nheads=arg("nheads", 8),
            enc_layers=arg("enc_layers", 6), dec_layers=arg("dec_layers", 6),
            dim_feedforward=arg("dim_feedforward", 2048), dropout=arg("dropout", 0.1))
    except ValueError as error:  # the message names the argument
        raise CheckpointError(f"{path} has training arguments (args) this package cannot use: "
                              f"{str(error).replace('config field ', 'args.')}") from error


def load_official(path: str | os.PathLike, class_names=None, device=None) -> INTR:
    """An `intr_checkpoint_*_detr_r50.pth` file as an INTR model."""
    from .class_names import check_class_count, describe_source, read_class_list
    data = read_pickled_checkpoint(path)
    config = config_from_official(data, path)
    names = labels = None
    if class_names is not None:
        names, labels = read_class_list(class_names)
        check_class_count(names, config.num_classes, describe_source(class_names))
    model = model_from_state(config, names, _state_dict(data), path)
    model.class_labels = labels
    model.provenance = {"source": str(path), "format": "official INTR checkpoint"}
    return model.to(device or "cpu").eval()


def detr_initial_state(path: str | os.PathLike, model: INTR, generator: torch.Generator | None = None
                       ) -> dict[str, torch.Tensor]:
    """DETR-R50 COCO weights mapped onto `model` (the paper's initialisation).

    Detection heads are dropped; the class queries start from DETR's first C object queries
    (repeated with small noise when C > 100); the presence vector keeps its fresh init.
    """
    if model.config.backbone != "resnet50" or model.config.hidden_dim != 256:
        raise CheckpointError("DETR-R50 weights fit only the resnet50 backbone with hidden_dim 256")
    detr = {key: value for key, value in _state_dict(read_pickled_checkpoint(path)).items()
            if not key.startswith(("class_embed.", "bbox_embed."))}
    queries = detr.pop("query_embed.weight", None)
    if queries is None or queries.shape[-1] != 256:
        raise CheckpointError(f"{path} has no DETR query embedding; it is not a DETR-R50 checkpoint")
    num_classes = model.config.num_classes
    repeats = math.ceil(num_classes / len(queries))
    initial = queries.repeat(repeats, 1)[:num_classes].clone()
    if repeats > 1:
        noise = torch.randn(initial.shape, generator=generator) * queries.std() * 0.01
        initial[len(queries):] += noise[len(queries):]
    state = model.state_dict()
    detr["query_embed.weight"] = initial
    detr["presence_vector.weight"] = state["presence_vector.weight"]
    detr["presence_vector.bias"] = state["presence_vector.bias"]
    detr.update({key: value for key, value in state.items() if key.startswith("shortlist_head.")})
    return detr
