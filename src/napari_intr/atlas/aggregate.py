"""From per-image records to the atlas: per class and head, per look-alike pair and head."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from napari_intr.head_evidence import flags_of, rank_heads

from .statistics import Exemplar, HeadStats, PairHeadStats, covering_share, effect_size
from .summarise import unpack

DEFAULT_PAIR_COUNT = 5


@dataclass
class HeadSummary:
    head: int  # 0-based inside; shown 1-based
    images: int
    mean_peak: float | None
    median_peak: float | None
    mean_spread: float | None
    on_specimen: float | None
    consistency: float | None
    part: str | None
    consistency_method: str
    misidentified_images: int
    misidentified_mean_peak: float | None
    top: list[Exemplar]

    @property
    def top_covering_part(self) -> float | None:
        return covering_share(self.top)


@dataclass
class ClassSummary:
    name: str
    images: int
    correct: int
    heads: list[HeadSummary]

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.images if self.images else None


@dataclass
class PairHead:
    head: int
    effect_size: float | None      # Cohen's d of A's head peak: A's images vs B's images
    masking_drop: float | None     # mean drop of logit(A) - logit(B) on A's images, region masked
    mean_peak_a: float | None
    mean_peak_b: float | None
    masked_images: int
    on_part_a: float | None        # share of A's annotated images whose peak lands on an annotated part
    top_a: list[Exemplar]
    top_b: list[Exemplar]

    @property
    def top_a_covering_part(self) -> float | None:
        """Share of A's top patches that hold an annotated part (the attribute, for synth data)."""
        return covering_share(self.top_a)


@dataclass
class PairSummary:
    a: str
    b: str
    images_a: int
    images_b: int
    confused: int          # images of A called B plus images of B called A
    heads: list[PairHead]  # ranked: the heads that tell A from B first


@dataclass
class Atlas:
    classes: list[ClassSummary]
    pairs: list[PairSummary]
    images: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)
    # Images a calibrated model found none of its species in: (image, folder class, open-set
    # score). Listed, never summarised as a species (not in the class, pair or confusion figures).
    rejected: list[tuple[str, str, float]] = field(default_factory=list)


def rank_pair_heads(heads: list[PairHead]) -> list[PairHead]:
    """The Explorer's rule (napari_intr.head_evidence.rank_heads) on the pair's mean masking drops:
    heads whose masking costs A the most against B first; heads that cost nothing (or were never
    measured) flagged, last."""
    drops = [head.masking_drop if head.masking_drop is not None else float("nan") for head in heads]
    return [heads[i] for i in rank_heads(drops, flags_of(drops))]


