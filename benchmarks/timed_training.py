"""Timing shared by the benchmarks, which run as scripts from this folder: the machine's load,
one `intr train` run in a fresh process (feature_cache.py, tiny_recipe.py) and the median time of
functions run side by side in this process (explain_vs_switch.py, compare_and_edit.py,
feature_cache.py --parts, tiny_grid.py)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def timed_train(arguments: list[str], out: Path) -> dict:
    """`intr train --out OUT ARGUMENTS…`: wall seconds, metrics.jsonl's rows, the load before -> after
    and what the run printed on stdout (its JSON events under --progress json)."""
    command = [sys.executable, "-m", "intr_training", "train", "--out", str(out), *arguments]
    before = load()
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"seconds": seconds, "metrics": metrics, "load": f"{before} -> {load()}", "stdout": completed.stdout}


def median_seconds(functions: dict, repeats: int, device=None) -> dict:
    """Median time of each function, run in turn within every repeat so that load from other
    processes affects them alike (one warm-up call each first: first calls allocate and pick
    kernels). On CUDA (`device`) the queue is drained before each timed call; each function must
    wait for its own results (e.g. by returning numpy arrays)."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            if device is not None and device.type == "cuda":
                import torch
                torch.cuda.synchronize()
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
