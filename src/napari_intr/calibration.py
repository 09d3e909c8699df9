""""None of these species": an open-set threshold and split-conformal prediction sets, calibrated
on images of known species and stored with the model (this module owns that metadata's format).

- Open-set score: the energy, log sum_c exp(w^T z_out,c), of the presence scores of every class
  query (Eq. 6: "how much does any class see itself?"; Liu et al., NeurIPS 2020). It is close to
  the maximum logit, a strong open-set score for a good closed-set classifier (Vaze et al., ICLR
  2022), and was chosen over it, the presence margin and the maximum softmax by
  benchmarks/open_set.py on a synthetic tuning split (benchmarks/RESULTS.md, issue 25).
- Threshold: the k-th lowest score of n calibration images, k = floor((n + 1)(1 - keep)), so
  that a new image exchangeable with them scores at least the threshold with probability at
  least `keep` (default 95 %); below it the image is "none of the N species".
- Prediction sets: split conformal with the LAC score 1 - p_true (Sadinle et al., 2019): the
  set is every class with softmax probability at least 1 - q, q the ceil((n + 1)(1 - alpha))-th
  lowest score of the calibration images. It contains the true species with probability at
  least 1 - alpha (default 90 %) for images exchangeable with the calibration images; LAC gives
  the smallest sets on average, APS larger ones with better per-class balance.
Neither promise holds for images unlike the calibration images (another camera, another
collection, species the model never saw).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

SCORES = ("max_logit", "energy", "presence_margin", "max_softmax")
DEFAULT_SCORE = "energy"
DEFAULT_KEEP = 0.95   # share of known-species images kept as known
DEFAULT_ALPHA = 0.10  # prediction sets miss the true species of at most this share of images
METHOD = "lac"
FORMAT_VERSION = 1
METADATA_KEY = "calibration"  # the checkpoint metadata entry (napari_intr.checkpoints)
SUBSET_NOTE = ("not judged against the calibration: its threshold and prediction sets hold for all the "
               "model's classes, not a chosen subset")


class CalibrationError(ValueError):
    """Calibration that cannot be done or read; the message says why and what to do."""


def open_set_scores(logits: np.ndarray, score: str = DEFAULT_SCORE) -> np.ndarray:
    """[N] scores of [N, C] logits; higher means more like one of the known species."""
    logits = np.asarray(logits, dtype=np.float64)
    if score == "max_logit":
        return logits.max(-1)
    if score == "energy":  # minus the free energy: log-sum-exp of the logits (Liu et al., 2020)
        top = logits.max(-1, keepdims=True)
        return (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[..., 0]
    if score == "presence_margin":  # how far the best class's presence beats the runner-up's
        if logits.shape[-1] < 2:
            return logits.max(-1)
        two = np.sort(logits, axis=-1)[..., -2:]
        return two[..., 1] - two[..., 0]
    if score == "max_softmax":  # the baseline (Hendrycks & Gimpel, 2017)
        return softmax(logits).max(-1)
    raise CalibrationError(f"unknown open-set score {score!r}; choose one of {', '.join(SCORES)}")


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def check_share(value: float, option: str) -> float:
    """α and keep are shares strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1 \
            or not math.isfinite(value):
        raise CalibrationError(f"{option} must be a share strictly between 0 and 1 (e.g. 0.1), got {value!r}")
    return float(value)


def minimum_images(alpha: float = DEFAULT_ALPHA, keep: float = DEFAULT_KEEP) -> int:
    """The fewest calibration images for which both ranks exist: k = floor((n + 1)(1 - keep)) >= 1
    and ceil((n + 1)(1 - alpha)) <= n."""
    for_threshold = math.ceil(1 / (1 - keep) - 1e-9) - 1
    for_sets = math.ceil((1 - alpha) / alpha - 1e-9)
    return max(for_threshold, for_sets, 1)


