"""Checked argument types for the `intr` commands: a value outside its range is refused while the
command line is parsed ("argument --lr: must be above 0, got -1"), never met later as a
traceback, an overflow deep in torch or a run that silently diverges."""
from __future__ import annotations

import argparse
import math

# torch, numpy and Python's random all take seeds in [0, 2**32) without wrapping or overflowing.
SEED_MAX = 2**32 - 1


def whole_number(low: int | None = None, high: int | None = None, what: str = "", ceiling: int = 2**31 - 1):
    """An argparse type: an integer in [low, high] (either bound may be open), and never above
    `ceiling` where no `high` is given: the most the type it goes into later holds (an int32)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if high is None and value > ceiling:
            raise argparse.ArgumentTypeError(f"must be at most {ceiling:,}{what}, got {text}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)}{what}, got {text}")
        return value
    parse.__name__ = "whole number"  # argparse names the type in some messages
    return parse


def number(low: float | None = None, high: float | None = None, low_inclusive: bool = True, what: str = "",
           high_inclusive: bool = True):
    """An argparse type: a finite float in [low, high] (either end open without low_inclusive /
    high_inclusive)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        below = low is not None and (value < low if low_inclusive else value <= low)
        above = high is not None and (value > high if high_inclusive else value >= high)
        if below or above:
            lower = (f"at least {low:g}" if low_inclusive else f"above {low:g}") if low is not None else ""
            upper = (f"at most {high:g}" if high_inclusive else f"below {high:g}") if high is not None else ""
            bound = _range(low, high) if low_inclusive and high_inclusive else " and ".join(filter(None, (lower, upper)))
            raise argparse.ArgumentTypeError(f"must be {bound}{what}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


SEED = whole_number(0, SEED_MAX)
COUNT = whole_number(1)        # epochs, batch sizes, images per class, top-k
WORKERS = whole_number(0, 64)  # data-loading processes
BATCH_SIZE = whole_number(1, 4096)
