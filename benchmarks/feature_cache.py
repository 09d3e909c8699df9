"""Fine-tuning with a frozen backbone, with and without the feature cache, side by side.

    python benchmarks/feature_cache.py                       # resnet50, 500 images, 10 classes, 512 px, 20 epochs
    python benchmarks/feature_cache.py --images 40 --uncached-epochs 1 --epochs 3   # a shorter look
    python benchmarks/feature_cache.py --parts       # per-image time of a step's two halves, fp32 vs bf16

Both runs are `intr train --freeze backbone` on the same synthetic collection (`intr synth
--species 10`, 10 % held out for validation) and seed, as separate processes: "cached" with the
default --cache-features, "uncached" with --no-cache-features. The cached run goes the whole
--epochs (its first epochs fill the cache); the uncached one runs --uncached-epochs and its
time per epoch is EXTRAPOLATED to --epochs (start-up time counted once), which the output says.
Accuracy: each run's validation accuracy per epoch (the same epochs are comparable). Load
averages are recorded before and after each run: on a shared 2-core machine read the ratio
with them. --init none: random weights (timing does not depend on them); pass a checkpoint or
detr-r50 (if its weights are in the cache) for accuracy that means something. --precision is
intr train's (auto: bf16 for these step sizes on a CPU with native bf16); --uncached-precisions
adds uncached runs in other precisions (e.g. fp32, how intr train ran on a CPU before --precision).

--parts times, in this process, what the cache saves (the frozen backbone's forward, batch norm
folded as training computes it) and what a cached step still does (projection, encoder,
decoder: forward, backward, clipping, intr train's AdamW) per image, in fp32 and in bf16
autocast with channels-last: the bound on what the cache can save.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from timed_training import load, median_seconds, timed_train


def run(data: Path, out: Path, epochs: int, flag: str, precision: str, args) -> dict:
    result = timed_train(["--data", str(data), "--backbone", args.backbone, "--init", args.init,
                          "--image-size", str(args.size), "--epochs", str(epochs), "--freeze", "backbone", flag,
                          "--batch-size", str(args.batch_size), "--precision", precision, "--seed", "0",
                          "--progress", "none"], out)
    return {"seconds": result["seconds"], "epochs": result["metrics"], "load": result["load"]}


def parts(args) -> None:
    """Per-image seconds of the frozen backbone's forward and of a cached step, fp32 vs bf16."""
    import torch

    from intr_training.data import Batch
    from intr_training.engine import StepOptions, native_bf16, train_step
    from intr_training.feature_cache import backbone_features
    from intr_training.initialization import freeze, initial_model
    from intr_training.training_run import optimizer_for
    from napari_intr.model.backbone import folded_batch_norm
    from napari_intr.recipes import CLIP_MAX_NORM, RECIPES

    torch.manual_seed(0)
    # The new model `intr train --init none --freeze backbone` starts from (the recipe's dropout).
    model = initial_model("none", [f"class {i}" for i in range(args.classes)], args.backbone, args.size,
                          torch.Generator().manual_seed(0), RECIPES[args.backbone]["dropout"]).model
    freeze(model, "backbone")
    model.backbone.eval()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_for(model, 1e-5, 1e-5)
    images = torch.randn(args.batch_size, 3, args.size, args.size)
    mask = torch.zeros(args.batch_size, args.size, args.size, dtype=torch.bool)
    labels = torch.randint(0, args.classes, (args.batch_size,))
    with torch.no_grad():
        features, feature_mask = model.backbone[0](images, mask)

    def backbone_forward(bf16: bool):  # as the cache fills: batch norm folded (training_run.py)
        backbone_features(folded, images, mask, StepOptions(torch.device("cpu"), amp=bf16, channels_last=bf16))

    def cached_step(bf16: bool):  # engine.train_step on a cached batch, then train_one_epoch's update
        options = StepOptions(torch.device("cpu"), amp=bf16, channels_last=bf16)
        loss, _ = train_step(model, Batch(features, feature_mask, labels, 0, features=True), options)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, CLIP_MAX_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    before = load()
    rows = {}
    for bf16 in (False, True):
        model.backbone.to(memory_format=torch.channels_last if bf16 else torch.contiguous_format)
        folded = folded_batch_norm(model.backbone[0])
        seconds = median_seconds({"backbone": lambda bf16=bf16: backbone_forward(bf16),
                                  "step": lambda bf16=bf16: cached_step(bf16)}, args.repeats)
        rows[bf16] = (seconds["backbone"] / args.batch_size, seconds["step"] / args.batch_size)
    print(f"{args.backbone} INTR, {args.classes} classes, batch {args.batch_size} of {args.size}x{args.size} px, "
          f"{torch.get_num_threads()} torch threads, median of {args.repeats}; native bf16: "
          f"{native_bf16(torch.device('cpu'))}; load {before} -> {load()}")
    print("| per image | fp32 | bf16 autocast (channels-last) |\n|---|---:|---:|")
    print(f"| backbone forward (what the cache saves) | {rows[False][0]:.3f} s | {rows[True][0]:.3f} s |")
    print(f"| cached step (projection, encoder, decoder: forward, backward, AdamW) | {rows[False][1]:.3f} s | "
          f"{rows[True][1]:.3f} s |")
    for bf16, name in ((False, "fp32"), (True, "bf16")):
        backbone, step = rows[bf16]
        print(f"{name}: at most {(backbone + step) / step:.2f}x per epoch once the cache is full")


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
    parser.add_argument("--precision", default="auto", help="intr train --precision of both runs")
    parser.add_argument("--uncached-precisions", default="", help="comma-separated: more uncached runs in these "
                        "precisions (e.g. fp32)")
    parser.add_argument("--parts", action="store_true", help="time the two halves of a step instead (in-process)")
    parser.add_argument("--repeats", type=int, default=3, help="--parts: timed repeats (median)")
    args = parser.parse_args(argv)
    if args.parts:
        parts(args)
        return

    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        data = args.data
        if data is None:
            from napari_intr.synth import write_collection
            data = work / "data"
            write_collection(data, per_class=max(1, args.images // args.classes), size=args.size,
                             species_count=args.classes)
        cached = run(data, work / "cached", args.epochs, "--cache-features", args.precision, args)
        uncached = {precision: run(data, work / f"uncached-{precision}", args.uncached_epochs, "--no-cache-features",
                                   precision, args)
                    for precision in dict.fromkeys([args.precision, *filter(None, args.uncached_precisions.split(","))])}

    if args.data is None:
        what = f"{args.images} synthetic images of {args.classes} classes"
    else:
        from napari_intr.collection.scan import scan_collection
        collection = scan_collection(args.data, 0.1, 0)
        what = (f"{args.data}: {len(collection.train) + len(collection.val)} images of "
                f"{len(collection.class_names)} classes")
    extrapolated = args.uncached_epochs < args.epochs
    print(f"{args.backbone} INTR, --freeze backbone, {what}, --image-size {args.size}, "
          f"batch {args.batch_size}, {args.epochs} epochs; {os.cpu_count()} CPU cores, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| run | whole run | per epoch (first / last) | val acc per epoch | load before -> after |")
    print("|---|---:|---:|---|---|")
    runs = [(f"cached, --precision {args.precision}", cached, cached["seconds"])]
    for precision, result in uncached.items():
        epochs = result["epochs"]
        start_up = result["seconds"] - sum(e["seconds"] for e in epochs)
        runs.append((f"uncached, --precision {precision}", result,
                     start_up + sum(e["seconds"] for e in epochs) / len(epochs) * args.epochs))
    for name, result, total in runs:
        epochs = result["epochs"]
        accuracies = " ".join(f"{e['val_acc']:.2f}" for e in epochs)
        label = f"{total / 60:.1f} min" + (" (EXTRAPOLATED from "
                                           f"{args.uncached_epochs} epochs)" if name.startswith("uncached")
                                           and extrapolated else "")
        print(f"| {name} | {label} | {epochs[0]['seconds']:.0f} s / {epochs[-1]['seconds']:.0f} s | {accuracies} | "
              f"{result['load']} |")
    for name, _, total in runs[1:]:
        print(f"speed-up, whole run, cached vs {name}: {total / cached['seconds']:.1f}x"
              + (" (uncached extrapolated)" if extrapolated else ""))


if __name__ == "__main__":
    main()
