"""Command-line options of `intr eval --explanations` (light: `intr --help` imports this)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faithfulness of the explanations (--explanations)")
    group.add_argument("--explanations", action="store_true", help="measure how faithful INTR's attention, "
                       "Grad-CAM and RISE are to the model: insertion/deletion, pointing game, randomisation "
                       "sanity check, manipulation flip rate; needs --out")
    group.add_argument("--layer", type=int, default=-1, help="decoder layer of the INTR maps (1-based; -1: last)")
    group.add_argument("--rise-masks", type=int, default=500, help="random masks per RISE map")
    group.add_argument("--steps", type=int, default=50, help="insertion/deletion steps per curve")
    group.add_argument("--explain-class", choices=("predicted", "true"), default="predicted",
                       help="the class each map explains")
    group.add_argument("--limit", type=int, help="use at most this many images (spread over the classes)")


def check_arguments(args: argparse.Namespace) -> None:
    if not args.out:
        raise ValueError("--explanations writes tables and plots: give --out DIR")
    for name in ("rise_masks", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if args.layer == 0:
        raise ValueError("--layer counts from 1 (L1 is the first decoder layer); -1 is the last")


def settings(args: argparse.Namespace):
    from napari_intr.faithfulness.run import Settings
    return Settings(out=args.out, model_name=str(args.model), layer=args.layer, rise_masks=args.rise_masks,
                    steps=args.steps, explain_class=args.explain_class, limit=args.limit)
