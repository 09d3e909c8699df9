"""The feature open-set scores (napari_intr.class_features, calibration's mahalanobis and
energy_mahalanobis): distances on constructed decoder outputs, the cross-fitted threshold, the
metadata round trip, old (logit-only) calibrations, and the same verdict everywhere."""
import json

import numpy as np
import pytest
import torch

from _intr_reference import one_torch_thread, seeded_model  # noqa: F401 (an autouse fixture)
from napari_intr import class_features
from napari_intr.calibration import Calibration, CalibrationError, calibrate, judge, known_threshold
from napari_intr.checkpoints import CheckpointError, read_metadata, save_model
from napari_intr.explanation import Explainer
from napari_intr.loading import load_model
from napari_intr.model import IntrConfig

NAMES = ["alpha", "beta", "gamma", "delta"]


def clustered(rng, n, classes=4, hidden=16, spread=0.3):
    """Decoder outputs around one centre per class, logits that favour the true class."""
    centres = rng.normal(0, 3, size=(classes, hidden))
    labels = rng.integers(classes, size=n)
    features = centres[labels] + rng.normal(0, spread, size=(n, hidden))
    logits = rng.normal(0, 0.5, size=(n, classes))
    logits[np.arange(n), labels] += 4
    return centres, labels, features, logits


def test_an_output_unlike_its_class_is_farther_and_scores_lower():
    rng = np.random.default_rng(0)
    centres, labels, features, logits = clustered(rng, 400)
    statistics = class_features.fit(features, labels, 4)
    inside = centres[1] + rng.normal(0, 0.3, size=16)
    outside = centres[1] + 2.0 * rng.normal(0, 1, size=16)  # class 1's query, but unlike class 1's images
    near, far = statistics.distance(np.stack([inside, outside]), np.array([1, 1]))
    assert far > 10 * near
    assert statistics.images == tuple(np.bincount(labels, minlength=4))
    for score in ("mahalanobis", "energy_mahalanobis"):
        calibration = calibrate(logits, labels, score, top_features=features, true_features=features)
        same_logits = np.array([0.0, 4.0, 0.0, 0.0])  # equally confident: only the feature tells them apart
        known = judge(calibration, same_logits, NAMES, np.tile(inside, (4, 1)))
        unknown = judge(calibration, same_logits, NAMES, np.tile(outside, (4, 1)))
        assert known.known and not unknown.known and unknown.score < known.score
        assert unknown.describe().startswith("none of the 4 species")


def test_class_energy_judges_an_image_against_its_own_class():
    """Class alpha's images are confidently recognised (energy about 10), beta's are not (about 3,
    widely spread). An image called alpha with energy 7 is far below alpha's usual and is
    rejected by the class-conditional score, while the energy alone, one threshold for all
    classes, keeps it (it is above most beta images)."""
    rng = np.random.default_rng(6)
    labels = np.repeat([0, 1], 100)
    logits = np.full((200, 4), -5.0)
    logits[labels == 0, 0] = rng.normal(10, 0.5, 100)
    logits[labels == 1, 1] = rng.normal(3, 2, 100)
    by_class = calibrate(logits, labels, "class_energy")
    pooled = calibrate(logits, labels, "energy")
    odd = np.array([7.0, -5, -5, -5])
    assert pooled.scores(odd[None])[0] >= pooled.threshold and judge(pooled, odd, NAMES).known
    assert not judge(by_class, odd, NAMES).known
    usual = np.array([10.0, -5, -5, -5])
    assert judge(by_class, usual, NAMES).known
    medians, spreads = by_class.scale.energy
    assert medians[0] > medians[1] and spreads[0] < spreads[1]
    assert medians[2] == medians[3]  # classes nobody was called: the pooled median


def test_shrunk_covariance_is_invertible_with_fewer_images_than_dimensions():
    rng = np.random.default_rng(1)
    centred = rng.normal(size=(20, 64))  # 20 images, hidden size 64: the sample covariance is singular
    covariance, shrinkage = class_features.ledoit_wolf(centred - centred.mean(0))
    assert 0 < shrinkage <= 1
    assert np.linalg.eigvalsh(covariance).min() > 0
    # plenty of images of a far-from-spherical covariance: little shrinkage, the sample covariance
    many = rng.normal(size=(5000, 8)) @ np.diag(np.arange(1, 9.0)) @ rng.normal(size=(8, 8))
    covariance, shrinkage = class_features.ledoit_wolf(many - many.mean(0))
    assert shrinkage < 0.05
    np.testing.assert_allclose(covariance, np.cov(many.T, bias=True), rtol=0.05, atol=0.05 * np.trace(covariance) / 8)
    # a spherical one: shrunk all the way to the multiple of the identity it is
    spherical = rng.normal(size=(5000, 8))
    covariance, shrinkage = class_features.ledoit_wolf(spherical - spherical.mean(0))
    assert shrinkage > 0.9
    np.testing.assert_allclose(covariance, np.eye(8), atol=0.05)


def test_threshold_rests_on_cross_fitted_distances_and_keeps_the_stated_share():
    """Statistics fitted on all calibration images flatter those images: a threshold chosen on
    their in-sample distances keeps too few new known images. Chosen on cross-fitted distances
    (images the statistics never saw) it keeps about the stated 95 % of fresh known images
    (mean over 10 draws of 120 calibration and 2 000 fresh images; the rank rule's own
    expectation is 1 - 6/121 = 95.0 %, cross-fitting on 19/20 of the images errs a little high)."""
    kept, flattered = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        centres, labels, features, logits = clustered(rng, 120, hidden=32)
        calibration = calibrate(logits, labels, "mahalanobis", top_features=features, true_features=features)
        fresh_labels = rng.integers(4, size=2000)
        fresh = centres[fresh_labels] + rng.normal(0, 0.3, size=(2000, 32))
        fresh_logits = np.zeros((2000, 4))
        fresh_logits[np.arange(2000), fresh_labels] = 4
        scores = calibration.scores(fresh_logits, fresh)
        kept.append((scores >= calibration.threshold).mean())
        flattered.append((scores >= known_threshold(calibration.scores(logits, features), 0.95)).mean())
    assert 0.94 <= np.mean(kept) <= 0.975
    assert np.mean(flattered) < 0.93


