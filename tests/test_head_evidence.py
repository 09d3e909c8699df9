"""The ranking rule ("strongest first"): heads by their evidence for the class, flagged heads last,
checked on constructed numbers, on a tiny model, and on the bundled model's tutorial specimen."""
import numpy as np
import pytest
import torch
from PIL import Image

from napari_intr import head_evidence as he
from napari_intr.explanation import Explainer
from napari_intr.image_files import read_image
from napari_intr.loading import load_model, sample_data_dir
from napari_intr.model import IntrConfig, build_model


def test_rank_heads_by_evidence_with_flagged_heads_last():
    drops = [0.5, 2.0, -1.0, 2.0, 3.0]
    assert he.rank_heads(drops) == [4, 1, 3, 0, 2]  # ties by head number
    flags = he.flags_of(drops)
    assert flags == (None, None, he.NO_EVIDENCE, None, None)
    flags = he.flags_of(drops, register_share=[0, 0, 0, 0, 0.9])  # head 5 looks at nothing here
    assert flags[4] == he.ON_REGISTERS
    assert he.rank_heads(drops, flags) == [1, 3, 0, 4, 2]  # flagged: after every unflagged head
    flags = he.flags_of(drops, on_specimen=[True, False, True, True, True])
    assert flags[1] == he.OFF_SPECIMEN and he.rank_heads(drops, flags)[:2] == [4, 3]
    assert he.rank_heads([np.nan, 1.0]) == [1, 0]
    with pytest.raises(ValueError, match="2 flags for 3 heads"):
        he.rank_heads([1, 2, 3], [None, None])


def test_peak_regions_are_the_cells_around_each_peak():
    maps = np.zeros((2, 5, 6))
    maps[0, 2, 3] = 1
    maps[1, 0, 0] = 1
    regions = he.peak_regions(maps).reshape(2, 5, 6)
    assert regions[0].sum() == 9 and regions[0, 1:4, 2:5].all()
    assert regions[1].sum() == 4 and regions[1, :2, :2].all()  # cut at the grid's edge
    assert he.rival_of(np.array([1.0, 3.0, 2.0]), 1) == 2 and he.rival_of(np.array([1.0]), 0) is None


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(IntrConfig.tiny(4, short_side=64, max_side=64), ["a", "b", "c", "d"]).eval()


def test_masking_drops_are_the_fall_of_the_margin_with_the_region_hidden(tiny):
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    explainer = Explainer(tiny)
    encoded = explainer.encode(image)
    maps = np.random.default_rng(4).random((2, tiny.config.nheads, *encoded.encoded.grid))
    drops = he.masking_drops(tiny, encoded.encoded, [(1, 2), (3, None)], maps)
    assert drops.shape == (2, tiny.config.nheads)
    # head 2 of the first target, written out: decode (b, c) with and without its region hidden
    hidden = torch.from_numpy(he.peak_regions(maps[0])[2])[None]
    with torch.inference_mode():
        plain = tiny.decode(encoded.encoded, [1, 2], return_attention=False).logits[0]
        encoded.encoded.padding_mask, kept = hidden, encoded.encoded.padding_mask
        encoded.encoded.cross_key_values = None
        masked = tiny.decode(encoded.encoded, [1, 2], return_attention=False).logits[0]
        encoded.encoded.padding_mask = kept
    expected = float((plain[0] - plain[1]) - (masked[0] - masked[1]))
    assert drops[0, 2] == pytest.approx(expected, abs=1e-4)


def test_explanations_rank_the_likeliest_classes_by_evidence(tiny):
    image = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    explanation = Explainer(tiny).explain(image, evidence=2)
    likeliest, third = explanation.order()[0], explanation.order()[2]
    assert len(Explainer(tiny).explain(image).evidence) == 2  # by default the likeliest class, at both layers
    name = explanation.class_names[likeliest]
    for layer in (0, -1):
        found = explanation.head_evidence(name, layer)
        assert found is not None and explanation.head_order(name, layer) == found.order()
        unflagged = [h for h in found.order() if found.flags[h] is None]
        assert np.all(np.diff(found.drops[unflagged]) <= 0)
    assert found.rival == explanation.class_indices[explanation.order()[1]]
    assert "evidence" in explanation.ranking_basis(name)
    other = explanation.class_names[third]  # not measured: by peak weight, and it says so
    assert explanation.head_evidence(other) is None and "peak" in explanation.ranking_basis(other)
    peaks = explanation.head_maps(other, -1, "none").max(axis=(1, 2))
    assert np.all(np.diff(peaks[explanation.head_order(other)]) <= 0)
    assert Explainer(tiny).explain(image, evidence=0).evidence == {}
    named = Explainer(tiny).explain(image, evidence=["c"])
    assert list(named.evidence) == [(0, 2), (1, 2)]


