"""`intr train`: train or fine-tune INTR on an image folder (DETR's main.py: the arguments here,
the loop in training_run.py, which imports torch only when a run starts).

Interruption (Ctrl-C, SIGTERM from the plugin's Cancel): the state of the last completed epoch
is already on disk, so the run stops at once, mid-epoch if need be, drops the partial epoch and
exits with code 130; `--resume` repeats that epoch from its start, with the same batches.
"""
from __future__ import annotations

import argparse
import signal
import threading

from .progress import MODES

# The paper's recipe for resnet50 (AdamW, StepLR x0.1, clip 0.1), and a CPU-sized one for tiny.
PAPER = dict(epochs=140, batch_size=12, lr=1e-4, lr_backbone=1e-5, lr_drop=80)
RECIPES = {
    "resnet50": PAPER, "resnet34": PAPER, "resnet18": PAPER,
    "tiny": dict(epochs=40, batch_size=16, lr=5e-4, lr_backbone=5e-4, lr_drop=30),
}
WEIGHT_DECAY = 1e-4
CLIP_MAX_NORM = 0.1
# These may change when a run is resumed; everything else comes from the saved run.
FREEZE_CHOICES = ("backbone", "encoder")  # "encoder": backbone, projection and encoder
RUNTIME_ARGUMENTS = ("data", "out", "epochs", "device", "resume", "progress", "workers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="image folder: DATA/<class>/<image>, or DATA/train/… "
                        "and DATA/val/…")
    parser.add_argument("--out", required=True, help="output folder (model.safetensors and run files)")
    parser.add_argument("--backbone", choices=("resnet50", "resnet18", "resnet34", "tiny"),
                        help="network (default resnet50; a --init checkpoint brings its own)")
    parser.add_argument("--init", help="detr-r50 (the paper's start, resnet50 only; the default for "
                        "resnet50), none (random weights; the default otherwise), or a checkpoint to "
                        "fine-tune (.safetensors, official INTR .pth or a zoo name)")
    parser.add_argument("--epochs", type=int, help="epochs in total (resnet*: 140, tiny: 40)")
    parser.add_argument("--batch-size", type=int, help="images per step and process (resnet*: 12, tiny: 16)")
    parser.add_argument("--lr", type=float, help="learning rate (resnet*: 1e-4, tiny: 5e-4)")
    parser.add_argument("--lr-backbone", type=float, help="backbone learning rate (resnet*: 1e-5, tiny: 5e-4)")
    parser.add_argument("--lr-drop", type=int, help="epoch after which the learning rates drop 10x "
                        "(resnet*: 80, tiny: 30)")
    parser.add_argument("--image-size", type=int, help="short side in px (resnet*: 800, tiny: 128); the "
                        "longest side limit scales in proportion")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--seed", type=int, help="seed for everything random (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--progress", choices=MODES, help="tty: a progress bar (default on a terminal); "
                        "json: one JSON object per line on stdout (see intr_training.progress); none")
    parser.add_argument("--val-split", type=float, help="fraction of each class held out for "
                        "validation when DATA has no val/ folder (default 0.1)")
    parser.add_argument("--freeze", choices=FREEZE_CHOICES, help="keep the backbone (or the backbone, "
                        "projection and encoder) as initialised")
    parser.add_argument("--accumulate", type=int, help="batches per optimizer step (default 1)")
    parser.add_argument("--workers", type=int, help="data-loading processes (default: up to 4)")


def run(args: argparse.Namespace) -> int:
    from . import distributed
    from .progress import make_progress
    progress = make_progress(args.progress, distributed.from_environment().is_main)
    on_main_thread = threading.current_thread() is threading.main_thread()
    STOP_REQUESTED.clear()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if on_main_thread else None
    training = None
    try:
        from .training_run import TrainingRun, out_of_memory_message
        try:
            training = TrainingRun(args, progress)
            training.fit()
        except RuntimeError as error:
            message = out_of_memory_message(error, training)
            if message:
                raise RuntimeError(message) from error
            raise
        return 0
    except KeyboardInterrupt:
        if training is None:
            progress.interrupted(0, None, "interrupted before training started")
        else:
            training.report_interrupt()
        return 130
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        progress.error(str(error))
        raise
    finally:
        progress.close()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
        distributed.cleanup()


# Set by SIGTERM and checked after every step: the KeyboardInterrupt raised by the handler can
# land where Python swallows exceptions (e.g. an at-fork callback as DataLoader workers start).
STOP_REQUESTED = threading.Event()


def _raise_interrupt(signum, frame):
    STOP_REQUESTED.set()
    raise KeyboardInterrupt

