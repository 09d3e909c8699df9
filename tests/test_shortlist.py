"""Shortlist decoding (a first pass over every class, the full decoder on the top K) and
sampled-query training (K decoded classes per step with the logQ correction)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _intr_reference import one_torch_thread, seeded_model  # noqa: F401 (an autouse fixture)
from intr_training.data import Batch
from intr_training.engine import StepOptions, evaluate, train_step
from intr_training.query_sampling import QuerySampler, sampled_cross_entropy
from napari_intr.checkpoints import load_checkpoint, save_model
from napari_intr.explanation import Explainer
from napari_intr.model import IntrConfig

C = 40


@pytest.fixture(scope="module", params=[False, True], ids=["early-exit", "head"])
def model(request):
    return seeded_model(IntrConfig.tiny(C, shortlist_head=request.param), [f"species {i}" for i in range(C)])


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(3))


def encode(model, images):
    with torch.no_grad():
        return model.encode(images)


def test_shortlist_of_every_class_is_the_full_decode_exactly(model, images):
    encoded = encode(model, images)
    with torch.no_grad():
        full = model.decode(encoded)
        listed = model.decode(encoded, shortlist=C)
        larger = model.decode(encoded, shortlist=C + 5)
    for output in (listed, larger):
        assert output.classes == full.classes
        assert torch.equal(output.logits, full.logits)
        assert torch.equal(output.attention, full.attention)
        assert output.candidates == C


def test_shortlist_decodes_the_first_pass_top_k_in_drop_mode(model, images):
    encoded = encode(model, images)
    with torch.no_grad():
        scores = model.first_pass(encoded)
        for row in range(len(images)):
            one = encoded.select([row])
            output = model.decode(one, shortlist=7, shortlist_context=False)
            top = sorted(scores[row].topk(7).indices.tolist())
            assert output.classes == top
            drop = model.decode(one, top, mode="drop")
            assert torch.equal(output.logits, drop.logits)
            assert torch.equal(output.attention, drop.attention)


def test_shortlist_with_context_gives_the_full_decode_of_a_two_layer_decoder(model, images):
    """Layer 2 attends to every class's layer-1 output: with 2 layers, the shortlisted classes get
    exactly their full-decode logits and maps, whatever else was left out."""
    assert model.config.dec_layers == 2
    encoded = encode(model, images)
    with torch.no_grad():
        full = model.decode(encoded)
        for row in range(len(images)):
            listed = model.decode(encoded.select([row]), shortlist=5)
            torch.testing.assert_close(listed.logits[0], full.logits[row, listed.classes], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(listed.attention[:, 0], full.attention[:, row][:, :, listed.classes],
                                       rtol=1e-5, atol=1e-6)
        plain = model.decode(encoded.select([0]), shortlist=5, shortlist_context=False)
    assert not torch.allclose(plain.logits[0], full.logits[0, plain.classes], atol=1e-4)  # drop mode differs


def test_a_batch_with_different_shortlists_marks_what_was_not_decoded(model, images):
    encoded = encode(model, images)
    with torch.no_grad():
        batch = model.decode(encoded, shortlist=5)
        for row in range(len(images)):
            alone = model.decode(encoded.select([row]), shortlist=5)
            columns = [batch.classes.index(c) for c in alone.classes]
            torch.testing.assert_close(batch.logits[row, columns], alone.logits[0])
            torch.testing.assert_close(batch.attention[:, row][:, :, columns], alone.attention[:, 0])
            others = [c for c in range(len(batch.classes)) if c not in columns]
            assert torch.isinf(batch.logits[row, others]).all()
            assert not batch.attention[:, row][:, :, others].any()


def test_first_pass_scores_each_class_on_its_own(model, images):
    """Layer 1 sees zero inputs, so a class's first-pass score does not depend on the others."""
    encoded = encode(model, images)
    with torch.no_grad():
        every = model.first_pass(encoded)
        some = model.first_pass(encoded, [3, 17, 0])
    torch.testing.assert_close(some, every[:, [3, 17, 0]])
    assert every.shape == (len(images), C)


