"""Trait atlas: what each head of each class's query looks for across a whole collection, and
which heads tell look-alike species apart (Qt-free; `intr atlas` and the INTR Traits dock). Its
names are imported on first use, so that the dock reads an atlas folder (`folder`) without torch."""
from .._lazy import lazy_getattr

_LAZY = {
    "Atlas": "aggregate", "AtlasBuilder": "aggregate", "ClassSummary": "aggregate", "HeadSummary": "aggregate",
    "PairHead": "aggregate", "PairSummary": "aggregate",
    "DEFAULT_PER_HEAD": "run", "AtlasOptions": "run", "AtlasRun": "run", "build_atlas": "run",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
