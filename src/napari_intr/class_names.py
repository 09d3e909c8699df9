"""Class-name lists: Python lists or text files, one name per line (CUB's styles accepted)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

# "001.Black_footed_Albatross" (CUB folder names) and "1 001.Black_footed_Albatross" (classes.txt)
_CUB_PREFIX = re.compile(r"^(?:\d+\s+)?\d+\.")


def clean_class_name(raw: str) -> str:
    name = raw.strip()
    if _CUB_PREFIX.match(name):
        name = _CUB_PREFIX.sub("", name).replace("_", " ")
    return name


def read_class_names(source: Sequence[str] | str | os.PathLike) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"class-names file {path} does not exist")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"class-names file {path} is not UTF-8 text: give a text file "
                             "with one class name per line") from error
        names = [clean_class_name(line) for line in lines if line.strip()]
    else:
        names = [clean_class_name(str(name)) for name in source]
    if not names:
        raise ValueError("the class-names list is empty: give one class name per line")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"class names repeat: {', '.join(repeated[:5])}; every class needs its own name")
    return names


def describe_source(source) -> str:
    """How error messages name a class-names source: the file, or "the class names" for a list."""
    return f"class-names file {source}" if isinstance(source, (str, os.PathLike)) else "the class names"


def check_class_count(names: list[str], num_classes: int, origin: str = "the class names") -> None:
    if len(names) != num_classes:
        raise ValueError(f"{origin}: {len(names)} class names were given but the model has "
                         f"{num_classes} classes; give a class-names file with exactly one line per class")
