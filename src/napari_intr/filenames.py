"""Output file names that always fit the file system (README "Limits").

File names come from users' image names, region ids and class names, any of which may be long
(most file systems allow 255 bytes per name, and `atomic_write` adds a temporary prefix and
suffix). Every name the project composes from them goes through `fitting_name`: a name over the
limit keeps its start and gets a short hash of the whole stem, so two long names that share
their start stay apart and the same input always gives the same name.
"""
from __future__ import annotations

import hashlib
import os
import re

NAME_MAX_BYTES = 255
# what a composed name may take: room left for atomic_write's ".<name>.<12 hex>.tmp" and a "_2"
SAFE_NAME_BYTES = 200


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # an undecodable file name keeps its bytes


def as_text(name: str) -> str:
    """A name as text that any writer accepts: an undecodable file name (lone surrogates, as
    Python decodes its bytes) becomes its bytes escaped ("caf\\xe9.png"); other names unchanged."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


def short_hash(text: str) -> str:
    return hashlib.sha1(_bytes(text)).hexdigest()[:8]


def fitting_name(stem: str, suffix: str = "", limit: int = SAFE_NAME_BYTES) -> str:
    """stem + suffix, or, when that is over `limit` bytes, the stem's start + "~" + its hash + suffix.
    Bytes of an undecodable input name become "%FF" (an output name is always text, so the CSV
    that names it names the file on disk)."""
    stem = re.sub("[\udc80-\udcff]", lambda match: f"%{ord(match.group()) - 0xDC00:02X}", stem)
    if len(_bytes(stem + suffix)) <= limit:
        return stem + suffix
    room = max(limit - len(_bytes(suffix)) - 9, 1)
    start = _bytes(stem)[:room].decode("utf-8", "ignore")  # never half a character
    return f"{start}~{short_hash(stem)}{suffix}"


UNSAFE_CHARACTERS = r'[\x00-\x1f\x7f\\/:*?"<>|\udc80-\udcff]+'  # refused by some file system, or undecodable


def safe_stem(name: str, unsafe: str = UNSAFE_CHARACTERS, fallback: str = "image") -> str:
    """`name` with each run of `unsafe` characters as "_" (and "_" or "." at its ends dropped).
    A name that had to change more than its spaces becoming "_" gets a short hash of itself, so two
    names never share their files ("a,b" and "a:b", two undecodable names); fitting_name still
    shortens a long one."""
    stem = re.sub(unsafe, "_", name).strip("_.") or fallback
    return stem if stem in (name, re.sub(r" +", "_", name)) else f"{stem}~{short_hash(name)}"


def apart_from_case_twins(folder, stem: str, name: str) -> str:
    """`stem`, or `stem~<hash of name>` when `folder` holds files of a stem that differs from it
    only in letter case ("Moth_attention.tif" beside the "moth" about to be saved): on a
    case-insensitive file system (macOS, Windows) the two would be one file, and saving would
    overwrite the other image's files. The same rule on every system, so folders move safely."""
    try:
        entries = os.listdir(folder)
    except OSError:  # not there yet: nothing to collide with
        return stem
    folded = stem.casefold()
    for entry in entries:
        head, rest = entry[:len(stem)], entry[len(stem):]
        if head != stem and head.casefold() == folded and rest[:1] in ("_", ".", " "):
            return f"{stem}~{short_hash(name)}"
    return stem


class Slugs:
    """Short, file-safe, unique names for a set of texts (class names in the atlas's files and
    anchors): lower case, runs of other characters as "-", fitted; when two texts give the same
    slug (e.g. "Foo" and "foo", or names in a script that leaves nothing), each later one gets
    its hash."""

    def __init__(self, limit: int = 80):
        self.limit, self.given, self.taken = limit, {}, set()

    def __call__(self, text: str) -> str:
        if text not in self.given:
            base = re.sub(r"[^\w]+", "-", text.lower()).strip("-_") or "class"
            slug = fitting_name(base, "", self.limit)
            if slug in self.taken:
                slug = fitting_name(f"{base[:self.limit - 9]}-{short_hash(text)}", "", self.limit)
            self.given[text] = slug
            self.taken.add(slug)
        return self.given[text]
