"""The foundation backbones on a laptop: feature extraction, a whole frozen run, explain.

    python benchmarks/vit_backbones.py                    # everything below (CPU)
    python benchmarks/vit_backbones.py --skip-train       # feature extraction only
    python benchmarks/vit_backbones.py --skip-train --backbones bioclip2-vitl14 --sizes 224
    python benchmarks/vit_backbones.py --device cuda      # the same on a GPU

(1) Feature extraction, images/s: the frozen backbone's forward (model/vit_backbone.py) on one
    square image at a time (as the feature cache computes them on a CPU; batches of --batch on
    CUDA) for ViT-S/14 and ViT-B/14 at 224 and 448 px, in fp32 and in bf16 autocast (where
    the device computes bf16 natively), the median of --repeats.
(2) The whole `intr train --backbone dinov2-vits14 --init none --freeze backbone` run on
    --images synthetic images of --classes classes (`intr synth`'s many-species mode, 10 % held
    out) for --epochs epochs at --size px, the recipe's other settings (feature cache on, batch
    32, bf16 where "auto" picks it), in a fresh process: wall seconds (cache filling included)
    and that process's peak resident memory. Target: <= 8 min for ViT-S/14 at 224 px.
(3) `intr explain` of --explain-images of those images with the trained model: seconds per
    image in a fresh process (start-up included, and apart: the median of Explainer.explain in
    this process).
Random weights throughout (--init none: timing does not depend on them). The load averages
before and after each part are printed: on a shared 2-core machine read the numbers with them.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timed_training import load, median_seconds, timed_train

SIZES = (224, 448)
BACKBONES = "dinov2-vits14,dinov2-vitb14"


def extraction(backbone, images, mask, precision: str):
    """One forward of the frozen backbone, as the feature cache runs it (no_grad, bf16 autocast)."""
    import torch

    def run():
        with torch.no_grad(), torch.autocast(images.device.type, torch.bfloat16, enabled=precision == "bf16"):
            return backbone(images, mask)[0].float().cpu()
    return run


def feature_rates(device_name: str, repeats: int, batch: int, backbones: list[str], sizes: list[int]) -> list[dict]:
    import torch

    from intr_training.engine import native_bf16
    from napari_intr.model import IntrConfig, build_model
    device = torch.device(device_name)
    precisions = ["fp32", *(["bf16"] if native_bf16(device) else [])]
    rows = []
    for name in backbones:
        backbone = build_model(IntrConfig.for_backbone(name, 10)).backbone[0].to(device).eval()
        for size in sizes:
            images = torch.randn(batch, 3, size, size, device=device)
            mask = torch.zeros(batch, size, size, dtype=torch.bool, device=device)

            before = load()
            seconds = median_seconds({p: extraction(backbone, images, mask, p) for p in precisions}, repeats,
                                     device)
            rows.append({"backbone": name, "size": size, "load": f"{before} -> {load()}",
                         **{p: batch / seconds[p] for p in precisions}})
            print(f"{name} {size} px: " + ", ".join(f"{p} {batch / seconds[p]:.2f} images/s" for p in precisions)
                  + f" (load {rows[-1]['load']})", flush=True)
    return rows


def peak_child_memory_mib() -> float:
    """The largest resident set of any child process so far (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def child_cpu_seconds() -> float:
    """CPU seconds (user + system) of the finished child processes so far: on a loaded machine a
    steadier measure of the work than the wall clock."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def whole_run(args, work: Path) -> dict:
    from napari_intr.synth import write_collection
    data = work / "data"
    write_collection(data, per_class=max(1, args.images // args.classes), size=args.size,
                     species_count=args.classes)
    memory_before, cpu_before = peak_child_memory_mib(), child_cpu_seconds()
    result = timed_train(["--data", str(data), "--backbone", "dinov2-vits14", "--init", "none",
                          "--image-size", str(args.size), "--epochs", str(args.epochs), "--freeze", "backbone",
                          "--device", args.device, "--seed", "0", "--progress", "none"], work / "run")
    memory, result["cpu_seconds"] = peak_child_memory_mib(), child_cpu_seconds() - cpu_before
    result["peak_mib"] = memory if memory > memory_before else None  # else an earlier child's peak
    result["data"] = data
    first, last = result["metrics"][0], result["metrics"][-1]
    print(f"intr train dinov2-vits14, {args.images} images x {args.epochs} epochs at {args.size} px: "
          f"{result['seconds'] / 60:.2f} min, {result['cpu_seconds'] / 60:.2f} CPU min (first epoch {first['seconds']:.1f} s with the cache filling, "
          f"last {last['seconds']:.1f} s), peak memory "
          f"{'%.0f MiB' % result['peak_mib'] if result['peak_mib'] else 'not measured'} (load {result['load']})",
          flush=True)
    return result


def explain_rate(args, run: dict, work: Path) -> None:
    images = sorted(p for p in Path(run["data"]).rglob("*.png") if "mask" not in p.name)[:args.explain_images]
    model = work / "run" / "model.safetensors"
    command = [sys.executable, "-m", "intr_training", "explain", *map(str, images), "--out", str(work / "explain"),
               "--model", str(model), "--device", args.device]
    before, started = load(), time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"intr explain failed:\n{completed.stderr[-2000:]}")
    import numpy as np
    from PIL import Image

    from napari_intr import load_model
    from napari_intr.explanation import Explainer
    explainer = Explainer(load_model(model, device=args.device))
    pixels = np.asarray(Image.open(images[0]).convert("RGB"))
    median = median_seconds({"explain": lambda: explainer.explain(pixels)}, args.repeats)["explain"]
    print(f"intr explain, {len(images)} images: {seconds / len(images):.3f} s per image with start-up "
          f"({seconds:.1f} s in all); Explainer.explain in this process: {median:.3f} s per image "
          f"(load {before} -> {load()})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="torch threads in this process (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, help="images per forward in (1) (default: 1 on the CPU, 16 on CUDA)")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--explain-images", type=int, default=20)
    parser.add_argument("--backbones", default=BACKBONES, help=f"(1)'s backbones, comma-separated (default {BACKBONES})")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="(1)'s image sides in px, comma-separated")
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--work", type=Path, help="keep the collection and runs here (default: a temporary folder)")
    args = parser.parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, load {load()}",
          flush=True)
    if not args.skip_features:
        feature_rates(args.device, args.repeats, args.batch or (16 if args.device == "cuda" else 1),
                      args.backbones.split(","), [int(size) for size in args.sizes.split(",")])
    if args.skip_train:
        return
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        run = whole_run(args, work)
        explain_rate(args, run, work)


if __name__ == "__main__":
    main()
