"""Class-name lists: Python lists or text files, one name per line (CUB's styles accepted); and
the one rule for comparing names (README "Limits").

Names are compared after Unicode NFC normalisation everywhere (macOS writes folder names in
NFD): every name that comes in (a folder, a line of a file, a checkpoint's metadata, a
command-line argument) passes through `class_label`/`normal_name`. Text files are decoded by
their byte-order mark (UTF-8, UTF-16, UTF-32); without one they must be UTF-8. A name holding NUL
or other control characters, or bytes that are not text (an undecodable file name), is refused
with the name escaped. Lists given on a command line are split by `split_names` (quotes keep a
`,` or `:` inside a name; `@FILE` reads one per line), and repeats are removed with a note.

A list entry has a *label*, as the data set writes it ("001.Black_footed_Albatross", the CUB
folder name, kept in exports so that they join with the data set's own files), and a *name*
shown to people ("Black-footed Albatross"). Entries without an "NNN." index are both at once.
Names people type ("A, B"; look-alike pairs "A:B, C:D") are read by `parse_names` and
`parse_pairs`, for the `intr` commands and the docks alike.
"""
from __future__ import annotations

import codecs
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

from .model.names import RepeatedNames, normal_name, without_repeats  # noqa: F401 - the rule's home

# "001.Black_footed_Albatross" (CUB folder names) and "1 001.Black_footed_Albatross" (classes.txt)
_LINE_NUMBER = re.compile(r"^\d+\s+(?=\d+\.)")
_INDEX_PREFIX = re.compile(r"^\d+\.")


class ClassList(NamedTuple):
    names: list[str]   # shown to people
    labels: list[str]  # as the list writes them, index kept


def name_problem(name: str) -> str | None:
    """Why a name cannot be used (NUL or control characters, bytes that are not text), or None."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "holds bytes that are not text in any encoding (an undecodable file name)"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "holds NUL or other control characters"
    return None


def class_label(raw: str) -> str:
    """A line of a class list without surrounding blanks and without classes.txt's line number (NFC)."""
    return _LINE_NUMBER.sub("", normal_name(raw))


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_text_file(path: Path, what: str) -> str:
    """A text file decoded by its byte-order mark (UTF-8 without one); a file that is not text
    in that encoding, or that holds NUL bytes (UTF-16 saved without a mark), is refused."""
    data = path.read_bytes()
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in data:
        raise ValueError(f"{what} {path} holds NUL bytes (UTF-16 saved without a byte-order mark?): save it "
                         "as UTF-8 text")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text (nor UTF-16/32 with a byte-order mark): save "
                         "it as UTF-8 text") from None
    if "\x00" in text:
        raise ValueError(f"{what} {path} holds NUL bytes (UTF-16 saved without a byte-order mark?): save it "
                         "as UTF-8 text")
    return text


def split_names(text: str, separator: str = ",") -> list[str]:
    """"A, B" -> ["A", "B"]; a part in double quotes keeps a separator (or `:`) inside it:
    '"Foo, bar", Baz' -> ["Foo, bar", "Baz"]. Parts are `normal_name`d."""
    parts, current, quoted, was_quoted = [], [], False, False
    for char in text:
        if char == '"':
            quoted, was_quoted = not quoted, True
        elif char == separator and not quoted:
            parts.append(("".join(current), was_quoted))
            current, was_quoted = [], False
        else:
            current.append(char)
    if quoted:
        raise ValueError(f"{text!r} has an opening quote without its closing one")
    parts.append(("".join(current), was_quoted))
    return [normal_name(part) for part, quoted_part in parts if quoted_part or part.strip()]


def parse_names(text: str | None, what: str) -> list[str] | None:
    """A command-line or form list of names: "A, B" (quotes keep a comma inside a name) or @FILE
    (one name per line); repeats removed with a note. None stays None (every class)."""
    if text is None:
        return None
    if text.startswith("@") and len(text) > 1:
        names = read_class_list(text[1:]).labels
    else:
        names = split_names(text)
    if not names:
        raise ValueError(f"{what} is empty; give names separated by commas")
    for name in names:
        problem = name_problem(name)
        if problem:
            raise ValueError(f"{what}: the name {name!r} {problem}")
    return without_repeats(names, what)


def parse_pairs(text: str | None, what: str = "pairs") -> list[tuple[str, str]] | None:
    """"A:B, C:D" (quotes keep a `:` or `,` inside a name) or @FILE (one pair A:B per line) ->
    [(A, B), (C, D)]: heads of A's query telling A from B; repeats removed with a note. None:
    the most confused pairs."""
    if text is None or not text.strip():
        return None
    if text.startswith("@") and len(text) > 1:
        path = Path(text[1:]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{what}: no pairs file at {path}")
        items = [line for line in read_text_file(path, f"{what} file").splitlines() if line.strip()]
    else:
        items = _split_keeping_quotes(text, ",")
    pairs = []
    for item in items:
        sides = split_names(item, ":")
        if len(sides) != 2 or not all(sides):
            raise ValueError(f"{what}: {item.strip()!r} is not a pair; write A:B (class names; put a name "
                             'holding ":" or "," in double quotes), pairs separated by commas')
        if sides[0] == sides[1]:
            raise ValueError(f"{what}: {item.strip()!r} pairs a class with itself; give two different classes")
        pairs.append((sides[0], sides[1]))
    return without_repeats(pairs, what, lambda pair: ":".join(pair))


def _split_keeping_quotes(text: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes, keeping the quotes (for a second split)."""
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


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
        lines = read_text_file(path, "class-names file").splitlines()
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
    for name in names:
        problem = name_problem(name)
        if problem:
            raise ValueError(f"{origin}: the class name {name!r} {problem}; give names of plain text")
    counts = Counter(normal_name(name) for name in names)
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
