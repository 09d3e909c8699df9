"""Checked argument types for the `intr` commands: a value outside its range is refused while the
command line is parsed ("argument --lr: must be above 0, got -1"), never met later as a
traceback, an overflow deep in torch or a run that silently diverges."""
from __future__ import annotations

import argparse
import math

# torch, numpy and Python's random all take seeds in [0, 2**32) without wrapping or overflowing.
SEED_MAX = 2**32 - 1


def whole_number(low: int | None = None, high: int | None = None, what: str = ""):
    """An argparse type: an integer in [low, high] (either bound may be open)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)}{what}, got {text}")
        return value
    parse.__name__ = "whole number"  # argparse names the type in some messages
    return parse


def number(low: float | None = None, high: float | None = None, low_inclusive: bool = True, what: str = ""):
    """An argparse type: a finite float in [low, high] (or (low, high] without low_inclusive)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        below = low is not None and (value < low if low_inclusive else value <= low)
        if below or (high is not None and value > high):
            bound = _range(low, high) if low_inclusive else f"above {low:g}" + (
                f" and at most {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bound}{what}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


def parse_names(text: str | None, what: str) -> list[str] | None:
    """"A, B" -> ["A", "B"]; None stays None (every class)."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"{what} is empty; give names separated by commas")
    return names


def parse_pairs(text: str | None, what: str = "pairs") -> list[tuple[str, str]] | None:
    """"A:B, C:D" -> [(A, B), (C, D)]: heads of A's query telling A from B. None: the most confused."""
    if text is None or not text.strip():
        return None
    pairs = []
    for item in parse_names(text, what):
        sides = [side.strip() for side in item.split(":")]
        if len(sides) != 2 or not all(sides):
            raise ValueError(f"{what}: {item!r} is not a pair; write A:B (class names), pairs separated by commas")
        if sides[0] == sides[1]:
            raise ValueError(f"{what}: {item!r} pairs a class with itself; give two different classes")
        pairs.append((sides[0], sides[1]))
    return pairs


SEED = whole_number(0, SEED_MAX)
COUNT = whole_number(1, 2**31 - 1)  # epochs, batch sizes, images per class, top-k (fit an int32 later)
WORKERS = whole_number(0, 64)  # data-loading processes
BATCH_SIZE = whole_number(1, 4096)
