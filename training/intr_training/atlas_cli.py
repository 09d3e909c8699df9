"""`intr atlas`: the trait atlas of a collection (what each head looks for; which heads tell
look-alikes apart) as atlas.html, heads.csv, pairs.csv and PNG montages.

Several processes: `torchrun --nproc-per-node K -m intr_training atlas …` shares the images out."""
from __future__ import annotations

import argparse
import sys

from napari_intr.class_names import parse_names, parse_pairs
from napari_intr.devices import DEVICES, PRECISION_HELP, PRECISIONS

from .cli_values import COUNT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="sample", help="'sample' (default), a zoo name, or a checkpoint file")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="image folder: DIR/<class>/<image> (or DIR/train/… and DIR/val/…)")
    parser.add_argument("--out", required=True, metavar="OUT", help="output folder (a re-run continues in it)")
    parser.add_argument("--layer", type=int, help="decoder layer, 1-based (default: the last)")
    parser.add_argument("--classes", metavar="A,B,...", help="only these classes (default: every class with images); quote a name holding a comma "
                        '("Tit, great"), or give @FILE with one name per line')
    parser.add_argument("--pairs", metavar="A:B,...",
                        help="look-alike pairs, heads of A's query telling A from B (quote a name holding ':' "
                             "or ',', or give @FILE with one pair A:B per line; default: the most "
                             "confused pairs; each image is then compared with its 2 likeliest other classes)")
    parser.add_argument("--per-head", type=COUNT, default=None, metavar="N",
                        help="top images (patches) per class and head (default 6)")
    parser.add_argument("--parts", metavar="FILE",
                        help="CUB-200-2011 parts/part_locs.txt (with images.txt two folders up) for consistency; "
                             "default: the masks `intr synth` writes in DIR/.masks, else feature cosine")
    parser.add_argument("--restart", action="store_true", help="forget the images summarised by an earlier run")
    parser.add_argument("--strict", action="store_true", help="fail (exit 2) where a warning would do: a --parts "
                        "file that matches no image")
    parser.add_argument("--class-names", help="text file with the model's class names (official checkpoints)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_intr import distributed
    from napari_intr.atlas import DEFAULT_PER_HEAD, AtlasOptions, build_atlas
    from napari_intr.loading import load_model
    from napari_intr.threads import use_inference_threads

    per_head = DEFAULT_PER_HEAD if args.per_head is None else args.per_head
    options = AtlasOptions(layer=args.layer, classes=parse_names(args.classes, "--classes"),
                           pairs=parse_pairs(args.pairs, "--pairs"), per_head=per_head,
                           parts=args.parts, restart=args.restart, strict=args.strict)
    use_inference_threads()  # the available cores (affinity, quota) unless OMP_NUM_THREADS says
    model = load_model(args.model, args.class_names, args.device, args.precision)
    info, device = distributed.setup(model.device)
    model = model.to(device)
    bars = []

    def progress(done: int, total: int) -> None:
        if not info.is_main:
            return
        if not bars:
            bars.append(tqdm(total=total, initial=done, unit="image", desc="atlas"))
        bars[0].update(done - bars[0].n)

    try:
        result = build_atlas(model, str(args.model), args.data, args.out, options, progress)
    finally:
        for bar in bars:
            bar.close()
        distributed.cleanup()
    if not info.is_main:
        return 0
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    atlas = result.atlas
    print(f"summarised {result.summarised_now} images now, {result.reused} from an earlier run "
          f"({result.total} in all) in {result.seconds:.1f} s")
    for key, reason in atlas.skipped:
        print(f"skipped {key}: {reason}", file=sys.stderr)
    if atlas.rejected:
        print(f"none of the {len(atlas.classes)} species: {len(atlas.rejected)} images (below the calibrated "
              "open-set threshold), left out of the summaries:")
        for key, folder_class, score in atlas.rejected:
            print(f"  {key} (folder {folder_class}, score {score:.3g})")
    print(f"atlas: {result.files['html']}")
    print(f"tables: {result.files['heads']}, {result.files['pairs']}; montages: {result.files['montages']}")
    if atlas.images == 0:
        raise ValueError(f"none of the {result.total} images could be summarised (reasons above)")
    return 0
