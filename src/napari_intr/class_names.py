"""Class-name lists: Python lists or text files, one name per line (CUB's styles accepted).

A list entry has a *label*, as the data set writes it ("001.Black_footed_Albatross", the CUB
folder name, kept in exports so that they join with the data set's own files), and a *name*
shown to people ("Black-footed Albatross"). Entries without an "NNN." index are both at once.
Names people type ("A, B"; look-alike pairs "A:B, C:D") are read by `parse_names` and
`parse_pairs`, for the `intr` commands and the docks alike.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

# "001.Black_footed_Albatross" (CUB folder names) and "1 001.Black_footed_Albatross" (classes.txt)
_LINE_NUMBER = re.compile(r"^\d+\s+(?=\d+\.)")
_INDEX_PREFIX = re.compile(r"^\d+\.")


class ClassList(NamedTuple):
    names: list[str]   # shown to people
    labels: list[str]  # as the list writes them, index kept


def class_label(raw: str) -> str:
    """A line of a class list without surrounding blanks and without classes.txt's line number."""
    return _LINE_NUMBER.sub("", raw.strip())


def clean_class_name(raw: str) -> str:
    """"001.Black_footed_Albatross" -> "Black-footed Albatross"; names without an index stay as they are."""
    label = class_label(raw)
    if not _INDEX_PREFIX.match(label):
        return label
    return _readable(_INDEX_PREFIX.sub("", label))


def _readable(words_joined: str) -> str:
    """Underscores become spaces, except inside English compound adjectives: a run of lower-case
    words between capitalised ones is hyphenated ("Black_and_white_Warbler" -> "Black-and-white
    Warbler"), while trailing lower-case words stay apart ("Heliconius_erato" keeps its space)."""
    words = [word for word in words_joined.split("_") if word]
    out: list[str] = []
    index = 0
    while index < len(words):
        end = index + 1
        while end < len(words) and words[end][:1].islower():
            end += 1
        joined_with_next = index > 0 or words[index][:1].isupper()
        if end > index + 1 and end < len(words) and joined_with_next:
            out.append("-".join(words[index:end]))  # capitalised word + its lower-case run
        else:
            out.extend(words[index:end])
        index = end
    return " ".join(out)


def read_class_list(source: Sequence[str] | str | os.PathLike) -> ClassList:
    """Names and labels of a list or a text file (UTF-8, one class per line, blank lines ignored)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise IsADirectoryError(f"class-names file {path} is a folder; give a text file with one "
                                    "class name per line")
        if not path.is_file():
            raise FileNotFoundError(f"class-names file {path} does not exist")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"class-names file {path} is not UTF-8 text: give a text file "
                             "with one class name per line") from error
        labels = [class_label(line) for line in lines if line.strip()]
    else:
        labels = [class_label(str(name)) for name in source]
    names = [clean_class_name(label) for label in labels]
    check_class_names(names, describe_source(source))
    return ClassList(names, labels)


def read_class_names(source: Sequence[str] | str | os.PathLike) -> list[str]:
    return read_class_list(source).names


def bundled_class_list(filename: str) -> Path:
    """A class list shipped with the package (see class_lists/README.md for sources and licences)."""
    return Path(str(files("napari_intr").joinpath("class_lists", filename)))


def check_class_names(names, origin: str = "the class names") -> None:
    """A non-empty list of distinct, non-empty strings, or a ValueError naming `origin`."""
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{origin} are not a list of text names")
    if not names:
        raise ValueError(f"{origin}: the list is empty: give one class name per line")
    empty = [str(i + 1) for i, name in enumerate(names) if not name.strip()]
    if empty:
        raise ValueError(f"{origin}: names number {', '.join(empty[:5])} are empty; every class needs a name")
    counts = Counter(names)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise ValueError(f"{origin}: class names repeat: {', '.join(repeated[:5])}; every class needs its own name")


def describe_source(source) -> str:
    """How error messages name a class-names source: the file, or "the class names" for a list."""
    return f"class-names file {source}" if isinstance(source, (str, os.PathLike)) else "the class names"


def check_class_count(names: list[str], num_classes: int, origin: str = "the class names") -> None:
    if len(names) != num_classes:
        raise ValueError(f"{origin}: {len(names)} class names were given but the model has "
                         f"{num_classes} classes; give a class-names file with exactly one line per class")


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
