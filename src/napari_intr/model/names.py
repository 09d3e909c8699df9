"""How class names are compared, wherever they come from (README "Limits", rule 2 and 9): after
Unicode NFC normalisation (macOS writes folder names in NFD), and a list that names a class
twice keeps it once, with a note. napari_intr.class_names reads and parses lists by these rules;
the model's class lookup (intr.py) uses them too."""
from __future__ import annotations

import unicodedata
import warnings
from collections import Counter


class RepeatedNames(UserWarning):
    """A user's list named the same thing twice: the repeat was removed."""


def normal_name(raw: str) -> str:
    """A name as compared everywhere: NFC, surrounding blanks removed."""
    return unicodedata.normalize("NFC", raw).strip()


def without_repeats(items: list, what: str, shown=str) -> list:
    """The items in order with repeats removed; a note (RepeatedNames warning) names the repeats."""
    kept = list(dict.fromkeys(items))
    if len(kept) < len(items):
        repeated = sorted({shown(item) for item, count in Counter(items).items() if count > 1})
        warnings.warn(f"{what} names {', '.join(repeated)} more than once; the repeats were removed",
                      RepeatedNames, stacklevel=2)
    return kept
