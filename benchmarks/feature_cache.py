"""Fine-tuning with a frozen backbone, with and without the feature cache, side by side.

    python benchmarks/feature_cache.py                       # resnet50, 500 images, 10 classes, 512 px, 20 epochs
    python benchmarks/feature_cache.py --images 40 --uncached-epochs 1 --epochs 3   # a shorter look

Both runs are `intr train --freeze backbone` on the same synthetic collection (`intr synth
--species 10`, 10 % held out for validation) and seed, as separate processes: "cached" with the
default --cache-features, "uncached" with --no-cache-features. The cached run goes the whole
--epochs (its first epochs fill the cache); the uncached one runs --uncached-epochs and its
time per epoch is EXTRAPOLATED to --epochs (start-up time counted once), which the output says.
Accuracy: each run's validation accuracy per epoch (the same epochs are comparable). Load
averages are recorded before and after each run: on a shared 2-core machine read the ratio
with them. --init none: random weights (timing does not depend on them); pass a checkpoint or
detr-r50 (if its weights are in the cache) for accuracy that means something.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from timed_training import timed_train


def run(data: Path, out: Path, epochs: int, flag: str, args) -> dict:
    result = timed_train(["--data", str(data), "--backbone", args.backbone, "--init", args.init,
                          "--image-size", str(args.size), "--epochs", str(epochs), "--freeze", "backbone", flag,
                          "--batch-size", str(args.batch_size), "--seed", "0", "--progress", "none"], out)
    return {"seconds": result["seconds"], "epochs": result["metrics"], "load": result["load"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="images in all (train + validation)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=512, help="image side and --image-size, px")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--uncached-epochs", type=int, default=2, help="epochs the uncached run measures")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--init", default="none")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data", type=Path, help="an existing collection (else drawn with intr synth)")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        data = args.data
        if data is None:
            from intr_training.synth import write_collection
            data = work / "data"
            write_collection(data, per_class=max(1, args.images // args.classes), size=args.size,
                             species_count=args.classes)
        cached = run(data, work / "cached", args.epochs, "--cache-features", args)
        uncached = run(data, work / "uncached", args.uncached_epochs, "--no-cache-features", args)

    per_epoch = sum(e["seconds"] for e in uncached["epochs"]) / len(uncached["epochs"])
    if args.data is None:
        what = f"{args.images} synthetic images of {args.classes} classes"
    else:
        from intr_training.data import scan_collection
        collection = scan_collection(args.data, 0.1, 0)
        what = (f"{args.data}: {len(collection.train) + len(collection.val)} images of "
                f"{len(collection.class_names)} classes")
    start_up = uncached["seconds"] - sum(e["seconds"] for e in uncached["epochs"])
    uncached_total = start_up + per_epoch * args.epochs
    extrapolated = args.uncached_epochs < args.epochs
    print(f"{args.backbone} INTR, --freeze backbone, {what}, --image-size {args.size}, "
          f"batch {args.batch_size}, {args.epochs} epochs; {os.cpu_count()} CPU cores")
    print("| run | whole run | per epoch (first / last) | val acc per epoch | load before -> after |")
    print("|---|---:|---:|---|---|")
    for name, result, total in (("cached", cached, cached["seconds"]), ("uncached", uncached, uncached_total)):
        epochs = result["epochs"]
        accuracies = " ".join(f"{e['val_acc']:.2f}" for e in epochs)
        label = f"{total / 60:.1f} min" + (" (EXTRAPOLATED from "
                                           f"{args.uncached_epochs} epochs)" if name == "uncached" and extrapolated else "")
        print(f"| {name} | {label} | {epochs[0]['seconds']:.0f} s / {epochs[-1]['seconds']:.0f} s | {accuracies} | "
              f"{result['load']} |")
    print(f"speed-up, whole run: {uncached_total / cached['seconds']:.1f}x"
          + (" (uncached extrapolated)" if extrapolated else ""))


if __name__ == "__main__":
    main()
