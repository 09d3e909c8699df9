"""`intr explain` on a folder: one process vs `torchrun --nproc-per-node K` (CPU processes, gloo),
side by side in one run, plus a re-run that finds everything done (resume cost).

    python benchmarks/explain_sharded.py [--images 48] [--size 160] [--processes 2] [--model sample]

Draws `--images` synthetic specimens (napari_intr.synth), explains them once with one process
and once with K processes into fresh folders, checks the two predictions.csv name the same
classes, and prints images/s, the speed-up and the load averages before and after. Each process
gets `cores // K` torch threads (at least 1), so the two runs use the same cores.
"""
from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def top1(folder: Path) -> list[tuple[str, str]]:
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as stream:
        return [(row["file"], row["top1_class"]) for row in csv.DictReader(stream)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--model", default="sample")
    args = parser.parse_args()
    from napari_intr.image_files import find_images
    from napari_intr.synth import SPECIES, write_collection
    cores = os.cpu_count() or 1
    per_class = max(1, -(-args.images // len(SPECIES)))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_collection(root / "images", per_class=per_class, size=args.size, seed=11)
        count = len(find_images(root / "images"))  # what intr explain finds (masks are in hidden folders)
        explain = ["-m", "intr_training", "explain", str(root / "images"), "--model", args.model, "--device", "cpu"]
        load_before = os.getloadavg()
        one = run([sys.executable, *explain, "--out", str(root / "one")], threads=max(1, cores))
        single_thread = run([sys.executable, *explain, "--out", str(root / "one-thread")], threads=1)
        several = run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.processes),
                       "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *explain,
                       "--out", str(root / "several")], threads=max(1, cores // args.processes))
        again = run([sys.executable, *explain, "--out", str(root / "one")], threads=max(1, cores))
        load_after = os.getloadavg()
        same = top1(root / "one") == top1(root / "several")
    print(f"{count} images of {args.size} px, model {args.model}, {cores} CPU cores; "
          f"load averages {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print("| run | seconds | images/s |\n| --- | ---: | ---: |")
    print(f"| 1 process, {cores} threads | {one:.1f} | {count / one:.2f} |")
    print(f"| 1 process, 1 thread | {single_thread:.1f} | {count / single_thread:.2f} |")
    print(f"| torchrun {args.processes} processes, {max(1, cores // args.processes)} thread(s) each | "
          f"{several:.1f} | {count / several:.2f} |")
    print(f"| re-run, all done (resume) | {again:.1f} | – |")
    print(f"speed-up {one / several:.2f}× over 1 process with {cores} threads, {single_thread / several:.2f}× over "
          f"1 process with 1 thread; the same top-1 class for every image: {same}")
    print("(wall times include starting Python, importing torch and loading the model in each process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
