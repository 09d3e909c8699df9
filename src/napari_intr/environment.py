"""Configuration from environment variables, read in one place, when it is used.

No module reads a variable when it is imported (an import never fails on a bad value); each
use asks `value(NAME)`, which parses and checks the value and, when it does not fit, raises a
ValueError naming the variable, the value and the accepted form. The `intr` command checks
every variable once before it starts work (`check_all`), so a typo stops it at once.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def byte_count(text: str, lowest: int = 1 << 20, highest: int = 1 << 62) -> int:
    """'8589934592', '8G', '8 GiB', '512M', '1.5GB' -> bytes (G = 10^9, GiB = 2^30)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:e[0-9]+)?)\s*([kmgt]i?)?b?\s*", text.lower())
    if not match:
        raise ValueError("not a size")
    number = float(match.group(1)) * _UNITS[match.group(2) or ""]
    if not math.isfinite(number) or not lowest <= number <= highest:
        raise ValueError(f"out of range ({lowest:,} to {highest:,} bytes)")
    return int(number)


def whole_number(lowest: int, highest: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*[0-9]+\s*", text):
            raise ValueError("not a whole number")
        number = int(text)
        if not lowest <= number <= highest:
            raise ValueError(f"out of range ({lowest} to {highest})")
        return number
    return parse


def folder(text: str) -> Path:
    if "\x00" in text or not text.strip():
        raise ValueError("not a folder path")
    return Path(text).expanduser()


@dataclass(frozen=True)
class Variable:
    parse: Callable[[str], object]
    form: str          # the accepted form, in the words of the message
    default: object = None


VARIABLES: dict[str, Variable] = {
    "INTR_MAX_DECODE_BYTES": Variable(byte_count, "a size in bytes from 1M up, e.g. 8G, 512M, 8GiB or "
                                      "8589934592", 8 * 2**30),
    "NAPARI_INTR_CACHE": Variable(folder, "a folder path for downloaded models"),
    # torchrun's variables (set by torchrun, read when a job starts)
    "WORLD_SIZE": Variable(whole_number(1, 1 << 20), "a whole number of processes, 1 or more", 1),
    "RANK": Variable(whole_number(0, 1 << 20), "a whole number from 0 (set by torchrun)"),
    "LOCAL_RANK": Variable(whole_number(0, 1 << 20), "a whole number from 0 (set by torchrun)", 0),
}


def value(name: str):
    """The variable's parsed value, its default when unset or empty; ValueError naming it otherwise."""
    variable = VARIABLES[name]
    text = os.environ.get(name)
    if text is None or not text.strip():
        return variable.default
    try:
        return variable.parse(text)
    except ValueError as error:
        raise ValueError(f"the environment variable {name}={text!r} is {error}; give {variable.form}, "
                         f"or unset it") from None


def check_all() -> None:
    """Raise for the first variable that is set to something it does not accept."""
    for name in VARIABLES:
        value(name)