def test_first_pass_without_a_head_is_the_decoder_stopped_after_layer_one(images):
    model = seeded_model(IntrConfig.tiny(C, dec_layers=1), None)
    encoded = encode(model, images)
    with torch.no_grad():
        torch.testing.assert_close(model.first_pass(encoded), model.decode(encoded).logits)


def test_shortlist_within_given_candidates_and_bad_values(model, images):
    encoded = encode(model, images[:1])
    with torch.no_grad():
        output = model.decode(encoded, [30, 2, 11, 25], shortlist=2)
    assert len(output.classes) == 2 and set(output.classes) <= {30, 2, 11, 25}
    assert output.candidates == 4
    order = [30, 2, 11, 25]
    assert [order.index(c) for c in output.classes] == sorted(order.index(c) for c in output.classes)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="shortlist must be a whole number"):
            model.decode(encoded, shortlist=bad)
    with pytest.raises(ValueError, match="drop mode"):
        model.decode(encoded, mode="zero", shortlist=4)


def test_explainer_names_the_classes_that_were_not_decoded(model):
    image = np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    explainer = Explainer(model)
    explanation = explainer.explain(image, shortlist=6)
    assert len(explanation.class_names) == 6 and explanation.candidates == C
    assert explanation.undecoded == C - 6
    assert any("not decoded" in note and f"{C - 6}" in note for note in explanation.notes)
    full = explainer.explain(image, shortlist=C)
    assert full.undecoded == 0 and not any("not decoded" in note for note in full.notes)


class ListLoader(list):
    pass


def batches(images, labels, size=2):
    mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool)
    return ListLoader(Batch(images[i:i + size], mask[i:i + size], labels[i:i + size], 0)
                      for i in range(0, len(images), size))


def test_recall_at_k_is_computed_from_the_first_pass_and_the_full_decode(model):
    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 5, 9, 13, 21, 39])
    k = 4
    with torch.no_grad():
        encoded = model.encode(images)
        full_top1 = model.decode(encoded).logits.argmax(-1)
        listed = model.first_pass(encoded).topk(k).indices
        shortlisted = model.decode(encoded, shortlist=k)
    expected_recall = float((listed == full_top1[:, None]).any(-1).float().mean())
    expected_agreement = float((torch.as_tensor(shortlisted.classes)[shortlisted.logits.argmax(-1)]
                                == full_top1).float().mean())
    options = StepOptions(torch.device("cpu"))
    result = evaluate(model, batches(images, labels), options, C, shortlist=k, compare_full=True)
    check = result.shortlist.as_dict()
    assert check["images"] == 6
    assert check["recall_of_full_top1"] == pytest.approx(expected_recall)
    assert check["top1_agreement_with_full"] == pytest.approx(expected_agreement)
    assert result.loss is None
    everything = evaluate(model, batches(images, labels), options, C, shortlist=C, compare_full=True)
    assert everything.shortlist.as_dict()["recall_of_full_top1"] == 1.0
    assert everything.shortlist.as_dict()["top1_agreement_with_full"] == 1.0


def test_sampled_loss_with_every_class_is_the_full_loss(model):
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    labels = torch.tensor([1, 1, 8, 30])
    batch = Batch(images, torch.zeros(4, 64, 64, dtype=torch.bool), labels, 0)
    options = StepOptions(torch.device("cpu"))
    model.eval()  # no dropout: both runs must see the same network
    full_loss, full_predicted = train_step(model, batch, options)
    sampler = QuerySampler(C, C, torch.Generator().manual_seed(0))
    sampled_loss, sampled_predicted = train_step(model, batch, options, sampler)
    assert sampler.chosen.classes == list(range(C)) and not sampler.chosen.log_q.any()
    assert torch.equal(sampled_loss, full_loss)
    assert torch.equal(sampled_predicted, full_predicted)
    with pytest.raises(ValueError, match="smaller than the 3 classes"):
        train_step(model, batch, options, QuerySampler(2, C, torch.Generator()))


