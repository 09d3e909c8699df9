"""`intr demo`: napari on a bundled specimen, the INTR Explorer docked, the bundled model's
explanation shown (napari_intr.widgets.explorer.demo). `--screenshot PATH` / `--no-show` run it
headless and exit."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", metavar="PATH",
                        help="image file to explain instead of the bundled specimen")
    parser.add_argument("--screenshot", metavar="PATH",
                        help="save a PNG of the window once the attention layers are shown, then exit")
    parser.add_argument("--no-show", action="store_true",
                        help="do not show the window: explain, print the top classes and exit")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the model and the explanation (default 120)")


def run(args: argparse.Namespace) -> int:
    from napari_intr.widgets.explorer.demo import run_demo
    return run_demo(args.image, args.screenshot, show=not args.no_show, timeout=args.timeout)
