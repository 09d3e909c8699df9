""""None of these species": an open-set threshold and split-conformal prediction sets, calibrated
on images of known species and stored with the model (this module owns that metadata's format).

- Open-set score (default `energy`): the energy, log sum_c exp(w^T z_out,c), of the presence
  scores of every class query (Eq. 6: "how much does any class see itself?"; Liu et al.,
  NeurIPS 2020; close to the maximum logit: Vaze et al., ICLR 2022). Also offered: the presence
  margin, the maximum softmax, `class_energy` (the energy judged against the calibration images
  predicted as the same class, in interquartile ranges from their median: ClassScale), and the
  feature scores: `mahalanobis`, how unlike its class's calibration images the top class
  query's decoder output z_out is (class_features; Lee et al., NeurIPS 2018), and
  `energy_mahalanobis`, both. `class_energy` won on the tuning data of benchmarks/open_set.py
  but lost to the plain energy on the held-out look-alike collections (benchmarks/RESULTS.md,
  issue 25, session 7), so the energy stays the default. A class predicted for fewer
  calibration images than a threshold needs gets the pooled median and range.
- Threshold: the k-th lowest score of n calibration images, k = floor((n + 1)(1 - keep)), so
  that a new image exchangeable with them scores at least the threshold with probability at
  least `keep` (default 95 %); below it the image is "none of the N species". For the
  class-conditional scores each calibration image is scored by statistics fitted on the other
  images (20-fold cross-fitting), as a new image is.
- Prediction sets: split conformal with the LAC score 1 - p_true (Sadinle et al., 2019): the
  set is every class y with softmax probability at least 1 - q_y. With enough calibration
  images of every class (as many as the rank needs) q_y is that class's own quantile
  (class-conditional, "Mondrian"; Vovk, 2003): the set contains the true species with
  probability at least 1 - alpha (default 90 %) for EVERY species; otherwise one pooled q, and
  the promise is an average over images. LAC gives the smallest sets; a set can be empty (no
  species probable enough).
Neither promise holds for images unlike the calibration images (another camera, another
collection, species the model never saw).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields

import numpy as np

from .class_features import ClassFeatures, FeatureStatisticsError
from .class_features import fit as fit_class_features

SCORES = ("max_logit", "energy", "presence_margin", "max_softmax", "class_energy", "mahalanobis",
          "energy_mahalanobis")
# standardised per predicted class with the calibration's statistics (ClassScale)
CLASS_SCORES = ("class_energy", "mahalanobis", "energy_mahalanobis")
FEATURE_SCORES = ("mahalanobis", "energy_mahalanobis")  # they read the decoder output z_out, not only the logits
DEFAULT_SCORE = "energy"
UNCALIBRATED_SCORE = "energy"  # the best score that needs no calibration statistics (intr eval of a plain model)
FOLDS = 20  # cross-fitting of the feature statistics on the calibration images (see calibrate)
DEFAULT_KEEP = 0.95   # share of known-species images kept as known
DEFAULT_ALPHA = 0.10  # prediction sets miss the true species of at most this share of images
METHOD = "lac"
MONDRIAN = "lac-mondrian"  # per-class quantiles, when every class has enough calibration images
FORMAT_VERSION = 2  # 2: class-feature statistics or per-class quantiles; 1 is still read and written
# for a calibration that needs neither (older napari-intr versions read it)
READABLE_VERSIONS = (1, 2)
METADATA_KEY = "calibration"  # the checkpoint metadata entry (napari_intr.checkpoints)
SUBSET_NOTE = ("not judged against the calibration: its threshold and prediction sets hold for all the "
               "model's classes, not a chosen subset")


class CalibrationError(ValueError):
    """Calibration that cannot be done or read; the message says why and what to do."""


def open_set_scores(logits: np.ndarray, score: str = DEFAULT_SCORE, top_features: np.ndarray | None = None,
                    scale: ClassScale | None = None) -> np.ndarray:
    """[N] scores of [N, C] logits; higher means more like one of the known species. The
    class-conditional scores also read the calibration's `scale`, the feature scores [N, D]
    top_features, the decoder output z_out of each image's top class."""
    logits = np.asarray(logits, dtype=np.float64)
    if score in CLASS_SCORES:
        if scale is None:
            raise CalibrationError(f"the {score.replace('_', ' ')} score needs the calibration's statistics")
        return scale.scores(score, logits, top_features)
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


