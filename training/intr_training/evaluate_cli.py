"""`intr eval`: top-1/top-5 accuracy, per-class accuracy and the confusion matrix of a model on
an image folder (the work is in evaluate.py), optionally the faithfulness of its explanations."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_intr.devices import DEVICES, PRECISION_HELP, PRECISIONS

from . import faithfulness_options
from .cli_values import BATCH_SIZE, WORKERS


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
    parser.add_argument("--unknown", metavar="DIR", help="images of species the model was NOT trained on: "
                        "reports AUROC and FPR at 95 %% TPR of known (--data) vs unknown images for each open-set "
                        "score; a calibrated model also reports its prediction sets' coverage and size on --data")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    faithfulness_options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from napari_intr.threads import use_inference_threads

    from .evaluate import evaluate_folder, load_and_match

    if args.explanations:
        faithfulness_options.check_arguments(args)
        from napari_intr.faithfulness.methods import require_captum
        require_captum()
    use_inference_threads()  # the available cores (affinity, quota) unless OMP_NUM_THREADS says
    model, root, matched = load_and_match(args.model, args.data, args.class_names, args.device,
                                          precision=args.precision,
                                          warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    extra = {}
    if args.unknown is not None or model.calibration is not None:
        from .calibrate import evaluate_open_set, write_open_set_outputs
        extra = evaluate_open_set(model, matched.samples, matched.folder, args.unknown, args.batch_size, args.workers)
        scores = extra.pop("_scores", None)
        if args.out is not None:
            Path(args.out).expanduser().mkdir(parents=True, exist_ok=True)
            write_open_set_outputs(Path(args.out).expanduser(), model, {**extra, "_scores": scores})
    summary = evaluate_folder(model, args.model, matched, args.out, args.batch_size, args.workers,
                              args.shortlist, args.compare_full, extra)
    if args.explanations:
        from napari_intr.faithfulness.run import evaluate_explanations
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
    print_open_set(summary)
    if "explanations" in summary:
        print()
        print(summary["explanations"]["markdown"], end="")
        print(f"tables and plots: {summary['explanations']['out']}")
    if "out" in summary:
        print(f"confusion matrix: {Path(summary['out']) / 'confusion_matrix.csv'}")
    else:
        print("add --out DIR to write the confusion matrix as CSV")


def print_open_set(summary: dict) -> None:
    if "open_set" not in summary and "coverage" not in summary:
        return  # a model without calibration, judged without --unknown: as before
    if "open_set" in summary:
        report = summary["open_set"]
        print(f"known vs unknown ({report['known_images']} vs {report['unknown_images']} images from "
              f"{report['unknown']}):")
        for name, values in report["scores"].items():
            chosen = "  (the calibrated score)" if name == report["score"] and summary["calibrated"] else ""
            print(f"  {name:<16} AUROC {values['auroc']:.4f}   FPR at 95 % TPR {values['fpr_at_95_tpr']:.4f}{chosen}")
        if "threshold" in report:
            print(f"  at the calibrated threshold {report['threshold']:.3g}: {report['known_kept']:.1%} of known "
                  f"images kept, {report['unknown_rejected']:.1%} of unknown ones rejected")
    if "coverage" in summary:
        coverage = summary["coverage"]
        print(f"prediction sets ({coverage['method'].upper()}, nominal {coverage['nominal']:.0%}): coverage "
              f"{coverage['coverage']:.1%}, mean set size {coverage['mean_set_size']:.2f}, "
              f"{coverage['empty_sets']} empty, on {coverage['images']} images")
        if coverage["same_as_calibration_data"]:
            print("  warning: these are the images the model was calibrated on; coverage is only a fair test on "
                  "images it was not calibrated on")
        width = max(len(name) for name in coverage["per_class"])
        for name, values in coverage["per_class"].items():
            print(f"  {name:<{width}}  coverage {values['coverage']:.3f}  mean set size {values['mean_set_size']:.2f}")
    elif not summary.get("calibrated"):
        print("the model is not calibrated: no prediction sets (calibrate it with intr calibrate)")