def test_sampled_set_true_classes_hard_and_random_negatives_and_correction(model):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    labels = torch.tensor([4, 12])
    with torch.no_grad():
        encoded = model.encode(images)
        scores = model.first_pass(encoded)
    sampler = QuerySampler(10, C, torch.Generator().manual_seed(1), hard_fraction=0.5)
    chosen = sampler.sample(model, encoded, labels)
    assert len(chosen.classes) == 10 and chosen.classes == sorted(chosen.classes)
    assert {4, 12} <= set(chosen.classes)
    scores[:, [4, 12]] = float("-inf")
    hardest = {int(scores[0].argmax()), int(scores[1].argmax())}
    assert hardest <= set(chosen.classes)
    certain = [c for c, q in zip(chosen.classes, chosen.log_q) if q == 0]
    random = [c for c, q in zip(chosen.classes, chosen.log_q) if q != 0]
    assert len(certain) == 2 + 4 and len(random) == 4  # 8 negatives: 4 hard, 4 random
    remaining = C - len(certain)
    assert torch.allclose(chosen.log_q[chosen.log_q != 0], torch.tensor(np.log(4 / remaining), dtype=torch.float32))
    logits = torch.randn(2, 10)
    expected = F.cross_entropy(logits - chosen.log_q, torch.tensor([chosen.classes.index(4), chosen.classes.index(12)]))
    torch.testing.assert_close(sampled_cross_entropy(logits, labels, chosen), expected)
    other = QuerySampler(10, C, torch.Generator().manual_seed(1), hard_fraction=0.5).sample(model, encoded, labels)
    assert other.classes == chosen.classes  # seeded: resumable


def test_a_10000_class_model_saves_loads_and_explains(tmp_path):
    names = [f"Genus{i // 100} species-{i:05d}" for i in range(10_000)]
    model = seeded_model(IntrConfig.tiny(10_000, shortlist_head=True), names)
    path = save_model(model, tmp_path / "big.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.class_names == names and loaded.config.shortlist_head
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    image = np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    explanation = Explainer(loaded).explain(image, shortlist=32)
    assert len(explanation.class_names) == 32 and explanation.candidates == 10_000
    assert explanation.attention.shape[2] == 32
    np.testing.assert_allclose(explanation.attention.sum(axis=(-2, -1)), 1, rtol=1e-4)
    # the same shortlist from the original model
    again = Explainer(model).explain(image, shortlist=32)
    assert again.class_names == explanation.class_names
    np.testing.assert_allclose(again.logits, explanation.logits, rtol=1e-5, atol=1e-5)


def test_config_shortlist_head_round_trips_and_is_validated():
    config = IntrConfig.tiny(5, shortlist_head=True)
    assert IntrConfig.from_json(config.to_json()) == config
    old = config.to_json().replace(', "shortlist_head": true', "")
    assert "shortlist_head" not in old and IntrConfig.from_json(old).shortlist_head is False  # older checkpoints
    with pytest.raises(ValueError, match="shortlist_head must be true or false"):
        IntrConfig.tiny(5, shortlist_head=1)


def test_too_few_sampled_queries_are_refused():
    with pytest.raises(ValueError, match="--sampled-queries must be at least 2"):
        QuerySampler(1, 10, torch.Generator())


def test_regions_of_a_photo_are_explained_with_a_shortlist(model):
    from napari_intr.regions import Margin, Region, explain_regions
    photo = np.random.default_rng(4).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    regions = [Region("left", 0, 0, 90, 110), Region("right", 100, 10, 200, 120)]
    results, failures = explain_regions(Explainer(model), photo, regions, Margin.parse("0"), shortlist=5)
    assert not failures and [len(r.explanation.class_names) for r in results] == [5, 5]
    assert all(r.explanation.undecoded == C - 5 for r in results)
