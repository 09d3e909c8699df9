"""`intr explain`: explain images, a folder, or the regions of a boxes file (the work is
napari_intr.collection.explain.explain_folder): predictions.csv plus one attention TIFF per image or region.

`torchrun --nproc-per-node K -m intr_training explain …` shares the images over K processes
(one per GPU, or CPU processes) through napari_intr.collection.sharding; the output is the same as one
process's. Any run continues where an earlier one into the same folder stopped (--restart redoes
everything)."""
from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from napari_intr.calibration import SUBSET_NOTE
from napari_intr.class_names import parse_names
from napari_intr.devices import DEVICES, PRECISION_HELP, PRECISIONS
from napari_intr.model.config import DECODE_MODES

from .cli_values import COUNT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="IMAGES_OR_DIR",
                        help="image files and/or folders (searched recursively); with --boxes, optional")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", default="sample",
                        help="'sample' (default), a zoo name, or a checkpoint file")
    parser.add_argument("--class-names", metavar="FILE",
                        help="text file of class names, one per line (for checkpoints without names)")
    parser.add_argument("--classes", metavar="A,B,...",
                        help="candidate classes, comma-separated (default: all the model's classes); quote a "
                        'name holding a comma ("Tit, great"), or give @FILE with one name per line')
    parser.add_argument("--mode", choices=DECODE_MODES, default="drop",
                        help="how non-candidate queries are left out: drop them (default) or zero them (paper Fig. 6)")
    parser.add_argument("--top-k", type=COUNT, default=5, help="predictions per image in the CSV (default 5)")
    parser.add_argument("--layer", type=int, help="decoder layer of the saved maps, 1-based (default: the last)")
    parser.add_argument("--class", dest="map_class", metavar="NAME",
                        help="save this class's maps for every image (default: each image's top-1)")
    parser.add_argument("--boxes", metavar="BOXES.csv",
                        help="explain regions of photographs holding many specimens: a CSV with columns "
                             "image,x0,y0,x1,y1[,id] in pixels of the original image (relative image paths "
                             "are taken from the CSV's folder); one CSV row and one TIFF per region")
    parser.add_argument("--margin", default="0",
                        help="context added around each box: pixels (16) or a percentage of the box's "
                             "longer side (10%%); default 0")
    parser.add_argument("--tiff-format", choices=("imagej", "ome"), default="imagej",
                        help="attention maps as ImageJ hyperstacks (default; Fiji shows named slices) or OME-TIFF")
    parser.add_argument("--restart", action="store_true",
                        help="redo every image, forgetting an earlier run into the same --out folder")
    parser.add_argument("--shortlist", type=int, metavar="K", help="decode only each image's top K classes "
                        "of a cheap first pass over all of them (for models with thousands of classes); the "
                        "CSV ranks those K, the others were not decoded")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)


def run(args: argparse.Namespace) -> int:
    from napari_intr import distributed
    from napari_intr.devices import resolve_device
    from napari_intr.image_files import find_images
    from napari_intr.provenance import check_apart
    from napari_intr.regions import Margin, read_boxes
    if not args.inputs and not args.boxes:
        raise ValueError("give image files or folders to explain, or --boxes BOXES.csv")
    check_apart(args.inputs, args.out)  # before any work: results inside would be read back as images
    boxes = read_boxes(args.boxes) if args.boxes else None
    files = find_images(args.inputs) if args.inputs else None  # before the model loads: typos fail at once
    if boxes is not None and files is not None:
        wanted = {path.resolve() for path in files}
        boxes = {path: regions for path, regions in boxes.items() if path.resolve() in wanted}
        if not boxes:
            raise ValueError(f"{args.boxes} has no boxes for the images given; leave the images out to "
                             "explain every image the boxes file names")
        files = None  # the boxes name the images
    margin = Margin.parse(args.margin)
    info, device = distributed.setup(resolve_device(args.device))
    try:
        return _explain(args, files, boxes, margin, info, device)
    finally:
        distributed.cleanup()