def tiny_model(seed=0):
    return seeded_model(IntrConfig.tiny(len(NAMES), enc_layers=1, dec_layers=2), NAMES, seed)


def outputs_of(model, images):
    """Logits and decoder outputs of every class, each image prepared as the Explainer prepares it."""
    explainer, logits, features = Explainer(model), [], []
    with torch.inference_mode():
        for image in images:
            output = model.decode(explainer.encode(image).encoded, return_attention=False)
            logits.append(output.logits[0].float().numpy())
            features.append(output.features[0].float().numpy())
    return np.stack(logits).astype(np.float64), np.stack(features).astype(np.float64)


def test_metadata_round_trip_and_the_explainer_judges_with_the_features(tmp_path):
    model = tiny_model()
    rng = np.random.default_rng(3)
    images = rng.random((40, 64, 64, 3)).astype(np.float32)
    logits, features = outputs_of(load_model(save_model(model, tmp_path / "plain.safetensors"), precision="fp32"),
                                  images)
    labels = logits.argmax(1)  # known images: the model's own calls
    top = features[np.arange(40), labels]
    model.calibration = calibrate(logits, labels, "energy_mahalanobis", top_features=top, true_features=top)
    path = save_model(model, tmp_path / "calibrated.safetensors")
    again = load_model(path, device="cpu", precision="fp32")
    assert again.calibration == model.calibration
    stored = again.calibration.scale
    assert stored.classes.means.shape == (4, model.config.hidden_dim)
    assert stored.classes.precision.shape == (model.config.hidden_dim,) * 2
    np.testing.assert_array_equal(stored.classes.precision, model.calibration.scale.classes.precision)
    assert read_metadata(path)["calibration"].score == "energy_mahalanobis"
    # the Explainer's verdict is the calibration's score of the top class's decoder output
    explanation = Explainer(again).explain(images[0])
    column = int(np.argmax(explanation.logits))
    expected = again.calibration.scores(explanation.logits[None].astype(np.float64),
                                        features[0, explanation.class_indices[column]][None])[0]
    assert explanation.calibrated.score == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # a shortlist decodes the top classes only: the same top class's output (a 2-layer decoder
    # with the shortlist's context), the undecoded classes count with no probability in the energy
    shortlisted = Explainer(again).explain(images[0], shortlist=2)
    full = np.full(4, -np.inf)
    full[shortlisted.class_indices] = shortlisted.logits
    expected = again.calibration.scores(full[None], features[0, int(np.argmax(full))][None])[0]
    assert shortlisted.calibrated.score == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_an_old_energy_only_calibration_still_loads_and_scores(tmp_path):
    model = tiny_model()
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(60, 4))
    labels = logits.argmax(1)
    energy = calibrate(logits, labels, "energy")  # a logit score: no statistics
    assert energy.scale is None
    # a logit-score calibration is written as before the feature scores: format 1, no "features"
    assert json.loads(energy.to_json())["format_version"] == 1 and "scale" not in energy.to_json()
    old = {"format_version": 1, "score": "energy", "threshold": energy.threshold, "keep": 0.95, "alpha": 0.1,
           "quantile": energy.quantile, "images": 60, "classes": 4, "method": "lac", "data": None,
           "known_kept": energy.known_kept, "coverage": energy.coverage, "mean_set_size": energy.mean_set_size,
           "extra": {}}  # every entry an older napari-intr wrote
    loaded = Calibration.from_json(json.dumps(old))
    assert loaded == energy
    model.calibration = loaded
    path = save_model(model, tmp_path / "old.safetensors")
    explanation = Explainer(load_model(path, device="cpu", precision="fp32")).explain(
        rng.random((64, 64, 3)).astype(np.float32))
    assert explanation.calibrated is not None
    assert explanation.calibrated.score == pytest.approx(float(np.log(np.exp(explanation.logits).sum())), rel=1e-6)


def test_bad_feature_statistics_are_refused_with_a_message(tmp_path):
    rng = np.random.default_rng(5)
    _, labels, features, logits = clustered(rng, 60, hidden=8)
    with pytest.raises(CalibrationError, match="needs the decoder outputs"):
        calibrate(logits, labels, "mahalanobis")
    calibration = calibrate(logits, labels, "mahalanobis", top_features=features, true_features=features)
    with pytest.raises(CalibrationError, match="needs the decoder outputs"):
        judge(calibration, logits[0], NAMES)
    with pytest.raises(class_features.FeatureStatisticsError, match="hidden size 8"):
        calibration.scores(logits[:2], features[:2, :4])
    damaged = json.loads(calibration.to_json())
    damaged["scale"]["classes"]["precision"]["float32"] = "not base64!"
    with pytest.raises(CalibrationError, match="damaged class-scale statistics"):
        Calibration.from_json(json.dumps(damaged))
    without = json.loads(calibration.to_json())
    without["scale"] = None
    with pytest.raises(CalibrationError, match="do not go together"):
        Calibration.from_json(json.dumps(without))
    model = tiny_model()  # hidden size 64, the statistics are of hidden size 8
    model.calibration = calibrate(logits, labels, "mahalanobis", top_features=features, true_features=features)
    path = save_model(model, tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError, match="hidden size"):
        load_model(path)
