"""Open-set threshold and conformal prediction sets (napari_intr.calibration): the guarantees on
simulated exchangeable scores, monotonicity, the metadata round trip and a model without it."""
import math

import numpy as np
import pytest
import torch

from _intr_reference import one_torch_thread, seeded_model  # noqa: F401 (an autouse fixture)
from napari_intr.calibration import (
    Calibration,
    CalibrationError,
    auroc,
    calibrate,
    conformal_quantile,
    coverage_table,
    fpr_at_tpr,
    judge,
    known_threshold,
    minimum_images,
    open_set_scores,
    softmax,
)
from napari_intr.checkpoints import CheckpointError, read_metadata, save_model
from napari_intr.explanation import Explainer
from napari_intr.loading import load_model
from napari_intr.model import IntrConfig

NAMES = ["alpha", "beta", "gamma", "delta"]


def simulated(rng, n, classes=5, noise=1.5):
    """Exchangeable logits: the true class is raised by a random margin, plus noise."""
    labels = rng.integers(classes, size=n)
    logits = rng.normal(0, noise, size=(n, classes))
    logits[np.arange(n), labels] += rng.uniform(0, 3, size=n)
    return logits, labels


def test_conformal_coverage_holds_on_exchangeable_scores():
    """Split conformal: over many calibration/test draws the mean coverage is >= 1 - alpha and
    below 1 - alpha + 1/(n + 1) (within three standard errors of the mean)."""
    rng = np.random.default_rng(0)
    n, alpha, trials, per_trial = 200, 0.1, 200, 200
    coverages = []
    for _ in range(trials):
        logits, labels = simulated(rng, n + per_trial)
        probabilities = softmax(logits)
        quantile = conformal_quantile(probabilities[:n], labels[:n], alpha)
        coverages.append(coverage_table(probabilities[n:], labels[n:], quantile, list("abcde"))["coverage"])
    mean, error = np.mean(coverages), np.std(coverages) / math.sqrt(trials)
    assert 1 - alpha - 3 * error <= mean <= 1 - alpha + 1 / (n + 1) + 3 * error


def test_threshold_keeps_the_stated_share_of_exchangeable_known_images():
    rng = np.random.default_rng(1)
    n, keep, kept = 300, 0.95, []
    for _ in range(200):
        scores = rng.normal(size=n + 300)
        kept.append((scores[n:] >= known_threshold(scores[:n], keep)).mean())
    error = np.std(kept) / math.sqrt(len(kept))
    assert keep - 3 * error <= np.mean(kept) <= keep + 1 / (n + 1) + 3 * error


def test_threshold_is_monotone_in_the_kept_share():
    scores = np.random.default_rng(2).normal(size=500)
    thresholds = [known_threshold(scores, keep) for keep in np.linspace(0.5, 0.99, 30)]
    assert all(a >= b for a, b in zip(thresholds, thresholds[1:]))
    assert thresholds[0] > thresholds[-1]
    # a higher score never turns an image from known to unknown
    threshold = known_threshold(scores, 0.9)
    assert (np.sort(scores) >= threshold).tolist() == sorted((scores >= threshold).tolist())


def test_larger_alpha_never_gives_larger_sets():
    logits, labels = simulated(np.random.default_rng(3), 400)
    probabilities = softmax(logits)
    sizes = [coverage_table(probabilities, labels, conformal_quantile(probabilities, labels, alpha),
                            list("abcde"))["mean_set_size"] for alpha in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert sizes == sorted(sizes, reverse=True)


def test_scores_and_metrics():
    logits = np.array([[3.0, 1.0, 0.0], [0.5, 0.4, 0.3]])
    assert open_set_scores(logits, "max_logit").tolist() == [3.0, 0.5]
    np.testing.assert_allclose(open_set_scores(logits, "energy"), np.log(np.exp(logits).sum(-1)))
    np.testing.assert_allclose(open_set_scores(logits, "presence_margin"), [2.0, 0.1])
    np.testing.assert_allclose(open_set_scores(logits, "max_softmax"), softmax(logits).max(-1))
    assert auroc([2, 3, 4], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5  # ties count half
    assert fpr_at_tpr(np.arange(100), np.array([50, 99, -1])) == pytest.approx(2 / 3)


def test_bad_inputs_say_what_is_needed():
    logits, labels = simulated(np.random.default_rng(4), 10)
    needed = minimum_images(0.1, 0.95)
    assert needed == 19
    with pytest.raises(CalibrationError, match=f"only 10 calibration images.*at least {needed}"):
        calibrate(logits, labels)
    for alpha in (0, 1, -0.1, 1.5, float("nan")):
        with pytest.raises(CalibrationError, match="alpha must be a share strictly between 0 and 1"):
            calibrate(logits, labels, alpha=alpha)
    with pytest.raises(CalibrationError, match="unknown open-set score"):
        calibrate(logits, labels, score="entropy")
    with pytest.raises(CalibrationError, match="calibrate the model again"):
        Calibration.from_json('{"format_version": 1, "score": "max_logit"}')


def tiny_model(seed=0):
    return seeded_model(IntrConfig.tiny(len(NAMES), enc_layers=1, dec_layers=2), NAMES, seed)


def test_metadata_round_trip_and_a_model_without_calibration(tmp_path):
    model = tiny_model()
    plain = save_model(model, tmp_path / "plain.safetensors")
    assert read_metadata(plain)["calibration"] is None
    loaded = load_model(plain, device="cpu")
    assert loaded.calibration is None
    image = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    explanation = Explainer(loaded).explain(image)
    assert explanation.calibrated is None  # behaves as before: a species is named, nothing judged
    assert explanation.top_class() in NAMES

    logits, labels = simulated(np.random.default_rng(5), 100, classes=len(NAMES))
    model.calibration = calibrate(logits, labels, data="somewhere")
    path = save_model(model, tmp_path / "calibrated.safetensors")
    again = load_model(path, device="cpu")
    assert again.calibration == model.calibration
    assert read_metadata(path)["calibration"].images == 100
    explanation = Explainer(again).explain(image)
    expected = judge(model.calibration, explanation.logits, explanation.class_names)
    assert explanation.calibrated == expected
    assert set(explanation.calibrated.prediction_set) <= set(NAMES)


def test_damaged_or_mismatched_calibration_is_refused(tmp_path):
    model = tiny_model()
    logits, labels = simulated(np.random.default_rng(6), 50, classes=3)
    model.calibration = calibrate(logits, labels)  # 3 classes, the model has 4
    path = save_model(model, tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError, match="calibration is for 3 classes"):
        load_model(path)


def test_rejection_reads_as_none_of_the_species():
    logits, labels = simulated(np.random.default_rng(7), 100, classes=len(NAMES))
    calibration = calibrate(logits, labels)
    low = judge(calibration, np.full(len(NAMES), calibration.threshold - 5.0), NAMES)
    assert not low.known
    assert low.describe().startswith(f"none of the {len(NAMES)} species (energy")
    assert "calibrated on 100 images" in low.describe()
    high = judge(calibration, torch.tensor([calibration.threshold + 5.0, 0, 0, 0]).numpy(), NAMES)
    assert high.known and high.prediction_set[0] == "alpha"
    assert judge(None, logits[0], NAMES) is None
    assert judge(calibration, logits[0, :3], NAMES[:3]) is None  # a subset of classes: not calibrated for it
