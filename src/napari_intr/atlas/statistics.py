"""Collection-level statistics from per-image records, streamed: memory is bounded by the number
of classes, heads and pairs (and N per heap), never by the number of images.

Records are consumed in one fixed order (sorted image keys), so a run sharded over processes
sums its floating-point numbers in the same order as one process and gives the same result.
"""
from __future__ import annotations

import functools
import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .summarise import decode_vector

MEDIAN_BINS = 4096  # peak weights lie in [0, 1]: a fixed histogram gives the median to 1/8192


@dataclass(frozen=True)
class Exemplar:
    """One image in a top-N gallery: where the head looked on it."""
    key: str
    peak: float
    box: tuple[float, float, float, float]
    covers_part: bool | None = None  # the patch holds an annotated part (None: no annotations)


class TopN:
    """The N highest-peak images; ties broken by key, so the result never depends on order."""

    def __init__(self, size: int):
        self.size, self._heap = size, []

    def push(self, key: str, peak: float, box, covers_part: bool | None = None) -> tuple[bool, tuple | None]:
        """Offer one image; returns whether it entered, and the (key, box) it pushed out, if any."""
        # heapq keeps the smallest first: the entry to drop is the lowest peak, then the last key.
        item = (peak, _Reversed(key), tuple(box), covers_part)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, item)
            return True, None
        if item > self._heap[0]:
            dropped = heapq.heapreplace(self._heap, item)
            return True, (dropped[1].value, dropped[2])
        return False, None

    def best(self) -> list[Exemplar]:
        return [Exemplar(key.value, peak, box, covers) for peak, key, box, covers in sorted(self._heap, reverse=True)]

    def __len__(self) -> int:
        return len(self._heap)


@functools.total_ordering
class _Reversed:
    """Orders strings backwards (a later key loses a tie) inside heap tuples."""
    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return self.value > other.value

    def __eq__(self, other) -> bool:
        return self.value == other.value


class Moments:
    """Count, mean and variance by sums (exact order is fixed by the caller)."""

    def __init__(self):
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.squares += value * value

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def variance(self) -> float | None:
        if self.count < 2:
            return None
        return max(self.squares - self.total * self.total / self.count, 0.0) / (self.count - 1)


def effect_size(a: Moments, b: Moments) -> float | None:
    """Cohen's d of a against b (pooled standard deviation); None with under two values a side."""
    if a.count < 2 or b.count < 2:
        return None
    pooled = ((a.count - 1) * a.variance + (b.count - 1) * b.variance) / (a.count + b.count - 2)
    difference = a.mean - b.mean
    if pooled <= 0:
        return 0.0 if difference == 0 else None  # no spread at all: no finite effect size
    return difference / math.sqrt(pooled)


class HeadStats:
    """One head of one class's query on that class's images."""

    def __init__(self, top: int):
        self.peaks = Moments()
        self.histogram = np.zeros(MEDIAN_BINS, dtype=np.int64)
        self.spread = Moments()
        self.on_specimen = Counter()  # True / False, for images with a specimen annotation
        self.parts = Counter()        # part name (or None) per image with part annotations
        self.feature_sum = None       # sum of unit feature vectors under the peak
        self.feature_count = 0
        self.top = TopN(top)
        self.misidentified = Moments()  # this query's peak on images it wrongly claimed
        self.misidentified_top = TopN(top)

    def add(self, key: str, head: dict) -> None:
        self.peaks.add(head["peak"])
        self.histogram[min(int(head["peak"] * MEDIAN_BINS), MEDIAN_BINS - 1)] += 1
        self.spread.add(head["spread"])
        if head.get("on_specimen") is not None:
            self.on_specimen[head["on_specimen"]] += 1
        if "feature" in head:
            vector = decode_vector(head["feature"])
            norm = np.linalg.norm(vector)
            if norm > 0:
                self.feature_sum = vector / norm + (0 if self.feature_sum is None else self.feature_sum)
                self.feature_count += 1
        elif "part" in head:
            self.parts[head["part"]] += 1
        self.top.push(key, head["peak"], head["box"], head.get("covers"))

    def median_peak(self) -> float | None:
        if not self.peaks.count:
            return None
        cumulative = np.cumsum(self.histogram)
        index = int(np.searchsorted(cumulative, (self.peaks.count + 1) / 2))
        return (index + 0.5) / MEDIAN_BINS

    def on_specimen_fraction(self) -> float | None:
        known = self.on_specimen[True] + self.on_specimen[False]
        return self.on_specimen[True] / known if known else None

    def consistency(self) -> tuple[float | None, str | None, str]:
        """(score, most frequent part, method). With parts: the share of annotated images whose
        peak lands on the head's most frequent part (no part at all never counts as one).
        Without: the mean pairwise cosine similarity of the features under the peaks."""
        annotated = sum(self.parts.values())
        if annotated:
            named = {part: count for part, count in self.parts.items() if part is not None}
            if not named:
                return 0.0, None, "parts"
            part = max(sorted(named), key=lambda name: named[name])
            return named[part] / annotated, part, "parts"
        if self.feature_count >= 2:
            n = self.feature_count
            squared = float(self.feature_sum @ self.feature_sum)
            return (squared - n) / (n * (n - 1)), None, "feature cosine"
        return None, None, "none"


@dataclass
class PairHeadStats:
    """Head h of A's query in (A, B) decodes: its peak on A's and on B's images, and the masking test."""
    top: int
    on_a: Moments = field(default_factory=Moments)
    on_b: Moments = field(default_factory=Moments)
    drop: Moments = field(default_factory=Moments)
    parts: Counter = field(default_factory=Counter)  # on an annotated part (True) or not, A's images
    top_a: TopN = None
    top_b: TopN = None

    def __post_init__(self):
        self.top_a, self.top_b = TopN(self.top), TopN(self.top)

    def on_part_a(self) -> float | None:
        annotated = self.parts[True] + self.parts[False]
        return self.parts[True] / annotated if annotated else None


def covering_share(exemplars: list[Exemplar]) -> float | None:
    """Share of a gallery's patches that hold an annotated part (None without annotations)."""
    known = [e.covers_part for e in exemplars if e.covers_part is not None]
    return sum(known) / len(known) if known else None
