"""`intr train`: train or fine-tune INTR on an image folder (DETR's main.py: the arguments here,
the run and its loop in training_run.py, which imports torch only when a run starts).

Interruption (Ctrl-C, SIGTERM from the plugin's Cancel): the state of the last completed epoch
is already on disk, so the run stops at once, mid-epoch if need be, drops the partial epoch and
exits with code 130; `--resume` repeats that epoch from its start, with the same batches.
"""
from __future__ import annotations

import argparse

from napari_intr.devices import DEVICES, PRECISIONS
from napari_intr.model.config import BACKBONES
from napari_intr.recipes import (
    AUGMENT_HELP,
    AUGMENTATIONS,
    BACKBONE_ALONE_BATCH,
    BACKBONE_ALONE_LR,
    DEFAULT_BACKBONE,
    FREEZE_CHOICES,
    PAPER,
    PRECISION_HELP,
    RECIPE_CHOICES,
    RESNET,
    TINY,
    VIT,
)

from .cli_values import read_number, read_whole_number
from .progress import MODES
from .schedules import SCHEDULE_HELP, SCHEDULES
from .train_settings import RANGES


def ranged(name: str):
    """The argparse type of a ranged setting: the range TrainSettings checks (train_settings.RANGES),
    checked while the command line is parsed, so that argparse's message names the flag."""
    allowed = RANGES[name]
    read = read_whole_number if allowed.whole else read_number  # or argparse's message

    def parse(text: str):
        value = read(text)
        problem = allowed.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value
    parse.__name__ = "whole number" if allowed.whole else "number"  # as cli_values' types
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="image folder: DATA/<class>/<image>, or DATA/train/… "
                        "and DATA/val/…")
    parser.add_argument("--out", required=True, help="output folder (model.safetensors and run files)")
    parser.add_argument("--backbone", choices=BACKBONES,
                        help=f"network (default {DEFAULT_BACKBONE}; a --init checkpoint brings its own)")
    parser.add_argument("--init", help="detr-r50 (the paper's start, resnet50 only; the default for "
                        "resnet50), pretrained (a foundation backbone's published weights, DINOv2 or BioCLIP 2; "
                        "their default), none (random weights; the default otherwise), or a checkpoint to "
                        "fine-tune (.safetensors, official INTR .pth or a zoo name)")
    parser.add_argument("--backbone-weights", metavar="FILE", help="--init pretrained: the backbone's published "
                        "weights from this file (DINOv2's torch-hub .pth, timm's or open_clip's .safetensors/.bin; "
                        "default: the model cache's file, downloaded on first use when online)")
    parser.add_argument("--recipe", choices=RECIPE_CHOICES, help="default: the backbone's recipe below; "
                        "paper: the paper's (resnet50 from DETR-R50 at 800 px, 140 epochs, batch 12, StepLR "
                        "10x down at epoch 80, DETR's multi-scale resize), for reproducing its Table 1")
    parser.add_argument("--epochs", type=ranged("epochs"), help=f"epochs in total (resnet*: {RESNET['epochs']}, "
                        f"tiny: {TINY['epochs']}, dinov2-*/bioclip2-*: {VIT['epochs']})")
    parser.add_argument("--batch-size", type=ranged("batch_size"), help="images per step and process: under torchrun each "
                        f"process takes this many (resnet*: {RESNET['batch_size']}, tiny: {TINY['batch_size']})")
    parser.add_argument("--lr", type=ranged("lr"), help=f"peak learning rate (resnet*: {RESNET['lr']}, tiny: "
                        f"{TINY['lr']}, for the recipe's batch size; the default is scaled by the square root of "
                        "(processes x --batch-size x --accumulate) / the recipe's batch size, a given --lr is used "
                        "as it is)")
    parser.add_argument("--lr-backbone", type=ranged("lr_backbone"), help=f"peak backbone learning rate (resnet*: "
                        f"{RESNET['lr_backbone']}, tiny: {TINY['lr_backbone']}; scaled like --lr)")
    parser.add_argument("--schedule", choices=SCHEDULES, help=SCHEDULE_HELP + " (default: cosine; "
                        "--recipe paper: step)")
    parser.add_argument("--warmup-epochs", type=ranged("warmup_epochs"), help="epochs of linear warm-up (default 1; at "
                        "most a fifth of the run; --recipe paper: 0)")
    parser.add_argument("--lr-drop", type=ranged("lr_drop"), help="--schedule step: the epoch after which the learning rates "
                        f"drop 10x (default: {PAPER['lr_drop']} of {PAPER['epochs']} epochs, in proportion for "
                        "other --epochs)")
    parser.add_argument("--augment", choices=AUGMENTATIONS, help=AUGMENT_HELP + " (default: resnet* "
                        f"{RESNET['augment']}, tiny {TINY['augment']})")
    parser.add_argument("--image-size", type=ranged("image_size"), help="short side in px (resnet*: 800, tiny: 128, "
                        "dinov2-*/bioclip2-*: 224, any multiple of 14); the longest side limit scales in proportion")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--seed", type=ranged("seed"), help="seed for everything random (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out, with its "
                        "saved train/validation split (images added to DATA since are reported, not used)")
    parser.add_argument("--rescan", action="store_true", help="with --resume: images added to DATA since the "
                        "run started join training (the validation images stay those of the run)")
    parser.add_argument("--progress", choices=MODES, help="tty: a progress bar (default on a terminal); "
                        "plain: one line per epoch on stdout (default when stdout is not a terminal, e.g. "
                        "`> log`); json: one JSON object per line on stdout (see intr_training.progress); none")
    parser.add_argument("--val-split", type=ranged("val_split"), help="fraction of each class held out for "
                        "validation when DATA has no val/ folder (default 0.1)")
    parser.add_argument("--freeze", choices=FREEZE_CHOICES, help="keep the backbone (or the backbone, "
                        "projection and encoder) as initialised (default: backbone for dinov2-*/bioclip2-*, "
                        "none otherwise)")
    parser.add_argument("--accumulate", type=ranged("accumulate"), help="batches per optimizer step (default 1)")
    parser.add_argument("--workers", type=ranged("workers"), help="data-loading processes (default: none when the "
                        "resized images or cached features are read from memory or the cache, else up to 4)")
    parser.add_argument("--cache-features", action=argparse.BooleanOptionalAction, help="with a frozen "
                        "backbone, compute its features once per image and variant and keep them in "
                        "OUT/feature_cache (memory-mapped; reused by --resume, recomputed for changed images "
                        "or weights). Default: on whenever --freeze is given")
    parser.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP + " (default: auto)")
    parser.add_argument("--dropout", type=ranged("dropout"), help=f"transformer dropout (resnet*: {RESNET['dropout']}, "
                        f"the paper's; tiny: {TINY['dropout']}); 0 lets CPU attention use its fused kernel, several "
                        "times faster with hundreds of classes")
    parser.add_argument("--encoder-window", type=ranged("encoder_window"), metavar="K", help="a new model's encoder attends only "
                        "within K feature cells of each token (local self-attention, so each token carries what "
                        "is near it and the cross-attention maps stay on the evidence; benchmarks/RESULTS.md, "
                        "issue 21). Default: 0, global, as the paper. Models started from a checkpoint keep its "
                        "own")
    parser.add_argument("--enc-layers", type=ranged("enc_layers"), metavar="N", help="a new model's encoder "
                        "layers (default: the backbone's new-model shape; 0 lets the decoder read the backbone's "
                        "features, local by construction). Models started from a checkpoint keep their own")
    parser.add_argument("--null-keys", type=ranged("null_keys"), metavar="N", help="a new model's learned null "
                        "keys in each cross-attention: a place for a head's attention that is not a pixel (shown "
                        "as the share that 'looks at nothing', never as a pixel). Default: the backbone's "
                        "new-model shape. Models started from a checkpoint keep their own")
    parser.add_argument("--backbone-epochs", type=ranged("backbone_epochs"), metavar="N", help="before INTR's "
                        "epochs, train the backbone alone for N epochs as a plain classifier (its cells pooled, "
                        f"one linear layer, peak rate {BACKBONE_ALONE_LR:g} at batch {BACKBONE_ALONE_BATCH}): where a run "
                        "stalled at the level of look-alike groups, this found the trait (default 0: none)")
    parser.add_argument("--sampled-queries", type=ranged("sampled_queries"), metavar="K", help="decode only K classes per step: the "
                        "batch's true classes, the first pass's hardest other classes and random ones, with "
                        "the sampled-softmax (logQ) correction; step time and memory then do not grow with "
                        "the number of classes (for thousands of classes; validation uses --shortlist K)")


def run(args: argparse.Namespace) -> int:
    from .training_run import run_training
    return run_training(vars(args))
