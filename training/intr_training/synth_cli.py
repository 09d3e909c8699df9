"""`intr synth`: write the synthetic mimicry-ring collection (offline data for trying training)."""
from __future__ import annotations

import argparse

from napari_intr.class_names import parse_names

from .cli_values import SEED, whole_number

# Drawing holds a few float64 copies of one image: 2048 px is ~0.5 GB at most, and far more
# detail than the synthetic specimens have.
MAX_SIZE = 2048
MAX_PER_CLASS = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write (created; a previous synth output "
                        "there is replaced, anything else is refused)")
    parser.add_argument("--per-class", type=whole_number(1, MAX_PER_CLASS), default=40,
                        help=f"images per species (default 40, at most {MAX_PER_CLASS})")
    parser.add_argument("--size", type=whole_number(32, MAX_SIZE, " px"), default=128,
                        help=f"image side in px (default 128, 32 to {MAX_SIZE})")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--species", type=int, metavar="N", help="many-species mode: N procedural species "
                        "(combinations of wing shape, colour, pattern and attribute spot; 2 to 800) instead "
                        "of the 9 hand-made ones")
    parser.add_argument("--only", metavar="A,B,...", help="draw only these species or rings (comma-separated "
                        "names): catalogue species, its rings (postman, tiger, swallowtail, morpho), or many-species "
                        "names such as 'Fictilia rubra-nuda-alba' or rings such as 'Fictilia rubra-nuda', which the "
                        "bundled model has never seen: known and unknown species for open-set tests")
    parser.add_argument("--val-per-class", type=int, default=0, metavar="M", help="also write M held-out "
                        "images per species: OUT/train/<species>/ and OUT/val/<species>/ (default 0: one "
                        "folder per species)")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from napari_intr.synth import write_collection

    with tqdm(desc="drawing specimens", unit="image") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        summary = write_collection(args.out, args.per_class, args.size, args.seed, progress=progress,
                                   species_count=args.species, val_per_class=args.val_per_class,
                                   only=parse_names(args.only, "--only"))
    held_out = f" plus {args.val_per_class} held-out" if args.val_per_class else ""
    print(f"wrote {args.per_class}{held_out} images of each of {len(summary['species'])} species to {args.out} "
          "(synthetic, fictional species)")
    return 0
