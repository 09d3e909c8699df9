"""How `intr train` reports progress: a tqdm bar (on a terminal), plain lines (one per epoch, on
stdout: `intr train … > log` keeps a record), JSON lines, or nothing.

JSON protocol (`--progress json`; the plugin's fine-tuning widget reads it). stdout carries
one JSON object per line, flushed at once, and nothing else; messages for people go to stderr.
Every object has an "event" key:

  {"event": "start", "epochs": int, "steps_per_epoch": int, "classes": [str],
   "train_images": int, "val_images": int, "skipped_images": int, "out": str,
   "first_epoch": int, "init": str, "precision": str, "feature_precision": str|null,
   "processes": int, "batch_size": int, "accumulate": int}
      first_epoch is 1, or the next epoch when --resume continues a run; precision is what
      the steps compute in: "bf16" (autocast) or "fp32" (intr train --precision);
      feature_precision what a frozen backbone's features are computed in (null: not frozen);
      processes: torchrun's world size (1 without it); batch_size is per process, so a step
      sees processes × batch_size × accumulate images.
  {"event": "step", "epoch": int, "step": int, "steps": int, "loss": float,
   "accuracy": float, "lr": float, "eta_seconds": float}
      loss and accuracy are running means over the epoch so far; at most about four per
      second, and always the last step of an epoch.
  {"event": "epoch", "epoch": int, "loss": float, "train_acc": float, "val_acc": float|null,
   "lr": float, "seconds": float, "best_val_acc": float|null}
      after the epoch's files are on disk; val_acc is null without validation images.
  {"event": "backbone_epoch", "epoch": int, "epochs": int, "loss": float, "train_acc": float,
   "val_acc": float|null, "seconds": float}
      --backbone-epochs N: after each of the N epochs in which the backbone learns alone, as a
      pooled classifier (backbone_stage.py), before INTR's epoch 1; val_acc is that classifier's.
  {"event": "warning", "message": str}
  {"event": "diagnosis", "kind": str, "epoch": int, "message": str, "groups": [[str]]}
      when the run stalls (diagnosis.py), as it happens: kind "group_plateau" (groups: the
      look-alike classes confused with each other), "plateau", "flat_loss" or "unstable"
      (rising loss); sent again only when the kind or the groups change. The run goes on.
  {"event": "done", "best_val_acc": float|null, "model": str, "calibration": object,
   "train_seconds": float, "per_class_accuracy": {str: float|null},
   "diagnosis": {"kind", "epoch", "message", "groups"}|null}
      calibration: the kept model calibrated on the validation images (napari_intr.calibration):
      "calibrated": true with "score", "threshold", "keep", "alpha", "quantile", "images",
      "known_kept", "coverage", "mean_set_size", "text" and "seconds"; or false with "reason".
      train_seconds: the epochs' wall time (with --backbone-epochs, the backbone's too), without the calibration.
      diagnosis: the state the run ended in (null: no plateau, flat loss or instability); also
      "group_plateau" for a run that ends still climbing slowly with its errors within
      look-alike groups, which is said at the end only.
  {"event": "error", "message": str}          then the process exits with code 2
  {"event": "interrupted", "epoch": int, "state": str|null, "message": str}
      on SIGINT/SIGTERM; epoch is the last completed epoch, state the training_state.pt that
      `--resume` continues from (null if no epoch completed); exit code 130.

Epochs count from 1; accuracies are fractions in [0, 1]; lr is the transformer's learning rate.
"""
from __future__ import annotations

import json
import math
import sys
import time

from napari_intr.devices import training_precision_text

MODES = ("tty", "plain", "json", "none")
STEP_INTERVAL_SECONDS = 0.25


def default_mode() -> str:
    """The bar only on a terminal; redirected or piped output gets plain lines."""
    return "tty" if sys.stdout.isatty() else "plain"


