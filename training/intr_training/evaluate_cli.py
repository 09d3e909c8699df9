"""`intr eval`: top-1/top-5 accuracy, per-class accuracy and the confusion matrix of a model on
an image folder (the work is in evaluate.py), optionally the faithfulness of its explanations."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_intr.devices import DEVICES, PRECISION_HELP, PRECISIONS

from .cli_values import BATCH_SIZE, WORKERS
from .faithfulness import options as faithfulness_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint (.safetensors, official .pth, a training "
                        "output folder), 'sample', or a zoo name")
    parser.add_argument("--data", required=True, help="image folder: DATA/<class>/<image> (or DATA/val/…)")
    parser.add_argument("--class-names", help="text file with the model's class names, one per line (for "
                        "official checkpoints, which carry none)")
    parser.add_argument("--out", help="folder for confusion_matrix.csv, per_class_accuracy.csv and metrics.json")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--batch-size", type=BATCH_SIZE, default=16)
    parser.add_argument("--workers", type=WORKERS, default=2, help="data-loading processes")
    parser.add_argument("--shortlist", type=int, metavar="K", help="decode only each image's top K classes of "
                        "the cheap first pass (as intr explain --shortlist); top-5 counts only decoded classes")
    parser.add_argument("--compare-full", action="store_true", help="with --shortlist: also decode every class "
                        "and report the shortlist's top-1 agreement with that and its recall@K")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    faithfulness_options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from napari_intr.threads import use_inference_threads

    from .evaluate import evaluate_folder, load_and_match

    if args.explanations:
        faithfulness_options.check_arguments(args)
        from .faithfulness.methods import require_captum
        require_captum()
    use_inference_threads()  # the available cores (affinity, quota) unless OMP_NUM_THREADS says
    model, root, matched = load_and_match(args.model, args.data, args.class_names, args.device,
                                          precision=args.precision, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    summary = evaluate_folder(model, args.model, matched, args.out, args.batch_size, args.workers,
                              args.shortlist, args.compare_full)
    if args.explanations:
        from .faithfulness.run import evaluate_explanations
        summary["explanations"] = evaluate_explanations(
            model, matched.samples, root, matched.folder, faithfulness_options.settings(args))
    if args.json:
        print(json.dumps(summary))
    else:
        print_report(summary)
    return 0


def print_report(summary: dict) -> None:
    print(f"{summary['images']} images of {len(summary['per_class_accuracy'])} classes from {summary['data']}")
    print(f"top-1 accuracy {summary['top1']:.4f}   top-5 accuracy {summary['top5']:.4f}"
          + (f"   (shortlist {summary['shortlist']}: the other classes were not decoded)"
             if "shortlist" in summary else ""))
    if "shortlist_check" in summary:
        check = summary["shortlist_check"]
        print(f"shortlist {check['shortlist']} vs the full decode of every class: top-1 agreement "
              f"{check['top1_agreement_with_full']:.4f}, recall@{check['shortlist']} of the full top-1 "
              f"{check['recall_of_full_top1']:.4f}, of the true class {check['recall_of_true_class']:.4f}; "
              f"full-decode top-1 accuracy {check['full_top1']:.4f}")
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
