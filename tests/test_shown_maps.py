"""Only the shown maps are computed: asking the decoder for some layers' attention gives exactly
those layers' maps of the full computation, the same predictions, and no weights elsewhere."""
import numpy as np
import pytest
import torch

import napari_intr
from napari_intr import synth
from napari_intr.explanation import Explainer
from napari_intr.model import IntrConfig, build_model

CLASSES = 7


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return build_model(IntrConfig.tiny(CLASSES, dec_layers=4, shortlist_head=True)).eval()


@pytest.fixture(scope="module")
def encoded(model):
    torch.manual_seed(4)
    images = torch.randn(2, 3, 64, 96)
    mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, :, 80:] = True  # one padded image: the masked attention path too
    with torch.inference_mode():
        return model.encode(images, mask)


def _decode(model, encoded, **options):
    with torch.inference_mode():
        return model.decode(encoded, **options)


@pytest.mark.parametrize("layers, expected", [([2], [2]), ([-1, 0], [0, 3]), (1, [1]), (None, [0, 1, 2, 3])])
def test_chosen_layers_equal_the_full_computations_maps(model, encoded, layers, expected):
    full = _decode(model, encoded)
    chosen = _decode(model, encoded, attention_layers=layers)
    assert chosen.attention_layers == expected and full.attention_layers == [0, 1, 2, 3]
    assert chosen.attention.shape == (len(expected), *full.attention.shape[1:])
    torch.testing.assert_close(chosen.attention, full.attention[expected], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chosen.logits, full.logits, rtol=1e-5, atol=1e-5)


def test_shortlist_with_chosen_layers(model, encoded):
    full = _decode(model, encoded, shortlist=3)
    chosen = _decode(model, encoded, shortlist=3, attention_layers=[-1])
    assert chosen.classes == full.classes and chosen.attention_layers == [3]
    torch.testing.assert_close(chosen.attention, full.attention[[3]], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chosen.logits, full.logits, rtol=1e-5, atol=1e-5)


def test_other_layers_run_without_weights(model, encoded):
    asked = []
    hooks = [layer.multihead_attn.register_forward_hook(
        lambda module, args, output, index=index: asked.append((index, output[1] is not None)))
        for index, layer in enumerate(model.transformer.decoder.layers)]
    try:
        _decode(model, encoded, attention_layers=[1])
    finally:
        for hook in hooks:
            hook.remove()
    assert asked == [(0, False), (1, True), (2, False), (3, False)]


@pytest.mark.parametrize("layers", [[4], [-5], [], [True], ["last"]])
def test_bad_layers_are_refused_with_a_message(model, encoded, layers):
    with pytest.raises(ValueError, match="decoder layer|attention_layers is empty"):
        _decode(model, encoded, attention_layers=layers)


def test_trained_models_predictions_are_unchanged():
    """A trained model (the bundled one) has clear winners: the same top classes, same maps."""
    model = napari_intr.load_model("sample", device="cpu", precision="fp32")  # exact; bf16 agreement: test_inference
    explainer = Explainer(model)
    for index, species in enumerate(synth.SPECIES):
        image, _ = synth.render(species.name, synth.sample_pose(synth.image_rng(7, species.name, index)))
        encoded = explainer.encode(image, species.name)
        full, shown = explainer.decode(encoded), explainer.decode(encoded, layers=[-1])
        assert shown.order() == full.order()
        np.testing.assert_allclose(shown.probabilities, full.probabilities, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(shown.layer_maps(-1), full.layer_maps(-1), rtol=1e-5, atol=1e-6)


def test_explanation_of_one_layer(model):
    image = np.random.default_rng(5).integers(0, 256, (70, 110, 3), dtype=np.uint8)
    explainer = Explainer(model)
    encoded = explainer.encode(image, "specimen")
    full = explainer.decode(encoded)
    shown = explainer.decode(encoded, layers=[-1])
    assert shown.num_layers == full.num_layers == 4 and shown.computed_layers() == [3]
    assert shown.attention.shape[0] == 1 and shown.top_class() == full.top_class()
    np.testing.assert_allclose(shown.probabilities, full.probabilities, rtol=1e-5, atol=1e-6)
    for name in full.class_names:
        np.testing.assert_allclose(shown.head_maps(name, -1, "none"), full.head_maps(name, -1, "none"),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(shown.head_maps(name, 3), full.head_maps(name, 3), rtol=1e-4, atol=1e-5)
        assert shown.head_order(name) == full.head_order(name)
    np.testing.assert_allclose(shown.layer_maps(-1), full.layer_maps(3), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="decoder layer L2 were not computed .*holds L4"):
        shown.head_maps(full.class_names[0], 1)


def test_the_other_layers_are_decoded_once_when_asked_for_as_an_all_layer_decode(model, monkeypatch):
    """Explanation.every_layer: one decode of every layer on the same encoder memory and class set
    (classes given as a generator are used again), the numbers of decode(layers=None); kept, and
    decoded once when two threads ask at once; holding() never decodes."""
    import threading
    image = np.random.default_rng(6).integers(0, 256, (70, 110, 3), dtype=np.uint8)
    explainer = Explainer(model)
    encoded = explainer.encode(image, "specimen")
    decode, decodes = model.decode, []

    def counted(*args, **kwargs):
        decodes.append(kwargs.get("attention_layers"))
        return decode(*args, **kwargs)

    five = model.class_names[:5]
    for full_options, options in (({"classes": five}, {"classes": (name for name in five)}),
                                  ({"shortlist": 3}, {"shortlist": 3})):
        full = explainer.decode(encoded, **full_options)
        shown = explainer.decode(encoded, layers=[-1], **options)
        assert shown.computed_layers() == [3] and shown.holding(-1) is shown and shown.holding(0) is None
        decodes.clear()
        with monkeypatch.context() as patched:
            patched.setattr(model, "decode", counted)
            threads = [threading.Thread(target=shown.every_layer) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            every = shown.every_layer()
        assert decodes == [None] and shown.holding(0) is every and every.computed_layers() == [0, 1, 2, 3]
        assert every.class_names == full.class_names == shown.class_names
        assert np.array_equal(every.attention, full.attention) and np.array_equal(every.logits, full.logits)
        assert every.every_layer() is every and full.every_layer() is full


def test_an_explanation_of_some_layers_with_nothing_to_decode_from_says_so(model):
    image = np.random.default_rng(7).integers(0, 256, (70, 110, 3), dtype=np.uint8)
    shown = Explainer(model).explain(image, "specimen", layers=[-1])
    shown.other_layers = None  # e.g. rebuilt from a file that holds one layer
    with pytest.raises(ValueError, match="holds only some decoder layers"):
        shown.every_layer()
