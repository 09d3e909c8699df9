"""A training run on disk: the one place that names its files and reads and writes them (`intr
train` writes the run; `load_model` and the Fine-tune dock read it). Everything is written
atomically, so a kill at any moment leaves either the previous file or the new one, never a torn one.

OUT/model.safetensors       best validation accuracy so far (napari_intr.load_model reads it)
OUT/last.safetensors        the latest epoch
OUT/training_state.pt       what --resume needs: weights, optimizer, scheduler, epoch, best metric,
                            RNG states, class names, config, arguments, the metrics history
OUT/metrics.jsonl           one JSON line per epoch
OUT/classes.txt             the class names, one per line
OUT/base_model.safetensors  the Fine-tune dock's starting model, when it was the Explorer's
OUT/train.log               the Fine-tune dock's log of the `intr train` child process

training_state.pt holds tensors and plain containers only (RNG states as tensors), so it loads
with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from .atomic import atomic_write

STATE_FORMAT = "napari-intr training state"
STATE_VERSION = 1
STATE_FILE, MODEL_FILE, LAST_FILE = "training_state.pt", "model.safetensors", "last.safetensors"
METRICS_FILE, CLASSES_FILE = "metrics.jsonl", "classes.txt"
BASE_MODEL_FILE, LOG_FILE = "base_model.safetensors", "train.log"


def rng_state() -> dict:
    import torch
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": random.getstate(),
    }


def restore_rng_state(state: dict) -> None:
    import torch
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state["numpy"]
    np.random.set_state(("MT19937", saved["key"].numpy().astype(np.uint32), saved["pos"],
                         saved["has_gauss"], saved["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_state(out: Path, state: dict) -> Path:
    import torch
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, "rng": rng_state(), **state}
    return atomic_write(out / STATE_FILE, lambda temporary: torch.save(payload, temporary))


def load_state(out: Path) -> dict:
    path = out / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {out} has no {STATE_FILE}, so there is no run to continue; "
                                "start without --resume (or give the --out of an earlier run)")
    try:
        import torch
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling, zip and OS errors alike
        raise ValueError(f"--resume: {path} could not be read ({type(error).__name__}: {error}); delete "
                         "it to start over, or resume from a backup") from error
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"--resume: {path} is not a napari-intr training state")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"--resume: {path} was written by another napari-intr version "
                         f"(state version {state.get('version')}); start a new run")
    return state


def holds_run(out: Path) -> bool:
    """Whether `out` holds a saved run (one that --resume can continue)."""
    return (Path(out) / STATE_FILE).is_file()


def read_metrics(out: Path) -> list[dict]:
    """The saved epochs of metrics.jsonl; none when the file is missing or unreadable."""
    try:
        lines = (Path(out) / METRICS_FILE).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return []


def write_metrics(out: Path, history: list[dict]) -> Path:
    text = "".join(json.dumps(record) + "\n" for record in history)
    return atomic_write(out / METRICS_FILE, lambda temporary: Path(temporary).write_text(text))


def write_classes(out: Path, class_names: list[str]) -> Path:
    text = "".join(name + "\n" for name in class_names)
    return atomic_write(out / CLASSES_FILE, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def class_difference(saved: list[str], found: list[str]) -> str:
    """'only in the saved run: a, b; only in the data: c' (or the order, if that is all)."""
    parts = []
    missing, new = [n for n in saved if n not in found], [n for n in found if n not in saved]
    if missing:
        parts.append("only in the saved run: " + ", ".join(missing))
    if new:
        parts.append("only in the data: " + ", ".join(new))
    return "; ".join(parts) or "the same names in another order"
