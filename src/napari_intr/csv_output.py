"""Every CSV file the project writes: UTF-8 (no byte-order mark), one plain header row, RFC 4180
quoting, and cells that a spreadsheet cannot run as formulas.

File and class names come from users' folders and from checkpoints, so a name such as
`=HYPERLINK(...)` or `@SUM(...)` would run when predictions.csv is opened in Excel or
LibreOffice. As OWASP recommends (CSV injection), a text cell that starts with `=`, `+`, `-`,
`@`, a tab or a carriage return gets a single quote in front, and cells holding the delimiter,
a quote or a line break are quoted with inner quotes doubled (csv.QUOTE_MINIMAL is RFC 4180).
Numbers (int, float, numpy scalars) are written as numbers, negative ones included: only text
can carry a formula. `unescape_cell` undoes the quote for programs that read our CSVs back.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .atomic import atomic_write
from .filenames import as_text

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"

Row = Sequence[object] | Mapping[str, object]


def escape_cell(value: object) -> str | int | float:
    """One cell as written: None and NaN -> "", numbers as they are, text made formula-safe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) or math.isinf(value) else ""  # NaN: no value
    text = str(value)
    text = as_text(text)  # an undecodable file name: its bytes, escaped
    return ESCAPE + text if text.startswith(FORMULA_STARTS) else text


def unescape_cell(text: str) -> str:
    """A text cell read back from one of our CSVs -> the original text."""
    if text.startswith(ESCAPE) and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


class CsvTable:
    """Rows written to an open text stream under a fixed header; each row is flushed at once,
    so a crash or cancel leaves every finished row on disk."""

    def __init__(self, stream, header: Sequence[str], flush_each_row: bool = True):
        self.header = list(header)
        self.stream, self.flush_each_row = stream, flush_each_row
        self.writer = csv.writer(stream, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        self.writer.writerow([escape_cell(name) for name in self.header])

    def write(self, row: Row) -> None:
        """A sequence in header order, or a mapping from column name (missing columns are empty)."""
        if isinstance(row, Mapping):
            unknown = set(row) - set(self.header)
            if unknown:
                raise ValueError(f"CSV row has columns {sorted(unknown)} that are not in the header")
            row = [row.get(name) for name in self.header]
        elif len(row) != len(self.header):
            raise ValueError(f"CSV row has {len(row)} cells for {len(self.header)} columns")
        self.writer.writerow([escape_cell(value) for value in row])
        if self.flush_each_row:
            self.stream.flush()

    def write_all(self, rows: Iterable[Row]) -> None:
        for row in rows:
            self.write(row)


@contextmanager
def open_csv(path: str | os.PathLike, header: Sequence[str]) -> Iterator[CsvTable]:
    """A CSV written row by row (long batch runs): rows appear as they are written."""
    with open(path, "w", newline="", encoding="utf-8") as stream:
        yield CsvTable(stream, header)


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Row]) -> Path:
    """A whole CSV file, written atomically: readers see the old file or the complete new one."""

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as stream:
            CsvTable(stream, header, flush_each_row=False).write_all(rows)

    return atomic_write(path, write)
