"""`intr eval`: top-1/top-5 accuracy, per-class accuracy and the confusion matrix of a model on
an image folder. Folder classes are matched to the model's classes by name; images of classes
the model does not know are reported and left out. With DATA/train and DATA/val, DATA/val is used."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .faithfulness import options as faithfulness_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint (.safetensors, official .pth, a training "
                        "output folder), 'sample', or a zoo name")
    parser.add_argument("--data", required=True, help="image folder: DATA/<class>/<image> (or DATA/val/…)")
    parser.add_argument("--class-names", help="text file with the model's class names, one per line (for "
                        "official checkpoints, which carry none)")
    parser.add_argument("--out", help="folder for confusion_matrix.csv, per_class_accuracy.csv and metrics.json")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    faithfulness_options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from napari_intr.atomic import atomic_write
    from napari_intr.csv_output import write_csv
    from napari_intr.loading import load_model, resolve_device

    from .data import Collection, ImageFolderDataset, class_images, collate
    from .engine import evaluate, options_for
    from .transforms import eval_transform

    if args.explanations:
        faithfulness_options.check_arguments(args)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    root = Path(args.data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist; give a folder with one subfolder "
                                "of images per class")
    folder = root / "val" if (root / "val").is_dir() and (root / "train").is_dir() else root
    device = resolve_device(args.device)
    model = load_model(args.model, args.class_names, device)
    found = Collection(folder, [], [], [])
    classes = class_images(folder, found)
    if not classes:
        raise ValueError(f"{folder} has no class folders with images; expected {folder}/<class name>/<image>")
    unknown = sorted(name for name in classes if name not in model.class_names)
    samples = [(path, model.class_names.index(name)) for name, paths in classes.items()
               if name not in unknown for path in paths]
    if not samples:
        raise ValueError(f"none of the {len(classes)} class folders in {folder} is a class of the model "
                         f"(e.g. {unknown[0]!r} vs the model's {model.class_names[0]!r}); name the folders "
                         "after the model's classes, or give --class-names")
    for message in found.warnings + found.skipped:
        print(f"warning: {message}", file=sys.stderr)
    if unknown:
        print(f"warning: left out {len(unknown)} classes the model does not know: {', '.join(unknown)}",
              file=sys.stderr)

    loader = DataLoader(ImageFolderDataset(samples, eval_transform(model.config)), batch_size=args.batch_size,
                        num_workers=args.workers, collate_fn=collate)
    result = evaluate(model, loader, options_for(device), len(model.class_names))
    per_class = dict(zip(model.class_names, result.per_class_accuracy()))
    summary = {"model": str(args.model), "data": str(folder), "images": result.images,
               "top1": result.accuracy, "top5": result.top5_accuracy,
               "per_class_accuracy": {name: per_class[name] for name in classes if name not in unknown},
               "unknown_classes": {name: len(classes[name]) for name in unknown},
               "skipped_images": len(found.skipped) + result.skipped}

    if args.out:
        out = Path(args.out).expanduser()
        names, matrix = model.class_names, result.confusion.tolist()
        write_csv(out / "confusion_matrix.csv", ["true \\ predicted", *names],
                  ([name, *row] for name, row in zip(names, matrix)))
        write_csv(out / "per_class_accuracy.csv", ["class", "images", "accuracy"],
                  ([name, sum(matrix[i]), per_class[name]] for i, name in enumerate(names)))
        atomic_write(out / "metrics.json", lambda t: Path(t).write_text(json.dumps(summary, indent=2) + "\n"))
        summary["out"] = str(out)

    if args.explanations:
        from .faithfulness.run import evaluate_explanations
        summary["explanations"] = evaluate_explanations(model, samples, root, folder, args)
    if args.json:
        print(json.dumps(summary))
    else:
        print_report(summary)
    return 0


def print_report(summary: dict) -> None:
    print(f"{summary['images']} images of {len(summary['per_class_accuracy'])} classes from {summary['data']}")
    print(f"top-1 accuracy {summary['top1']:.4f}   top-5 accuracy {summary['top5']:.4f}")
    width = max(len(name) for name in summary["per_class_accuracy"])
    for name, accuracy in summary["per_class_accuracy"].items():
        print(f"  {name:<{width}}  {'n/a' if accuracy is None else f'{accuracy:.3f}'}")
    if "explanations" in summary:
        print()
        print(summary["explanations"]["markdown"], end="")
        print(f"tables and plots: {summary['explanations']['out']}")
    if "out" in summary:
        print(f"confusion matrix: {Path(summary['out']) / 'confusion_matrix.csv'}")
    else:
        print("add --out DIR to write the confusion matrix as CSV")