def _plain(value):
    """JSON has no NaN: a diverged loss is reported as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


class Progress:
    """Silent reporter; the base of the others. Warnings and errors still reach stderr."""

    def start(self, **info): ...
    def step(self, epoch, step, steps, loss, accuracy, lr, eta_seconds): ...
    def epoch(self, **summary): ...
    def backbone_epoch(self, **summary): ...
    def done(self, **summary): ...

    def diagnosis(self, **found):
        print(f"note: epoch {found['epoch']}: {found['message']}", file=sys.stderr, flush=True)

    def warning(self, message: str):
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def error(self, message: str): ...  # cli.main prints the message itself

    def interrupted(self, epoch: int, state, message: str):
        print(message, file=sys.stderr, flush=True)

    def close(self): ...


class JsonProgress(Progress):
    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.last_step_time = 0.0

    def emit(self, event: str, **fields):
        self.stream.write(json.dumps({"event": event, **_plain(fields)}) + "\n")
        self.stream.flush()

    def start(self, **info):
        self.emit("start", **info)

    def step(self, epoch, step, steps, loss, accuracy, lr, eta_seconds):
        now = time.monotonic()
        if step == steps or now - self.last_step_time >= STEP_INTERVAL_SECONDS:
            self.last_step_time = now
            self.emit("step", epoch=epoch, step=step, steps=steps, loss=loss, accuracy=accuracy,
                      lr=lr, eta_seconds=round(eta_seconds, 1))

    def epoch(self, **summary):
        self.emit("epoch", **summary)

    def backbone_epoch(self, **summary):
        self.emit("backbone_epoch", **summary)

    def done(self, **summary):
        self.emit("done", **summary)

    def warning(self, message: str):
        super().warning(message)
        self.emit("warning", message=message)

    def diagnosis(self, **found):
        super().diagnosis(**found)
        self.emit("diagnosis", **found)

    def error(self, message: str):
        self.emit("error", message=message)

    def interrupted(self, epoch: int, state, message: str):
        super().interrupted(epoch, state, message)
        self.emit("interrupted", epoch=epoch, state=state, message=message)


class TtyProgress(Progress):
    """One tqdm bar per epoch on stderr, and a summary line after each epoch (stderr, beside the bar)."""

    def __init__(self, stream=None, bar: bool = True):
        self.stream = stream  # None: sys.stderr at the time of writing (pytest swaps it)
        self.show_bar = bar
        self.bar = None
        self.epochs = 0

    def line(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def start(self, **info):
        self.epochs = info["epochs"]
        processes = info.get("processes", 1)
        shared = (f" in {processes} processes (batch {info['batch_size']} each: "
                  f"{processes * info['batch_size'] * info.get('accumulate', 1)} images a step)" if processes > 1 else "")
        self.line(f"training on {info['train_images']} images ({info['val_images']} for validation) of "
                  f"{len(info['classes'])} classes in {training_precision_text(info)}{shared}; writing to {info['out']}")

    def step(self, epoch, step, steps, loss, accuracy, lr, eta_seconds):
        if not self.show_bar:
            return
        from tqdm.auto import tqdm
        if self.bar is None:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", unit="batch", leave=False)
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}", refresh=False)

    def epoch(self, **summary):
        self.close()
        val = "n/a" if summary["val_acc"] is None else f"{summary['val_acc']:.3f}"
        loss = "n/a" if summary["loss"] is None else f"{summary['loss']:.4f}"
        self.line(f"epoch {summary['epoch']}/{self.epochs}: loss {loss}, train acc "
                  f"{summary['train_acc']:.3f}, val acc {val}, lr {summary['lr']:.2e}, "
                  f"{summary['seconds']:.0f} s")

    def backbone_epoch(self, **summary):
        val = "n/a" if summary["val_acc"] is None else f"{summary['val_acc']:.3f}"
        loss = "n/a" if summary["loss"] is None else f"{summary['loss']:.4f}"
        self.line(f"backbone alone, epoch {summary['epoch']}/{summary['epochs']}: loss {loss}, train acc "
                  f"{summary['train_acc']:.3f}, val acc {val}, {summary['seconds']:.0f} s")

    def diagnosis(self, **found):
        self.close()
        super().diagnosis(**found)

    def done(self, **summary):
        best = summary["best_val_acc"]
        self.line(f"done: best validation accuracy {'n/a' if best is None else f'{best:.3f}'}; "
                  f"model: {summary['model']}")
        calibration = summary.get("calibration") or {}
        if calibration.get("calibrated"):
            self.line(f"{calibration['text']} ({calibration['seconds']:.1f} s)")
        if summary.get("diagnosis"):
            self.line(f"the run ended in a {summary['diagnosis']['kind'].replace('_', ' ')}: "
                      f"{summary['diagnosis']['message']}")

    def interrupted(self, epoch: int, state, message: str):
        self.close()
        super().interrupted(epoch, state, message)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class PlainProgress(TtyProgress):
    """Not a terminal (`intr train … > log`, a batch job): the same lines, one per epoch, on stdout,
    and no bar (its carriage returns make a log unreadable)."""

    def __init__(self):
        super().__init__(bar=False)

    def line(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)


class OtherRankProgress(Progress):
    """Ranks other than 0 under torchrun: rank 0 speaks for all."""

    def warning(self, message: str): ...
    def diagnosis(self, **found): ...
    def interrupted(self, epoch: int, state, message: str): ...


def make_progress(mode: str | None, is_main: bool = True) -> Progress:
    mode = mode or default_mode()
    if not is_main:
        return OtherRankProgress()
    if mode == "none":
        return Progress()
    return {"json": JsonProgress, "plain": PlainProgress}.get(mode, TtyProgress)()
