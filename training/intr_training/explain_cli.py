"""`intr explain`: explain images or a folder (the work is napari_intr.batch.explain_folder):
predictions.csv plus one float32 TIFF of head maps per image."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from napari_intr.devices import DEVICES
from napari_intr.model.config import DECODE_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIR",
                        help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", default="sample",
                        help="'sample' (default), a zoo name, or a checkpoint file")
    parser.add_argument("--classes", metavar="A,B,...",
                        help="candidate classes, comma-separated (default: all the model's classes)")
    parser.add_argument("--mode", choices=DECODE_MODES, default="drop",
                        help="how non-candidate queries are left out: drop them (default) or zero them (paper Fig. 6)")
    parser.add_argument("--top-k", type=int, default=5, help="predictions per image in the CSV (default 5)")
    parser.add_argument("--layer", type=int, help="decoder layer of the saved maps, 1-based (default: the last)")
    parser.add_argument("--class", dest="map_class", metavar="NAME",
                        help="save this class's maps for every image (default: each image's top-1)")
    parser.add_argument("--device", default="auto", choices=DEVICES)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_intr.batch import explain_folder
    from napari_intr.io import find_images
    from napari_intr.loading import load_model

    files = find_images(args.inputs)  # before the model loads: a typo should fail at once
    model = load_model(args.model, device=args.device)
    classes = [name.strip() for name in args.classes.split(",") if name.strip()] if args.classes else None
    if args.classes is not None and not classes:
        raise ValueError("--classes is empty; give class names separated by commas")
    model.class_indices(classes)  # unknown names fail here, before any warning or progress bar
    if classes is not None and len(classes) == 1:
        print("intr explain: warning: with a single candidate class every probability is 1; "
              "the maps still show where that class's query looks", file=sys.stderr)
    num_layers = model.config.dec_layers
    layer = num_layers if args.layer is None else args.layer
    if not 1 <= layer <= num_layers:
        raise ValueError(f"--layer {args.layer} is out of range: the model's decoder has "
                         f"{num_layers} layers (1..{num_layers})")
    bars = []  # opened at the first image, so that argument errors print without a bar

    def progress(done: int, total: int, path: Path) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="image", desc="explain"))
        bars[0].set_postfix_str(path.name, refresh=False)
        bars[0].update(1)

    try:
        summary = explain_folder(model, files, args.out, classes, args.mode, args.top_k,
                                 layer - 1, args.map_class, os.fspath(args.model), progress)
    finally:
        for bar in bars:
            bar.close()
    _print_summary(summary)
    if summary["done"] == 0:
        raise ValueError(f"none of the {summary['total']} images could be explained (reasons above)")
    return 0


def _print_summary(summary: dict) -> None:
    print(f"explained {summary['done']} of {summary['total']} images in {summary['seconds']:.1f} s")
    print(f"predictions: {summary['predictions']}")
    if summary["attention_files"]:
        print(f"attention maps: {len(summary['attention_files'])} TIFF files in {summary['predictions'].parent}")
    for path, note in summary["notes"]:
        print(f"note: {path}: {note}")
    for path, reason in summary["skipped"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