def _explain(args, files, boxes, margin, info, device) -> int:
    from tqdm import tqdm

    from napari_intr import distributed, zoo
    from napari_intr.collection.explain import explain_folder
    from napari_intr.collection.run_lock import job_lock
    from napari_intr.collection.sharding import ShardedRun
    from napari_intr.explanation import layer_from_number
    from napari_intr.loading import load_model
    from napari_intr.threads import use_inference_threads
    if info.active and args.model in zoo.ZOO:
        # one download for all processes (they share the cache), the others wait for it
        if info.is_main:
            zoo.fetch(args.model)
        distributed.barrier()
    use_inference_threads()  # the available cores (affinity, quota) unless OMP_NUM_THREADS says
    model = load_model(args.model, class_names=args.class_names, device=device, precision=args.precision)
    classes = parse_names(args.classes, "--classes")
    model.class_indices(classes)  # unknown names fail here, before any warning or progress bar
    if classes is not None and len(classes) == 1 and info.is_main:
        print("intr explain: warning: with a single candidate class every probability is 1; "
              "the maps still show where that class's query looks", file=sys.stderr)
    layer = layer_from_number(args.layer, model.config.dec_layers, "--layer")
    bars = []  # opened at the first report, so that argument errors print without a bar

    def progress(done: int, total: int, path: Path) -> None:
        if not info.is_main:
            return
        if not bars:
            unit = "region" if boxes is not None else "image"
            bars.append(tqdm(total=total, unit=unit, desc=f"explain ({info.world_size} processes)"
                             if info.active else "explain"))
        bars[0].n = done
        bars[0].set_postfix_str(path.name, refresh=False)
        bars[0].refresh()

    start_job = functools.partial(ShardedRun.start, restart=args.restart, info=info)
    try:
        with job_lock(args.out, "intr explain", info):  # another run writing into --out is refused
            summary = explain_folder(model, files or [], args.out, classes, args.mode, args.top_k, layer,
                                     args.map_class, os.fspath(args.model), progress, boxes=boxes,
                                     margin=margin, tiff_format=args.tiff_format, start_job=start_job,
                                     shortlist=args.shortlist)
    finally:
        for bar in bars:
            bar.close()
    if not info.is_main:
        return 0
    _print_summary(summary, "regions" if boxes is not None else "images")
    if summary["done"] == 0:
        raise ValueError(f"none of the {summary['total']} {'regions' if boxes else 'images'} could be "
                         "explained (reasons above)")
    return 0


def _print_summary(summary: dict, what: str) -> None:
    resumed = f" ({summary['resumed']} done by an earlier run)" if summary["resumed"] else ""
    if summary.get("changes"):
        print(summary["changes"])
    print(f"explained {summary['done']} of {summary['total']} {what}{resumed} in {summary['seconds']:.1f} s")
    print(f"predictions: {summary['predictions']}")
    if summary["attention_files"]:
        print(f"attention maps: {len(summary['attention_files'])} TIFF files in {summary['predictions'].parent}")
    for path, note in summary["notes"]:
        print(f"note: {path}: {note}")
    if summary.get("undecoded"):
        print(f"note: shortlist: for each image only its first-pass top classes were decoded; the other "
              f"{summary['undecoded']:,} classes were not (no probability, no maps)")
    _print_open_set(summary, what)
    for path, reason in summary["skipped"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def _print_open_set(summary: dict, what: str) -> None:
    """Rejected items counted and listed: a calibrated model found none of its species in them."""
    calibration = summary.get("calibration")
    if calibration is None:
        print("note: the model is not calibrated, so every image is named as one of its classes (the known and "
              "prediction_set columns are empty); calibrate it with intr calibrate --model MODEL --data IMAGES")
        return
    if not summary["judged"]:
        print(f"note: {SUBSET_NOTE}")
        return
    rejected = summary["rejected"]
    print(f"none of the {calibration.classes:,} species: {len(rejected)} of {summary['done']} {what} "
          f"({calibration.score.replace('_', ' ')} below {calibration.threshold:.3g}, calibrated on "
          f"{calibration.images:,} images; known = no in the CSV)")
    for path, score in rejected:
        print(f"  {path} (score {score:.3g})")
