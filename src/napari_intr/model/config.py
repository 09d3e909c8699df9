"""Architecture config: everything needed to rebuild an INTR model, stored in checkpoints."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

# The backbones (model/backbone.py and model/vit_backbone.py build them): the channels and stride
# (px per cell) of each one's last feature map. The one table of them; `intr train --backbone`
# takes its names.
BACKBONE_FEATURES = {"resnet50": (2048, 32), "resnet34": (512, 32), "resnet18": (512, 32), "tiny": (128, 8),
                     "dinov2-vits14": (384, 14), "dinov2-vits14-reg": (384, 14),
                     "dinov2-vitb14": (768, 14), "dinov2-vitb14-reg": (768, 14),
                     "bioclip2-vitl14": (1024, 14)}
BACKBONES = tuple(BACKBONE_FEATURES)
# The foundation ViTs (patch tokens as the feature map, stride = patch size), and the image size
# (short side, longest side) each starts from: the size the CLIP weights were trained at, and the
# same for DINOv2, whose 16x16 patch grid at 224 px is what a laptop CPU can cache in minutes
# (benchmarks/vit_backbones.py). Any multiple of the patch size works.
VIT_BACKBONES = tuple(name for name, (_, stride) in BACKBONE_FEATURES.items() if stride == 14)
VIT_IMAGE_SIZE = {name: (224, 378) for name in VIT_BACKBONES}
# How `INTR.decode` leaves the non-candidate classes out (see there). Here, not in intr.py, so
# that command-line choices read it without importing torch.
DECODE_MODES = ("drop", "zero")


@dataclass(frozen=True)
class IntrConfig:
    num_classes: int
    backbone: str = "resnet50"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    # Resize policy shared by preprocessing, training and the plugin (DETR's 800/1333 for resnet50).
    short_side: int = 800
    max_side: int = 1333
    # A light score on decoder layer 1's read-out, trained jointly, that shortlists classes
    # before the full decode (model/shortlist.py). Checkpoints without the field have none.
    shortlist_head: bool = False
    # Encoder self-attention within this many cells of each token (model/local_attention.py);
    # 0: global, as the paper. Checkpoints without the field attend globally.
    encoder_window: int = 0
    # Learned null keys appended to each decoder cross-attention's memory (transformer.py): a
    # place for a head's attention that is not a pixel, reported as the share that "looks at
    # nothing" and never shown as a pixel. 0: none, as the paper; checkpoints without the field have none.
    null_keys: int = 0

    def __post_init__(self):
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"config field {item.name} must be true or false, got {value!r}")
                continue
            expected = {"int": int, "float": (int, float), "str": str}[item.type]
            if isinstance(value, bool) or not isinstance(value, expected):
                kind = {"int": "a whole number", "float": "a number", "str": "text"}[item.type]
                raise ValueError(f"config field {item.name} must be {kind}, got {value!r}")
            if item.type == "float" and not math.isfinite(value):
                raise ValueError(f"config field {item.name} must be a finite number, got {value!r}")
        for name in ("hidden_dim", "nheads", "dec_layers", "dim_feedforward"):
            if getattr(self, name) < 1:
                raise ValueError(f"config field {name} must be at least 1, got {getattr(self, name)}")
        for name in ("enc_layers", "encoder_window", "null_keys"):
            if getattr(self, name) < 0:
                raise ValueError(f"config field {name} must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"config field dropout must be at least 0 and below 1, got {self.dropout}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by nheads {self.nheads}")
        if self.short_side < 32 or self.max_side < self.short_side:
            raise ValueError(f"need 32 <= short_side <= max_side, got {self.short_side}/{self.max_side}")

    @classmethod
    def tiny(cls, num_classes: int, **overrides) -> "IntrConfig":
        """CPU-sized model for tests, the demo and the bundled sample (well under 2 M parameters)."""
        values = dict(backbone="tiny", hidden_dim=64, nheads=4, enc_layers=2, dec_layers=2,
                      dim_feedforward=256, short_side=128, max_side=224)
        values.update(overrides)
        return cls(num_classes=num_classes, **values)

    @classmethod
    def for_backbone(cls, backbone: str, num_classes: int, **overrides) -> "IntrConfig":
        if backbone == "tiny":
            return cls.tiny(num_classes, **overrides)
        if backbone in VIT_IMAGE_SIZE:
            short_side, max_side = VIT_IMAGE_SIZE[backbone]
            overrides = {"short_side": short_side, "max_side": max_side, **overrides}
        return cls(num_classes=num_classes, backbone=backbone, **overrides)

    def replace(self, **changes) -> "IntrConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "IntrConfig":
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"checkpoint config is not a JSON object: {text[:80]!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"checkpoint config has unknown fields {sorted(unknown)}; "
                             "it was written by a newer napari-intr: upgrade the package")
        if "num_classes" not in values:
            raise ValueError("checkpoint config lacks the field num_classes")
        return cls(**values)
