"""The `intr` command. Each subcommand lives in its own module with `add_arguments(parser)`
and `run(args) -> int`; heavy imports happen inside `run`, so `intr --help` stays quick."""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import warnings
from importlib import import_module
from pathlib import Path

import napari_intr
from napari_intr import environment

COMMANDS = {
    "train": ("intr_training.train_cli", "train or fine-tune an INTR model on an image folder"),
    "eval": ("intr_training.evaluate_cli", "accuracy, per-class accuracy and confusion matrix of a model"),
    "calibrate": ("intr_training.calibrate_cli", "calibrate a model: an open-set threshold ('none of these "
                  "species') and conformal prediction sets, stored with it"),
    "synth": ("intr_training.synth_cli", "draw synthetic mimic-ring specimens (offline test data)"),
    "explain": ("intr_training.explain_cli", "explain images or a folder: CSV of predictions, TIFF attention maps"),
    "atlas": ("intr_training.atlas_cli", "trait atlas: what each head looks for across a collection, "
              "which heads tell look-alikes apart"),
    "demo": ("intr_training.demo_cli", "open napari on a bundled specimen with the bundled model"),
}


class Parser(argparse.ArgumentParser):
    """argparse, with value errors worded like the commands' own: "--lr must be above 0, got -1"."""

    def error(self, message: str):
        super().error(re.sub(r"^argument ([^:/\s]+)(?:/\S+)?: (must|invalid)", r"\1 \2", message))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="intr", description="INTR: interpretable fine-grained classification")
    parser.add_argument("--version", action="version", version=f"%(prog)s {napari_intr.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        try:
            command = import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # a missing dependency is a real error, not a missing command
                raise
            continue  # a subcommand whose module is not written yet (parallel development)
        command.add_arguments(subparsers.add_parser(name, help=summary, description=summary))
    return parser


_python_show_warning = warnings.showwarning
_PROJECT_ROOTS = tuple(str(Path(package).parent) for package in (napari_intr.__file__, __file__))


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not text prints as its escaped bytes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help, or a refused value (already printed): its exit code
        return exit.code
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, args.command, set())
            # our notes (repeats removed, files left out) are said once per command, whatever -W or earlier calls did
            warnings.filterwarnings("always", category=UserWarning, module=r"(napari_intr|intr_training)\.")
            environment.check_all()  # a bad variable stops the command before any work
            return import_module(COMMANDS[args.command][0]).run(args) or 0
    except KeyboardInterrupt:
        print(f"intr {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, ImportError, MemoryError) as error:
        # Users get the message, not a traceback; INTR_DEBUG=1 shows where it came from.
        if os.environ.get("INTR_DEBUG"):
            raise
        from napari_intr.image_files import reason
        print(f"intr {args.command}: error: {reason(error)}", file=sys.stderr)
        return 2


def _show_warning(command, shown, message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings (e.g. a zoo model without class names) as one line for people, each once (`shown`:
    the lines said so far); others as Python shows them."""
    if issubclass(category, UserWarning) and filename.startswith(_PROJECT_ROOTS):
        if str(message) in shown:
            return
        shown.add(str(message))
        from napari_intr.loading import MissingClassNames
        how = "; pass it with --class-names FILE" if issubclass(category, MissingClassNames) else ""
        print(f"intr {command}: warning: {message}{how}", file=file or sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)
