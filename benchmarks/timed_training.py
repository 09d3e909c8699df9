"""One `intr train` run in a fresh process, timed, with its per-epoch metrics and the machine's load.

Shared by the training benchmarks (feature_cache.py, tiny_recipe.py), which run as scripts from
this folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def timed_train(arguments: list[str], out: Path) -> dict:
    """`intr train --out OUT ARGUMENTS…`: wall seconds, metrics.jsonl's rows and the load before -> after."""
    command = [sys.executable, "-m", "intr_training", "train", "--out", str(out), *arguments]
    before = load()
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"seconds": seconds, "metrics": metrics, "load": f"{before} -> {load()}"}
