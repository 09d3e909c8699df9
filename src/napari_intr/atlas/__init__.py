"""Trait atlas: what each head of each class's query looks for across a whole collection, and
which heads tell look-alike species apart (Qt-free; `intr atlas` and the INTR Traits dock)."""
from .aggregate import (
           Atlas,
           AtlasBuilder,
           ClassSummary,
           HeadSummary,
           PairHead,
           PairSummary,
)
from .run import DEFAULT_PER_HEAD, AtlasOptions, AtlasRun, build_atlas

__all__ = ["DEFAULT_PER_HEAD", "Atlas", "AtlasBuilder", "AtlasOptions", "AtlasRun", "ClassSummary",
           "HeadSummary", "PairHead", "PairSummary", "build_atlas"]