def known_threshold(scores: np.ndarray, keep: float = DEFAULT_KEEP) -> float:
    """The open-set threshold: a new exchangeable known image scores at least this with
    probability >= keep. Lower `keep`, higher threshold (monotone)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.floor((len(scores) + 1) * (1 - keep) + 1e-9)
    if rank < 1:
        raise CalibrationError(f"{len(scores)} images are too few to keep {keep:.0%} of known species: "
                               f"give at least {minimum_images(keep=keep)}")
    return float(scores[rank - 1])


def conformal_quantile(probabilities: np.ndarray, labels: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    """Split-conformal (LAC) quantile q of the scores 1 - p_true: sets {y: p_y >= 1 - q}."""
    labels = np.asarray(labels)
    scores = np.sort(1 - np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels])
    rank = math.ceil((len(scores) + 1) * (1 - alpha) - 1e-9)
    if rank > len(scores):
        raise CalibrationError(f"{len(scores)} images are too few for {1 - alpha:.0%} prediction sets: "
                               f"give at least {minimum_images(alpha=alpha)}")
    return float(scores[rank - 1])


def prediction_sets(probabilities: np.ndarray, quantile: float) -> np.ndarray:
    """[N, C] boolean: class y is in image i's set when p_y >= 1 - q."""
    return np.asarray(probabilities) >= 1 - quantile - 1e-12


@dataclass(frozen=True)
class Calibration:
    """What `intr calibrate` and `intr train` store in a checkpoint's metadata."""
    score: str
    threshold: float
    keep: float
    alpha: float
    quantile: float
    images: int
    classes: int
    method: str = METHOD
    data: str | None = None
    known_kept: float | None = None      # share of the calibration images at or above the threshold
    coverage: float | None = None        # share whose prediction set holds the true species
    mean_set_size: float | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        try:
            values = json.loads(text)
            version = values.pop("format_version", None)
            if version != FORMAT_VERSION:
                raise CalibrationError(f"calibration format {version!r} is not one this napari-intr reads "
                                       f"({FORMAT_VERSION}); calibrate the model again with intr calibrate")
            calibration = cls(**values)
        except (TypeError, ValueError, AttributeError) as error:
            if isinstance(error, CalibrationError):
                raise
            raise CalibrationError(f"damaged calibration metadata ({error}); calibrate the model again "
                                   "with intr calibrate") from error
        if calibration.score not in SCORES:
            raise CalibrationError(f"the calibration uses an unknown score {calibration.score!r}; calibrate again")
        return calibration

    def describe(self) -> str:
        return (f"calibrated on {self.images:,} images: {self.score.replace('_', ' ')} threshold "
                f"{self.threshold:.3g} keeps {self.keep:.0%} of known species; {1 - self.alpha:.0%} "
                f"prediction sets ({self.method.upper()})")


def calibrate(logits: np.ndarray, labels: np.ndarray, score: str = DEFAULT_SCORE, keep: float = DEFAULT_KEEP,
              alpha: float = DEFAULT_ALPHA, data: str | None = None) -> Calibration:
    """Calibration from [N, C] logits of N images of known species with their true class indices."""
    keep, alpha = check_share(keep, "keep"), check_share(alpha, "alpha")
    if score not in SCORES:
        raise CalibrationError(f"unknown open-set score {score!r}; choose one of {', '.join(SCORES)}")
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    needed = minimum_images(alpha, keep)
    if len(labels) < needed:
        raise CalibrationError(f"only {len(labels)} calibration images of known species{f' in {data}' if data else ''}; "
                               f"keep {keep:.0%} and alpha {alpha:g} need at least {needed} (a few hundred give "
                               "stable thresholds): add validation images")
    scores = open_set_scores(logits, score)
    threshold = known_threshold(scores, keep)
    probabilities = softmax(logits)
    quantile = conformal_quantile(probabilities, labels, alpha)
    sets = prediction_sets(probabilities, quantile)
    return Calibration(score=score, threshold=threshold, keep=keep, alpha=alpha, quantile=quantile,
                       images=len(labels), classes=logits.shape[-1], data=data,
                       known_kept=float((scores >= threshold).mean()),
                       coverage=float(sets[np.arange(len(labels)), labels].mean()),
                       mean_set_size=float(sets.sum(-1).mean()))


