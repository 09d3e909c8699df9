"""Training recipes and the constants a run is built from (no torch: `intr --help` reads them)."""
from __future__ import annotations

from napari_intr.model.config import BACKBONES

DEFAULT_BACKBONE = "resnet50"
# The paper's recipe for resnet50 (AdamW, StepLR x0.1, clip 0.1), and a CPU-sized one for tiny.
PAPER = dict(epochs=140, batch_size=12, lr=1e-4, lr_backbone=1e-5, lr_drop=80)
TINY = dict(epochs=40, batch_size=16, lr=5e-4, lr_backbone=5e-4, lr_drop=30)
RECIPES = {backbone: TINY if backbone == "tiny" else PAPER for backbone in BACKBONES}
WEIGHT_DECAY = 1e-4
CLIP_MAX_NORM = 0.1
FREEZE_CHOICES = ("backbone", "encoder")  # "encoder": backbone, projection and encoder
# These may change when a run is resumed; everything else comes from the saved run.
RUNTIME_ARGUMENTS = ("data", "out", "epochs", "device", "resume", "progress", "workers")
