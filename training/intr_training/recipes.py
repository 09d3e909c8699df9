"""Training recipes and the constants a run is built from (no torch: `intr --help` reads them).

A recipe fills every setting the command line leaves out. The default recipes plan their
learning rate over the whole run (warm-up, then cosine decay: `schedules.py`), so any --epochs
ends decayed; `--recipe paper` is the paper's own (StepLR 10x down at epoch 80 of 140, DETR's
multi-scale resize, dropout 0.1, resnet50 from DETR-R50) for reproducing its Table 1.

The tiny recipe keeps the earlier tiny settings (peak lr 5e-4, DETR's multi-scale resize,
dropout 0.1) and plans the rate over the run (one-epoch warm-up, cosine to the end). A faster
variant (peak 1e-3, flips only with the resized images kept in memory, dropout 0) was judged on
the held-out look-alike set of benchmarks/lookalikes.py and did worse (benchmarks/RESULTS.md);
it is one command line away (`--lr 1e-3 --lr-backbone 1e-3 --augment flip --dropout 0`).
"""
from __future__ import annotations

from napari_intr.model.config import BACKBONES

DEFAULT_BACKBONE = "resnet50"
# The paper's recipe (AdamW, StepLR x0.1 at epoch 80 of 140, clip 0.1; DETR's augmentation).
PAPER = {"epochs": 140, "batch_size": 12, "lr": 1e-4, "lr_backbone": 1e-5, "schedule": "step", "lr_drop": 80,
         "warmup_epochs": 0.0, "augment": "multiscale", "dropout": 0.1}
PAPER_START = {"backbone": "resnet50", "init": "detr-r50", "image_size": 800}  # what --recipe paper also fixes
RESNET = {**{k: v for k, v in PAPER.items() if k != "lr_drop"}, "schedule": "cosine", "warmup_epochs": 1.0}
TINY = {"epochs": 40, "batch_size": 16, "lr": 5e-4, "lr_backbone": 5e-4, "schedule": "cosine", "warmup_epochs": 1.0,
        "augment": "multiscale", "dropout": 0.1}
RECIPES = {backbone: TINY if backbone == "tiny" else RESNET for backbone in BACKBONES}
RECIPE_CHOICES = ("default", "paper")
# --schedule step without --lr-drop: the paper's proportion (epoch 80 of 140) of --epochs.
STEP_DROP_SHARE = 80 / 140
AUGMENTATIONS = ("multiscale", "flip")
AUGMENT_HELP = ("multiscale: DETR's random short side (0.75-1x --image-size) and random flips; flip: random "
                "horizontal flips at --image-size only. With a frozen backbone both become a fixed set of "
                "scales x flips, so that its features can be cached")
FROZEN_SCALES = (0.875, 1.0)  # "multiscale" with a frozen backbone: these fractions of the short side
WEIGHT_DECAY = 1e-4
CLIP_MAX_NORM = 0.1
FREEZE_CHOICES = ("backbone", "encoder")  # "encoder": backbone, projection and encoder
# These may change when a run is resumed; everything else comes from the saved run.
RUNTIME_ARGUMENTS = ("data", "out", "epochs", "device", "resume", "progress", "workers")
