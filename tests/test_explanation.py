"""The Qt-free explanation core: values match a direct model run, switches skip the backbone,
maps land on the original image grid, and bad images get clear errors."""
import numpy as np
import pytest
import torch

from napari_intr.explanation import Explainer, layer_name, shrink_huge_image
from napari_intr.model import IntrConfig, build_model

NAMES = ["Heliconius erato", "Heliconius melpomene", "Morpho peleides", "Danaus plexippus", "Papilio machaon"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(IntrConfig.tiny(len(NAMES)), NAMES).eval()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (90, 133, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def explanation(model, image):
    return Explainer(model, "tiny").explain(image, "specimen")


def test_values_equal_a_direct_model_run(model, image, explanation):
    with torch.inference_mode():
        inputs = model.preprocess(image)
        direct = model(inputs)
    np.testing.assert_allclose(explanation.logits, direct.logits[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(explanation.probabilities, direct.logits[0].softmax(-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(explanation.attention, direct.attention[:, 0].numpy(), rtol=1e-5, atol=1e-7)
    assert explanation.class_names == NAMES and explanation.class_indices == list(range(len(NAMES)))
    assert explanation.image_shape == (90, 133) and explanation.input_shape == tuple(inputs.shape[-2:])
    assert explanation.attention.dtype == np.float32 and explanation.attention.shape[:3] == (2, 4, len(NAMES))
    np.testing.assert_allclose(explanation.attention.sum(axis=(-2, -1)), 1, rtol=1e-5)
    assert explanation.notes == []


@pytest.mark.parametrize("mode", ["drop", "zero"])
def test_decode_on_cached_encoding_equals_explain_and_model_decode(model, image, mode):
    explainer = Explainer(model)
    encoded = explainer.encode(image, "specimen")
    candidates = ["Morpho peleides", "Heliconius erato"]
    decoded = explainer.decode(encoded, candidates, mode)
    fresh = explainer.explain(image, "specimen", candidates, mode)
    np.testing.assert_array_equal(decoded.logits, fresh.logits)
    np.testing.assert_array_equal(decoded.attention, fresh.attention)
    with torch.inference_mode():
        direct = model.decode(model.encode(model.preprocess(image)), candidates, mode=mode)
    np.testing.assert_allclose(decoded.logits, direct.logits[0].numpy(), rtol=1e-5, atol=1e-6)
    assert decoded.class_names == candidates and decoded.class_indices == [2, 0] and decoded.mode == mode


def test_decode_does_not_run_the_backbone(model, image):
    calls = []
    # the ResNet body: encode runs it (features, then projection and encoder), decode never does
    hook = model.backbone[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        explainer = Explainer(model)
        encoded = explainer.encode(image)
        assert len(calls) == 1
        explainer.decode(encoded)
        explainer.decode(encoded, ["Papilio machaon"])
        explainer.decode(encoded, [1, 3, 4], mode="zero")
        assert len(calls) == 1
    finally:
        hook.remove()


def test_order_rank_and_table(explanation):
    order = explanation.order()
    assert np.all(np.diff(explanation.probabilities[order]) <= 0)
    assert explanation.rank_of(explanation.top_class()) == 1
    assert [explanation.rank_of(explanation.class_names[c]) for c in order] == list(range(1, len(NAMES) + 1))
    table = explanation.table()
    assert [row["rank"] for row in table] == list(range(1, len(NAMES) + 1))
    assert [row["name"] for row in table] == [explanation.class_names[c] for c in order]
    assert table[0]["index"] == explanation.class_indices[order[0]]
    with pytest.raises(ValueError, match="not among the decoded classes"):
        explanation.rank_of("Vanessa cardui")


def test_head_order_without_measured_evidence_is_by_peak_attention(model, image):
    explanation = Explainer(model, "tiny").explain(image, "specimen", evidence=0)  # tests/test_head_evidence.py: with
    for layer in (0, -1):
        order = explanation.head_order("Morpho peleides", layer)
        peaks = explanation.head_maps("Morpho peleides", layer, "none").max(axis=(1, 2))
        assert sorted(order) == list(range(explanation.num_heads))
        assert np.all(np.diff(peaks[order]) <= 0)


def test_normalizations(explanation):
    raw = explanation.head_maps("Danaus plexippus", normalization="none")
    per_map = explanation.head_maps("Danaus plexippus", normalization="per_map")
    shared = explanation.head_maps("Danaus plexippus", normalization="shared")
    np.testing.assert_allclose(per_map.max(axis=(1, 2)), 1, rtol=1e-6)
    np.testing.assert_allclose(per_map.min(axis=(1, 2)), 0, atol=1e-7)
    assert shared.max() == pytest.approx(1) and shared.min() >= 0
    np.testing.assert_allclose(shared, raw / raw.max(), rtol=1e-6)
    np.testing.assert_allclose(explanation.mean_map("Danaus plexippus"), raw.mean(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="normalization must be one of"):
        explanation.head_maps("Danaus plexippus", normalization="softmax")
    with pytest.raises(ValueError, match="decoder has 2 layers"):
        explanation.head_maps("Danaus plexippus", layer=2)


@pytest.mark.parametrize("shape", [(90, 133), (100, 150), (64, 300)])
def test_grid_to_image_and_upsample_agree(model, shape):
    explanation = Explainer(model).explain(np.zeros(shape, np.uint8))
    h, w = explanation.attention.shape[-2:]
    (scale_y, scale_x), (shift_y, shift_x) = explanation.grid_to_image()
    # The maps cover the image up to the last, partly outside, cell.
    assert abs(h * scale_y - shape[0]) < scale_y and abs(w * scale_x - shape[1]) < scale_x
    for i, j in [(1, 1), (h // 2, w // 3), (h - 2, w - 2)]:  # edge cells plateau to the border
        one_hot = np.zeros((h, w), np.float32)
        one_hot[i, j] = 1
        upsampled = explanation.upsample(one_hot)
        assert upsampled.shape == shape
        peak = np.unravel_index(np.argmax(upsampled), shape)
        assert abs(peak[0] - (i * scale_y + shift_y)) <= 1 and abs(peak[1] - (j * scale_x + shift_x)) <= 1
    constant = explanation.upsample(np.full((3, h, w), 0.25, np.float32))
    assert constant.shape == (3, *shape)
    np.testing.assert_allclose(constant, 0.25, rtol=1e-6)


def test_layer_names_are_one_based_as_the_paper():
    assert layer_name("img", "Morpho peleides", 6, 3) == "img ◂ query peleides · L6 H3"
    assert layer_name("img", "Morpho peleides", 6, None) == "img ◂ query peleides · L6 mean"


def test_short_class_names_keep_the_part_that_tells_look_alikes_apart():
    from napari_intr.explanation import short_class_name
    rubra, alba = short_class_name("Heliconia synthetica-rubra"), short_class_name("Heliconia synthetica-alba")
    assert (rubra, alba) == ("synthetica-rubra", "synthetica-alba")
    assert layer_name("alba_0004", "Heliconia synthetica-rubra", 2, 4) == "alba_0004 ◂ query synthetica-rubra · L2 H4"
    for whole in ("Black-footed Albatross", "001.Black_footed_Albatross", "12", "Danaus"):
        assert short_class_name(whole) == whole


def test_huge_image_is_shrunk_with_a_note(model):
    huge = np.full((9000, 1500, 3), 200, np.uint8)
    explanation = Explainer(model).explain(huge, "scan")
    assert explanation.image_shape == (9000, 1500)
    assert explanation.notes and "9000×1500" in explanation.notes[0]
    (scale_y, scale_x), _ = explanation.grid_to_image()
    h, w = explanation.attention.shape[-2:]
    assert abs(h * scale_y - 9000) < scale_y and abs(w * scale_x - 1500) < scale_x
    with pytest.raises(ValueError, match=r"20000×300 px.*at most 7:1.*crop"):  # past the long-side cap
        Explainer(model).explain(np.full((20000, 300, 3), 200, np.uint8), "strip")


def test_shrinking_averages_blocks_on_the_preprocessing_scale():
    blocks = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4) * 10, np.ones((300, 300), np.uint8))
    shrunk, note = shrink_huge_image(blocks, short_side=128, max_side=224)
    assert note and shrunk.dtype == np.float32 and shrunk.shape == (1200 // 9, 1200 // 9)
    assert shrunk[0, 0] == pytest.approx(0) and shrunk[-1, -1] == pytest.approx(150 / 255)
    small = np.zeros((200, 200), np.uint8)
    assert shrink_huge_image(small, 128, 224) == (small, None)


@pytest.mark.parametrize("bad, message", [
    (np.full((64, 64), np.nan, np.float32), "NaN"),
    (np.zeros((20, 64), np.uint8), "at least 32 px"),
    (np.zeros((3, 64, 64), np.uint8), "channel-first"),
    (np.zeros((5, 64, 64), np.uint8), "2-D grey, RGB or RGBA"),
    (np.zeros((2, 64, 64, 3), np.uint8), "2-D grey, RGB or RGBA"),
    (np.zeros(64, np.uint8), "2-D grey, RGB or RGBA"),
    (np.full((2000, 2000), np.nan, np.float32), "NaN"),  # also after shrinking
    (np.ones((64, 64), np.complex64), "unsupported data type complex64"),
    (np.ones((2000, 2000), np.complex64), "unsupported data type complex64"),  # not shrunk to its real part
])
def test_bad_images_raise_clear_errors(model, bad, message):
    with pytest.raises(ValueError, match=message):
        Explainer(model).encode(bad)


def test_unknown_class_names_close_matches(model, image):
    with pytest.raises(ValueError, match="did you mean 'Morpho peleides'"):
        Explainer(model).explain(image, classes=["Morpho peleide"])
