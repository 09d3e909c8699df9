"""`intr calibrate`: an open-set threshold and conformal prediction sets for any model, from
images of its known species (the work is in calibrate.py; the maths in napari_intr.calibration).
The calibrated model is written beside the original (M.calibrated.safetensors) or to --out; the
original file is replaced only with --overwrite."""
from __future__ import annotations

import argparse
import json
import sys

from napari_intr.calibration import DEFAULT_ALPHA, DEFAULT_KEEP, DEFAULT_SCORE, SCORES
from napari_intr.devices import DEVICES

from .cli_values import BATCH_SIZE, WORKERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint (.safetensors, official .pth, a training "
                        "output folder), 'sample', or a zoo name")
    parser.add_argument("--data", required=True, help="images of the model's species not used for training: "
                        "DATA/<class>/<image> (or DATA/val/… when DATA has train/ and val/)")
    parser.add_argument("--class-names", help="text file with the model's class names, one per line (for "
                        "official checkpoints, which carry none)")
    parser.add_argument("--out", help="the calibrated model (.safetensors; default: beside the model, "
                        "M.calibrated.safetensors)")
    parser.add_argument("--overwrite", action="store_true", help="write the calibration into the model's own "
                        ".safetensors file (or replace an existing --out)")
    parser.add_argument("--score", choices=SCORES, default=DEFAULT_SCORE, help="open-set score (default "
                        f"{DEFAULT_SCORE}: log-sum-exp of every class query's presence score; class_energy: the "
                        "energy against the calibration images predicted as the same class; mahalanobis: how unlike its class's images the top class query's decoder "
                        "output is; energy_mahalanobis: both)")
    parser.add_argument("--keep", type=float, default=DEFAULT_KEEP, help="share of known-species images kept as "
                        f"known; the rest fall below the threshold (default {DEFAULT_KEEP})")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="prediction sets miss the true species "
                        f"of at most this share of images like the calibration images (default {DEFAULT_ALPHA}: "
                        "90 %% sets)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--batch-size", type=BATCH_SIZE, default=16)
    parser.add_argument("--workers", type=WORKERS, default=0, help="data-loading processes")
    parser.add_argument("--device", default="auto", choices=DEVICES)


def run(args: argparse.Namespace) -> int:
    from napari_intr.calibration import check_share

    from .calibrate import calibrate_samples, calibration_target, summary_of, write_calibrated
    from .evaluate import load_and_match

    check_share(args.alpha, "--alpha")  # before the model loads: a typo fails at once
    check_share(args.keep, "--keep")
    target = calibration_target(args.model, args.out, args.overwrite)
    model, _, matched = load_and_match(args.model, args.data, args.class_names, args.device,
                                       warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    calibration = calibrate_samples(model, matched.samples, str(matched.folder), args.score, args.keep,
                                    args.alpha, args.batch_size, args.workers)
    written = write_calibrated(model, target)
    summary = {**summary_of(calibration), "model": str(written)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{calibration.describe()}\n"
              f"on these images: {calibration.known_kept:.1%} kept as known, prediction sets hold the true "
              f"species for {calibration.coverage:.1%} (mean size {calibration.mean_set_size:.2f})\n"
              f"calibrated model: {written}")
    return 0