@dataclass(frozen=True)
class CalibratedPrediction:
    """One image judged against a calibration: known or "none of the N species", and its set."""
    score: float
    known: bool
    prediction_set: list[str]  # class names, most probable first
    calibration: Calibration

    def describe(self) -> str:
        c = self.calibration
        if not self.known:
            return (f"none of the {c.classes:,} species ({c.score.replace('_', ' ')} {self.score:.3g} below "
                    f"{c.threshold:.3g}, calibrated on {c.images:,} images)")
        return f"one of the {c.classes:,} species ({c.score.replace('_', ' ')} {self.score:.3g} ≥ {c.threshold:.3g})"

    def describe_set(self) -> str:
        level = f"{1 - self.calibration.alpha:.0%}"
        if not self.prediction_set:
            return f"{level} prediction set: empty (no species is likely enough)"
        return f"{level} prediction set: {', '.join(self.prediction_set)}"


def judge(calibration: Calibration | None, logits: np.ndarray, class_names: list[str]) -> CalibratedPrediction | None:
    """One image's [C] logits over ALL the model's classes (in model order, or any order with
    `class_names` alike); None without a calibration or when the classes are not the calibrated ones."""
    if calibration is None or len(class_names) != calibration.classes:
        return None
    logits = np.asarray(logits, dtype=np.float64)
    score = float(open_set_scores(logits[None], calibration.score)[0])
    probabilities = softmax(logits)
    members = np.flatnonzero(prediction_sets(probabilities, calibration.quantile))
    members = members[np.argsort(-probabilities[members], kind="stable")]
    return CalibratedPrediction(score, bool(score >= calibration.threshold),
                                [class_names[i] for i in members], calibration)


def rejected_text(calibration: Calibration, names: list[str], total: int, what: str = "images",
                  shown: int = 5) -> str:
    """How a collection's rejected items are counted and listed (never summarised as a species)."""
    listed = ", ".join(names[:shown]) + (f", … ({len(names) - shown} more)" if len(names) > shown else "")
    return (f"none of the {calibration.classes:,} species: {len(names)} of {total} {what}"
            + (f" ({listed})" if names else ""))


# -- evaluation -----------------------------------------------------------------------------------

def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Probability that a known image outscores an unknown one (ties count half): Mann-Whitney U."""
    known, unknown = np.asarray(known, dtype=np.float64), np.asarray(unknown, dtype=np.float64)
    if not len(known) or not len(unknown):
        raise CalibrationError("AUROC needs images of known and of unknown species")
    from scipy.stats import rankdata  # scipy.stats takes a while to import: only when measuring
    ranks = rankdata(np.concatenate([known, unknown]))  # ties get their mean rank
    u = ranks[: len(known)].sum() - len(known) * (len(known) + 1) / 2
    return float(u / (len(known) * len(unknown)))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = 0.95) -> float:
    """Share of unknown images kept as known at the threshold that keeps `tpr` of the known ones."""
    known = np.sort(np.asarray(known, dtype=np.float64))
    threshold = known[min(len(known) - 1, int(math.floor(len(known) * (1 - tpr))))]
    return float((np.asarray(unknown) >= threshold).mean())


def coverage_table(probabilities: np.ndarray, labels: np.ndarray, quantile: float,
                   class_names: list[str]) -> dict:
    """Empirical coverage and mean set size, overall and per true class (classes with images)."""
    labels = np.asarray(labels)
    sets = prediction_sets(probabilities, quantile)
    covered, sizes = sets[np.arange(len(labels)), labels], sets.sum(-1)
    per_class = {class_names[c]: {"images": int((labels == c).sum()), "coverage": float(covered[labels == c].mean()),
                                  "mean_set_size": float(sizes[labels == c].mean())}
                 for c in np.unique(labels)}
    return {"images": len(labels), "coverage": float(covered.mean()), "mean_set_size": float(sizes.mean()),
            "empty_sets": int((sizes == 0).sum()), "per_class": per_class}