def class_quantiles(probabilities: np.ndarray, labels: np.ndarray, alpha: float = DEFAULT_ALPHA) -> list[float] | None:
    """Class-conditional (Mondrian) LAC quantiles q_y, one per class, each from that class's
    calibration images only (Vovk, 2003; Sadinle et al., 2019): a set then holds the true species
    with probability >= 1 - alpha for EVERY species, not only on average over images. None when a
    class has too few images for its own rank to exist (then one pooled quantile serves all)."""
    labels = np.asarray(labels)
    classes = np.asarray(probabilities).shape[-1]
    if np.bincount(labels, minlength=classes).min() < minimum_images(alpha=alpha):
        return None
    return [conformal_quantile(probabilities[labels == c], labels[labels == c], alpha) for c in range(classes)]


def prediction_sets(probabilities: np.ndarray, quantile) -> np.ndarray:
    """[N, C] boolean: class y is in image i's set when p_y >= 1 - q_y (one q, or [C] per class)."""
    return np.asarray(probabilities) >= 1 - quantile - 1e-12


def median_and_spread(values: np.ndarray) -> tuple[float, float]:
    low, median, high = np.percentile(values, [25, 50, 75])
    return float(median), float(max(high - low, 1e-6))


def per_class_median_and_spread(values: np.ndarray, top: np.ndarray, classes: int,
                                minimum: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Median and interquartile range of `values` over the images predicted as each class; the
    pooled ones for a class predicted for fewer than `minimum` images."""
    pooled = median_and_spread(values)
    own = [median_and_spread(values[top == c]) if (top == c).sum() >= minimum else pooled for c in range(classes)]
    return tuple(m for m, _ in own), tuple(r for _, r in own)


@dataclass(frozen=True)
class ClassScale:
    """The class-conditional scores' statistics. Classes differ in how confident the model is on
    their images (a tight, easy species; a variable one): an image is judged against the images
    predicted as ITS top class, its energy (and its top-class output's log Mahalanobis distance,
    class_features) in interquartile ranges from that class's median on the calibration images."""
    energy: tuple[tuple[float, ...], tuple[float, ...]]            # medians [C], interquartile ranges [C]
    distance: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # the same of the log distance
    classes: ClassFeatures | None = None                          # where each class query's output lies

    def log_distance(self, top_features: np.ndarray, top: np.ndarray) -> np.ndarray:
        """[N] log squared Mahalanobis distance of each image's top-class output to that class's mean."""
        return np.log(np.maximum(self.classes.distance(top_features, top), 1e-12))

    def scores(self, score: str, logits: np.ndarray, top_features: np.ndarray | None) -> np.ndarray:
        top = logits.argmax(-1)
        medians, spreads = (np.asarray(v) for v in self.energy)
        energy = (open_set_scores(logits, "energy") - medians[top]) / spreads[top]
        if score == "class_energy":
            return energy
        if top_features is None or self.classes is None:
            raise CalibrationError(f"the {score.replace('_', ' ')} score needs the decoder outputs of the top "
                                   "classes and the calibration's class-feature statistics")
        medians, spreads = (np.asarray(v) for v in self.distance)
        distance = (self.log_distance(top_features, top) - medians[top]) / spreads[top]
        return -distance if score == "mahalanobis" else energy - distance

    def to_dict(self) -> dict:
        return {"energy": self.energy, "distance": self.distance,
                "classes": None if self.classes is None else self.classes.to_dict()}

    @classmethod
    def from_dict(cls, values: dict) -> ClassScale:
        try:
            pair = (lambda v: None if v is None else (tuple(map(float, v[0])), tuple(map(float, v[1]))))
            classes = None if values["classes"] is None else ClassFeatures.from_dict(values["classes"])
            return cls(pair(values["energy"]), pair(values["distance"]), classes)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise CalibrationError(f"damaged class-scale statistics ({error}); calibrate the model again "
                                   "with intr calibrate") from error


def fit_class_scale(score: str, logits: np.ndarray, labels: np.ndarray, top_features, true_features,
                    minimum: int) -> ClassScale:
    classes, top = logits.shape[-1], logits.argmax(-1)
    energy = per_class_median_and_spread(open_set_scores(logits, "energy"), top, classes, minimum)
    if score not in FEATURE_SCORES:
        return ClassScale(energy)
    features = fit_class_features(true_features, labels, classes)
    partial = ClassScale(energy, classes=features)
    distance = per_class_median_and_spread(partial.log_distance(top_features, top), top, classes, minimum)
    return ClassScale(energy, distance, features)


def cross_fitted_scores(score: str, logits: np.ndarray, labels: np.ndarray, top_features, true_features,
                        minimum: int) -> np.ndarray:
    """Each calibration image's score by statistics fitted on the other folds (FOLDS): the
    threshold rests on scores of images the statistics never saw, as a new image's will be
    (fitted and judged on the same images, the statistics would flatter them)."""
    folds = np.arange(len(labels)) % FOLDS
    scores = np.empty(len(labels))
    for fold in range(FOLDS):
        held = folds == fold
        fitted = fit_class_scale(score, logits[~held], labels[~held], None if top_features is None else
                                 top_features[~held], None if true_features is None else true_features[~held], minimum)
        scores[held] = fitted.scores(score, logits[held], None if top_features is None else top_features[held])
    return scores


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
    scale: ClassScale | None = None  # the class-conditional scores' statistics (None for the others)
    class_quantiles: list[float] | None = None  # Mondrian: one quantile per class (None: `quantile` for all)

    @property
    def set_quantiles(self):
        """What prediction_sets compares with: the per-class quantiles [C], else the pooled one."""
        return self.quantile if self.class_quantiles is None else np.asarray(self.class_quantiles)

    def to_json(self) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scale"}
        if self.scale is not None:
            values["scale"] = self.scale.to_dict()
        # a logit score's calibration stays readable by versions before the feature scores
        newer = self.scale is not None or self.class_quantiles is not None
        return json.dumps({"format_version": FORMAT_VERSION if newer else 1, **values})

    def scores(self, logits: np.ndarray, top_features: np.ndarray | None = None) -> np.ndarray:
        """[N] open-set scores of [N, C] logits (and [N, D] top-class decoder outputs) by this calibration."""
        return open_set_scores(logits, self.score, top_features, self.scale)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        try:
            values = json.loads(text)
            version = values.pop("format_version", None)
            if version not in READABLE_VERSIONS:
                raise CalibrationError(f"calibration format {version!r} is not one this napari-intr reads "
                                       f"({', '.join(map(str, READABLE_VERSIONS))}); calibrate the model again with "
                                       "intr calibrate")
            if values.get("scale") is not None:
                values["scale"] = ClassScale.from_dict(values["scale"])
            calibration = cls(**values)
        except (TypeError, ValueError, AttributeError) as error:
            if isinstance(error, CalibrationError):
                raise
            raise CalibrationError(f"damaged calibration metadata ({error}); calibrate the model again "
                                   "with intr calibrate") from error
        if calibration.score not in SCORES:
            raise CalibrationError(f"the calibration uses an unknown score {calibration.score!r}; calibrate again")
        scale = calibration.scale
        if (calibration.score in CLASS_SCORES) != (scale is not None) or (scale is not None and (
                (calibration.score in FEATURE_SCORES) != (scale.classes is not None)
                or len(scale.energy[0]) != calibration.classes)):
            raise CalibrationError(f"the calibration's {calibration.score.replace('_', ' ')} score and its "
                                   "statistics do not go together; calibrate the model again")
        return calibration

    def describe(self) -> str:
        return (f"calibrated on {self.images:,} images: {self.score.replace('_', ' ')} threshold "
                f"{self.threshold:.3g} keeps {self.keep:.0%} of known species; {1 - self.alpha:.0%} "
                f"prediction sets ({'LAC, per species' if self.method == MONDRIAN else self.method.upper()})")


def calibrate(logits: np.ndarray, labels: np.ndarray, score: str = DEFAULT_SCORE, keep: float = DEFAULT_KEEP,
              alpha: float = DEFAULT_ALPHA, data: str | None = None, top_features: np.ndarray | None = None,
              true_features: np.ndarray | None = None) -> Calibration:
    """Calibration from [N, C] logits of N images of known species with their true class indices;
    the feature scores also need [N, D] decoder outputs of each image's top and true class."""
    keep, alpha = check_share(keep, "keep"), check_share(alpha, "alpha")
    if score not in SCORES:
        raise CalibrationError(f"unknown open-set score {score!r}; choose one of {', '.join(SCORES)}")
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    needed = minimum_images(alpha, keep)
    if len(labels) < needed:
        raise CalibrationError(f"only {len(labels)} calibration images of known species{f' in {data}' if data else ''}; "
                               f"keep {keep:.0%} and alpha {alpha:g} need at least {needed} (a few hundred give "
                               "stable thresholds): add validation images")
    scale = None
    if score in CLASS_SCORES:
        if score in FEATURE_SCORES and (top_features is None or true_features is None):
            raise CalibrationError(f"the {score.replace('_', ' ')} score needs the decoder outputs of the "
                                   "calibration images")
        if score in FEATURE_SCORES:
            top_features, true_features = (np.asarray(f, dtype=np.float64) for f in (top_features, true_features))
        minimum = minimum_images(keep=keep)  # a class's own scale needs as many images as a threshold
        try:
            scale = fit_class_scale(score, logits, labels, top_features, true_features, minimum)
            scores = cross_fitted_scores(score, logits, labels, top_features, true_features, minimum)
        except FeatureStatisticsError as error:
            raise CalibrationError(str(error)) from error
    else:
        scores = open_set_scores(logits, score)
    threshold = known_threshold(scores, keep)
    probabilities = softmax(logits)
    quantile = conformal_quantile(probabilities, labels, alpha)
    per_class = class_quantiles(probabilities, labels, alpha)
    sets = prediction_sets(probabilities, quantile if per_class is None else np.asarray(per_class))
    return Calibration(score=score, threshold=threshold, keep=keep, alpha=alpha, quantile=quantile,
                       images=len(labels), classes=logits.shape[-1], data=data,
                       method=METHOD if per_class is None else MONDRIAN, class_quantiles=per_class,
                       known_kept=float((scores >= threshold).mean()),
                       coverage=float(sets[np.arange(len(labels)), labels].mean()),
                       mean_set_size=float(sets.sum(-1).mean()), scale=scale)


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
            return (f"{level} prediction set: empty: no species is as probable as the calibration asks for "
                    "its set; the model is torn between species or sees none of them well, so treat the "
                    "top name as a guess")
        return f"{level} prediction set: {', '.join(self.prediction_set)}"


def judge(calibration: Calibration | None, logits: np.ndarray, class_names: list[str],
          features: np.ndarray | None = None) -> CalibratedPrediction | None:
    """One image's [C] logits over ALL the model's classes (in model order, or any order with
    `class_names` alike) and, for a feature score, the [C, D] decoder outputs in that order (NaN
    where a class was not decoded); None without a calibration or when the classes are not the
    calibrated ones."""
    if calibration is None or len(class_names) != calibration.classes:
        return None
    logits = np.asarray(logits, dtype=np.float64)
    top = None if features is None else np.asarray(features, dtype=np.float64)[int(logits.argmax())][None]
    score = float(calibration.scores(logits[None], top)[0])
    probabilities = softmax(logits)
    members = np.flatnonzero(prediction_sets(probabilities, calibration.set_quantiles))
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