class AtlasBuilder:
    """Consumes records (in key order) and builds the Atlas."""

    def __init__(self, class_names: list[str], heads: int, per_head: int,
                 pairs: list[tuple[str, str]] | None = None, pair_count: int = DEFAULT_PAIR_COUNT):
        self.class_names, self.heads, self.per_head = list(class_names), heads, per_head
        self.requested_pairs, self.pair_count = pairs, pair_count
        self.counts = Counter()
        self.correct = Counter()
        self.head_stats = {name: [HeadStats(per_head) for _ in range(heads)] for name in self.class_names}
        self.pair_stats: dict[tuple[str, str], list[PairHeadStats]] = {}
        self.confusion = Counter()
        self.soft_confusion = Counter()
        self.skipped: list[tuple[str, str]] = []
        self.rejected: list[tuple[str, str, float]] = []

    def _pair(self, a: str, b: str) -> list[PairHeadStats]:
        if (a, b) not in self.pair_stats:
            self.pair_stats[(a, b)] = [PairHeadStats(self.per_head) for _ in range(self.heads)]
        return self.pair_stats[(a, b)]

    def add(self, key: str, record: dict) -> None:
        if "error" in record:
            self.skipped.append((key, record["error"]))
            return
        name, predicted = record["class"], record["predicted"]
        if name not in self.head_stats:
            return
        if record.get("known") is False:
            self.rejected.append((key, name, record["open_set_score"]))
            return
        self.counts[name] += 1
        self.correct[name] += predicted == name
        if predicted != name:
            self.confusion[(name, predicted)] += 1
        for other, probability in record["others"]:
            self.soft_confusion[(name, other)] += probability
        for stats, head in zip(self.head_stats[name], unpack(record["true"])):
            stats.add(key, head)
        if predicted in self.head_stats and "predicted_heads" in record:
            for stats, head in zip(self.head_stats[predicted], unpack(record["predicted_heads"])):
                stats.misidentified.add(head["peak"])
                stats.misidentified_top.push(key, head["peak"], head["box"])
        for partner, decoded in unpack(record.get("pairs", "{}")).items():
            # This image is A's in the pair (its class, partner) and B's in (partner, its class).
            for stats, head, drop in zip(self._pair(name, partner), decoded["a"], decoded["drop"]):
                stats.on_a.add(head["peak"])
                if "part" in head:
                    stats.parts[head["part"] is not None] += 1
                stats.top_a.push(key, head["peak"], head["box"], head.get("covers"))
                if drop is not None:
                    stats.drop.add(drop)
            for stats, head in zip(self._pair(partner, name), decoded["b"]):
                stats.on_b.add(head["peak"])
                stats.top_b.push(key, head["peak"], head["box"])

    def add_all(self, records: Iterable[tuple[str, dict]]) -> AtlasBuilder:
        for key, record in records:
            self.add(key, record)
        return self

    def chosen_pairs(self) -> list[tuple[str, str]]:
        """--pairs as given; otherwise the most confused pairs (errors both ways, then the
        probability each side's images give the other), oriented so that A's images lean more on B."""
        if self.requested_pairs is not None:
            return list(self.requested_pairs)
        scores = {}
        for (a, b) in self.pair_stats:
            if a == b or (b, a) in scores or a not in self.head_stats or b not in self.head_stats:
                continue
            if not (self.pair_stats[(a, b)][0].on_a.count and self.pair_stats[(a, b)][0].on_b.count):
                continue  # the pair was never decoded on both sides' images
            errors = self.confusion[(a, b)] + self.confusion[(b, a)]
            soft = self.soft_confusion[(a, b)] + self.soft_confusion[(b, a)]
            if self.soft_confusion[(b, a)] > self.soft_confusion[(a, b)]:
                a, b = b, a
            scores[(a, b)] = (errors, soft)
        ranked = sorted(scores, key=lambda pair: (-scores[pair][0], -scores[pair][1], pair))
        return ranked[:self.pair_count]

    def build(self) -> Atlas:
        classes = [ClassSummary(name, self.counts[name], self.correct[name],
                                [self._head_summary(h, stats) for h, stats in enumerate(self.head_stats[name])])
                   for name in self.class_names]
        pairs = []
        for a, b in self.chosen_pairs():
            stats = self.pair_stats.get((a, b)) or [PairHeadStats(self.per_head) for _ in range(self.heads)]
            heads = [PairHead(h, effect_size(s.on_a, s.on_b), s.drop.mean, s.on_a.mean, s.on_b.mean, s.drop.count,
                              s.on_part_a(), s.top_a.best(), s.top_b.best()) for h, s in enumerate(stats)]
            pairs.append(PairSummary(a, b, stats[0].on_a.count, stats[0].on_b.count,
                                     self.confusion[(a, b)] + self.confusion[(b, a)], rank_pair_heads(heads)))
        return Atlas(classes, pairs, sum(self.counts.values()), list(self.skipped), dict(self.confusion),
                     list(self.rejected))

    @staticmethod
    def _head_summary(head: int, stats: HeadStats) -> HeadSummary:
        consistency, part, method = stats.consistency()
        return HeadSummary(head, stats.peaks.count, stats.peaks.mean, stats.median_peak(), stats.spread.mean,
                           stats.on_specimen_fraction(), consistency, part, method, stats.misidentified.count,
                           stats.misidentified.mean, stats.top.best())
