"""Mimic comparison: candidates decoded on cached memory, presets, and clear errors."""
import numpy as np
import pytest
import torch

from napari_intr import synth
from napari_intr.comparison import compare, most_confused_with, symmetric_limits, top_k_candidates
from napari_intr.explanation import Explainer
from napari_intr.model import IntrConfig, build_model

NAMES = ["Heliconius erato", "Heliconius melpomene", "Morpho peleides", "Danaus plexippus",
         "Papilio machaon", "Limenitis archippus"]
PAIR = ["Heliconius melpomene", "Heliconius erato"]


@pytest.fixture(scope="module")
def explainer():
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(len(NAMES)), NAMES).eval()
    with torch.no_grad():
        # Untrained, the tiny backbone's features are ~1e-3: every position looks alike and
        # every map is uniform. Amplified, the image shapes the maps as in a trained model.
        model.input_proj.weight.mul_(100)
    return Explainer(model, "tiny")


@pytest.fixture(scope="module")
def encoded(explainer):
    pose = synth.sample_pose(np.random.default_rng(0), 128)
    image, _ = synth.render(synth.SHOWCASE_PAIR[0], pose, 128)
    return explainer.encode(image[:96, :], "specimen")  # not square, to catch swapped axes


@pytest.fixture(scope="module")
def everything(explainer, encoded):
    return explainer.decode(encoded)


@pytest.mark.parametrize("mode", ["drop", "zero"])
def test_candidates_compete_among_themselves(explainer, encoded, everything, mode):
    comparison = compare(explainer, encoded, PAIR[0], PAIR, mode)
    assert comparison.candidate_names == PAIR and comparison.mode == mode
    assert comparison.candidates.probabilities.shape == (2,)
    assert comparison.candidates.probabilities.sum() == pytest.approx(1, abs=1e-6)
    np.testing.assert_array_equal(comparison.all_classes.logits, everything.logits)
    heads, _, height, width = everything.attention.shape[1:]
    assert comparison.candidate_maps().shape == (heads, 2, height, width)
    np.testing.assert_array_equal(comparison.candidate_maps()[:, 0], comparison.selected_maps_candidates())
    np.testing.assert_array_equal(comparison.selected_maps_all(), everything.attention[-1, :, 1])
    # The last layer's maps change when the other queries leave (drop) or are zeroed (zero).
    assert np.abs(comparison.difference()).max() > 1e-3 * comparison.selected_maps_all().max()
    np.testing.assert_allclose(comparison.difference(),
                               comparison.selected_maps_candidates() - comparison.selected_maps_all())
    # The logits of the two candidates differ from the all-classes run, too.
    assert not np.allclose(comparison.candidates.logits, everything.logits[[1, 0]])


def test_drop_and_zero_differ_and_layers_are_selectable(explainer, encoded):
    drop = compare(explainer, encoded, PAIR[0], PAIR, "drop")
    zero = compare(explainer, encoded, PAIR[0], PAIR, "zero")
    assert np.abs(drop.difference() - zero.difference()).max() > 1e-3 * drop.selected_maps_all().max()
    assert drop.candidate_maps(0).shape == drop.candidate_maps(-1).shape
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        drop.difference(5)


def test_compare_runs_no_backbone_and_reuses_a_given_all_classes_explanation(explainer, encoded, everything):
    calls = []
    hook = explainer.model.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        comparison = compare(explainer, encoded, PAIR[0], PAIR, all_classes=everything)
        compare(explainer, encoded, PAIR[0], PAIR)
    finally:
        hook.remove()
    assert calls == []
    assert comparison.all_classes is everything


def test_table_lists_candidates_with_both_probabilities(explainer, encoded, everything):
    comparison = compare(explainer, encoded, "Morpho peleides", ["morpho peleides", *PAIR])
    rows = comparison.table()
    assert comparison.selected == "Morpho peleides"  # names are normalised to the model's spelling
    assert {row["name"] for row in rows} == {"Morpho peleides", *PAIR}
    assert [row["probability"] for row in rows] == sorted((row["probability"] for row in rows), reverse=True)
    assert sum(row["probability"] for row in rows) == pytest.approx(1, abs=1e-6)
    for row in rows:
        assert row["probability_all_classes"] == pytest.approx(float(everything.probabilities[NAMES.index(row["name"])]))


def test_top_k_is_the_most_probable_in_order(everything):
    expected = [NAMES[i] for i in np.argsort(-everything.probabilities)[:3]]
    assert top_k_candidates(everything, 3) == expected


def test_most_confused_are_the_closest_logits(everything):
    top = everything.top_class()
    assert most_confused_with(everything, top, 3) == top_k_candidates(everything, 3)  # the runners-up
    middle = everything.class_names[everything.order()[3]]
    chosen = most_confused_with(everything, middle, 3)
    assert chosen[0] == middle and len(set(chosen)) == 3
    distance = {name: abs(everything.logits[NAMES.index(name)] - everything.logits[NAMES.index(middle)])
                for name in NAMES if name != middle}
    assert max(distance[name] for name in chosen[1:]) <= min(
        distance[name] for name in distance if name not in chosen)


def test_symmetric_limits_are_the_largest_magnitude_per_map():
    maps = np.array([[[0.1, -0.3]], [[0.0, 0.0]]], dtype=np.float32)
    limits = symmetric_limits(maps)
    assert limits[0] == pytest.approx(0.3) and 0 < limits[1] < 1e-30


def test_bad_input_gets_clear_messages(explainer, encoded, everything):
    with pytest.raises(ValueError, match="comparison needs at least two classes"):
        compare(explainer, encoded, PAIR[0], [PAIR[0]])
    with pytest.raises(ValueError, match="comparison needs at least two classes"):
        compare(explainer, encoded, PAIR[0], PAIR[0])
    with pytest.raises(ValueError, match="unknown class 'Heliconius eratto'.*did you mean 'Heliconius erato'"):
        compare(explainer, encoded, PAIR[0], ["Heliconius eratto", PAIR[1]])
    with pytest.raises(ValueError, match="not among the candidates"):
        compare(explainer, encoded, "Morpho peleides", PAIR)
    with pytest.warns(UserWarning, match="more than once"), pytest.raises(ValueError, match="at least two classes"):
        compare(explainer, encoded, PAIR[0], [PAIR[0], PAIR[0]])  # the repeat is dropped, leaving one
    with pytest.raises(ValueError, match="mode must be one of"):
        compare(explainer, encoded, PAIR[0], PAIR, mode="mask")
    partial = explainer.decode(encoded, PAIR)
    with pytest.raises(ValueError, match="all the model's classes"):
        compare(explainer, encoded, PAIR[0], PAIR, all_classes=partial)
    for k in (1, len(NAMES) + 1):
        with pytest.raises(ValueError, match="k must be between 2"):
            top_k_candidates(everything, k)
    with pytest.raises(ValueError, match="not among the decoded classes"):
        most_confused_with(partial, "Morpho peleides", 2)
