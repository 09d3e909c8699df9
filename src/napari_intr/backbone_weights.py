"""The foundation backbones' published weights (model/vit_backbone.py): where the file comes from,
and how its state dict becomes the backbone's.

A file comes from the user (a path), from the model cache (zoo.py: a file copied there by hand
is used as it is, never downloaded again), or is downloaded there when online. Three layouts
load, each through timm's own conversion (`vision_transformer.checkpoint_filter_fn`):
- DINOv2's official torch-hub files (`dinov2_vits14_pretrain.pth`, `..._reg4_pretrain.pth`):
  `cls_token`, `register_tokens`, `mask_token`, `blocks.N.ls1.gamma`, ...;
- timm's own layout (`model.safetensors` of timm's hub models);
- open_clip's, which BioCLIP 2 publishes (`visual.conv1.weight`, `visual.transformer.resblocks.N.
  attn.in_proj_weight`, ...): the image tower is taken, the text tower and projections left out.
No code from a file ever runs: `.safetensors` holds tensors only, and other files are read with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from . import zoo
from .model.config import VIT_BACKBONES
from .model.vit_backbone import ViTBackbone


class BackboneWeightsError(ValueError):
    """A weights file that cannot be used for a backbone; the message says why and what to do."""


def weights_file(backbone: str, path: str | os.PathLike | None = None, sha256: str | None = None,
                 progressbar: bool = True) -> Path:
    """The weights of `backbone`: the user's `path`, else the model cache's file (downloaded into
    it when missing). sha256: the file's full hash, when known (zoo.fetch)."""
    if backbone not in VIT_BACKBONES:
        raise BackboneWeightsError(f"{backbone!r} has no published weights to load; those that do: "
                                   f"{', '.join(VIT_BACKBONES)}")
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise BackboneWeightsError(f"no backbone weights file at {path}: give the {backbone} weights "
                                       f"({zoo.entry(backbone).url}) as a file")
        return path
    return zoo.fetch(backbone, progressbar=progressbar, sha256=sha256)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch file read without unpickling code."""
    path = Path(path)
    with open(path, "rb") as stream:
        head = stream.read(16)
    try:
        if path.suffix == ".safetensors" or head[8:9] == b"{":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors', pickle's refusal and zip errors alike
        raise BackboneWeightsError(f"{path} could not be read as weights ({type(error).__name__}: {error}); "
                                   "it may be truncated or hold more than tensors: download it again") from error
    if not isinstance(state, dict):
        raise BackboneWeightsError(f"{path} holds a {type(state).__name__}, not a dictionary of weights")
    return state


def backbone_state(body: ViTBackbone, state: dict, origin) -> dict[str, torch.Tensor]:
    """`state` in any of the three layouts -> the state dict of `body.body` (timm's ViT)."""
    from timm.models.vision_transformer import checkpoint_filter_fn
    vit = body.body
    expected = vit.state_dict()
    try:
        converted = checkpoint_filter_fn(dict(state), vit)
    except Exception as error:  # a file of another layout trips timm's conversion in many ways
        raise BackboneWeightsError(f"{origin} is not a ViT weights file timm can read ({type(error).__name__}: "
                                   f"{error})") from error
    # The heads (CLIP's projection, a classifier) are not part of the features INTR reads.
    converted = {key: value for key, value in converted.items() if key in expected}
    missing = sorted(set(expected) - set(converted))
    wrong = sorted(f"{key} {list(converted[key].shape)} (expected {list(expected[key].shape)})"
                   for key in converted if converted[key].shape != expected[key].shape)
    if missing or wrong:
        problems = (([f"missing {len(missing)} weights ({', '.join(missing[:4])}…)"] if missing else [])
                    + ([f"shapes differ: {', '.join(wrong[:4])}"] if wrong else []))
        raise BackboneWeightsError(f"{origin} does not hold the weights of this backbone: {'; '.join(problems)}. "
                                   "Give the file published for it (DINOv2's torch-hub .pth, timm's or "
                                   "open_clip's file of the same architecture)")
    return {key: value.float() for key, value in converted.items()}


def load_backbone_weights(body: ViTBackbone, path: str | os.PathLike) -> None:
    """Load the weights file `path` into `body` (any of the three layouts)."""
    state = backbone_state(body, read_state_dict(path), path)
    if any(p.is_meta for p in body.body.parameters()):
        body.body.load_state_dict(state, assign=True)
    else:
        body.body.load_state_dict(state)
