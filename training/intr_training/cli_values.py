"""Checked argument types for the `intr` commands: a value outside its range is refused while the
command line is parsed ("argument --lr: must be above 0, got -1"), never met later as a
traceback, an overflow deep in torch or a run that silently diverges."""
from __future__ import annotations

import argparse
import math

from .train_settings import INT32_MAX, SEED_MAX, out_of_range


def whole_number(low: int | None = None, high: int | None = None, what: str = "", ceiling: int = INT32_MAX):
    """An argparse type: an integer in [low, high] (either bound may be open), and never above
    `ceiling` where no `high` is given: the most the type it goes into later holds (an int32)."""
    def parse(text: str) -> int:
        value = read_whole_number(text)
        problem = out_of_range(value, low, high, what=what, ceiling=ceiling)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value
    parse.__name__ = "whole number"  # argparse names the type in some messages
    return parse


def number(low: float | None = None, high: float | None = None, low_inclusive: bool = True, what: str = "",
           high_inclusive: bool = True):
    """An argparse type: a finite float in [low, high] (either end open without low_inclusive /
    high_inclusive)."""
    def parse(text: str) -> float:
        value = read_number(text)
        problem = out_of_range(value, low, high, low_inclusive, high_inclusive, what)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def read_whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def read_number(text: str) -> float:
    """A finite float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


SEED = whole_number(0, SEED_MAX)
COUNT = whole_number(1)        # epochs, batch sizes, images per class, top-k
WORKERS = whole_number(0, 64)  # data-loading processes
BATCH_SIZE = whole_number(1, 4096)