def test_the_tutorials_head_shown_first_lands_on_the_white_forewing_spot(monkeypatch):
    """docs/tutorial.md §1: on the bundled alba specimen the head shown first peaks on the spot
    (grid-strict: its peak feature cell overlaps the spot's mask), which the peak-weight rule missed."""
    monkeypatch.syspath_prepend(str(sample_data_dir()))
    import make_specimens

    from napari_intr import synth
    from napari_intr.faithfulness.metrics import strict_pointing_hit

    species, pose_seed = next(s for s in make_specimens.SPECIMENS if s[0] == "Heliconia synthetica-alba")
    pose = synth.sample_pose(np.random.default_rng([make_specimens.SEED_BASE, pose_seed]), make_specimens.SIZE)
    _, _, spot = synth._rasterise(synth.find_species(species), pose, make_specimens.SIZE)
    model = load_model("sample")
    explanation = Explainer(model).explain(read_image(make_specimens.specimen_path(species)))
    assert explanation.top_class() == species
    size = explanation.input_shape
    spot = np.asarray(Image.fromarray(spot.astype(np.uint8) * 255).resize(size[::-1], Image.NEAREST)) > 127
    maps = explanation.head_maps(species, -1, "none")
    first = explanation.head_order(species)[0]
    assert strict_pointing_hit(maps[first], spot, model.feature_stride)
    assert explanation.head_evidence(species).flags[first] is None
    by_peak = int(np.argmax(maps.max(axis=(1, 2))))
    assert not strict_pointing_hit(maps[by_peak], spot, model.feature_stride)  # what the old rule showed


def _counting(monkeypatch):
    """Count the masked decoder calls (one per layer measured) LayerEvidence makes."""
    calls = []
    measure = he.head_evidence

    def counted(*args, **kwargs):
        calls.append(1)
        return measure(*args, **kwargs)
    monkeypatch.setattr(he, "head_evidence", counted)
    return calls


def test_evidence_measured_when_asked_for_is_the_eager_evidence_at_every_layer(tiny):
    image = np.random.default_rng(6).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    explainer = Explainer(tiny)
    encoded = explainer.encode(image)
    eager = explainer.decode(encoded, evidence=2)
    lazy = explainer.decode(encoded, evidence=2, evidence_layers=())
    assert lazy.evidence == {} and eager.unmeasured is None
    for layer in reversed(range(tiny.config.dec_layers)):  # another order than the eager one
        for name in (eager.class_names[c] for c in eager.order()[:3]):
            ours, theirs = lazy.head_evidence(name, layer), eager.head_evidence(name, layer)
            assert (ours is None) == (theirs is None)
            if ours is not None:
                assert np.array_equal(ours.drops, theirs.drops) and ours.flags == theirs.flags
                assert ours.rival == theirs.rival
            assert lazy.head_order(name, layer) == eager.head_order(name, layer)
            assert lazy.ranking_basis(name, layer) == eager.ranking_basis(name, layer)
    assert sorted(lazy.evidence) == sorted(eager.evidence) and lazy.unmeasured is None  # all measured, let go


def test_a_layer_switch_measures_the_missing_layer_once(tiny, monkeypatch):
    image = np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    explainer = Explainer(tiny)
    encoded = explainer.encode(image)
    calls = _counting(monkeypatch)
    shown = explainer.decode(encoded, evidence_layers=[-1])  # the Explorer's decode: the layer it shows
    assert len(calls) == 1 and list(shown.evidence) == [(1, shown.order()[0])]
    top, other = shown.top_class(), shown.class_names[shown.order()[1]]
    shown.head_order(top, -1)
    shown.head_order(other, 0)  # a class not ranked by evidence measures nothing
    assert len(calls) == 1
    shown.head_order(top, 0)  # switched to L1: measured now
    assert len(calls) == 2 and (0, shown.order()[0]) in shown.evidence
    for layer in (-1, 0, -1, 0):  # switching back and forth is free
        shown.head_order(top, layer)
        shown.ranking_basis(top, layer)
    assert len(calls) == 2
    shown.measure_evidence()  # every layer held is measured: nothing left
    assert len(calls) == 2 and shown.unmeasured is None


def test_a_new_class_set_or_image_measures_its_own_evidence(tiny, monkeypatch):
    explainer = Explainer(tiny)
    images = [np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8) for seed in (8, 9)]
    encoded = explainer.encode(images[0])
    calls = _counting(monkeypatch)
    every = explainer.decode(encoded, evidence=["a"], evidence_layers=[-1])
    every.head_order("a", 0)
    assert len(calls) == 2
    fewer = explainer.decode(encoded, ["a", "d"], evidence=["a"], evidence_layers=[-1])
    assert len(calls) == 3  # the new set's shown layer: its own, not the cached one
    fewer.head_order("a", 0)
    assert len(calls) == 4
    assert fewer.head_evidence("a", 0).rival == 3  # the rival is within the new set
    assert every.head_evidence("a", 0).rival == every.class_indices[every.order()[0 if every.order()[0] != 0 else 1]]
    again = explainer.decode(explainer.encode(images[1]), evidence=["a"], evidence_layers=())
    assert again.evidence == {} and again.head_evidence("a", 0) is not None and len(calls) == 5


def test_files_written_from_a_lazy_explanation_are_the_eager_ones(tiny):
    from napari_intr.export import explanation_metadata
    image = np.random.default_rng(10).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    explainer = Explainer(tiny)
    encoded = explainer.encode(image)
    eager, lazy = explainer.decode(encoded), explainer.decode(encoded, evidence_layers=())
    for layer in (0, -1):
        for name in eager.class_names:  # the TIFF's top_heads, top_heads_by and flagged_heads
            assert explanation_metadata(lazy, name, layer) == explanation_metadata(eager, name, layer)
