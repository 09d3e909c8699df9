"""Local encoder attention (IntrConfig.encoder_window): the mask, and what it does to a model."""
import pytest
import torch

from napari_intr.model import IntrConfig, build_model
from napari_intr.model.local_attention import local_attention_mask


def test_the_window_is_a_square_of_cells_around_each_token():
    blocked = local_attention_mask((4, 5), 1)
    assert blocked.shape == (20, 20)
    allowed = ~blocked[2 * 5 + 2].reshape(4, 5)  # the token at row 2, column 2
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[1:4, 1:4] = True
    assert torch.equal(allowed, expected)
    corner = ~blocked[0].reshape(4, 5)
    assert int(corner.sum()) == 4 and bool(corner[:2, :2].all())  # cut at the grid's edge
    assert local_attention_mask((4, 5), 0) is None  # global, as the paper
    with pytest.raises(ValueError, match="window must be 0"):
        local_attention_mask((4, 5), -1)


def test_padding_joins_the_mask_and_leaves_no_token_without_keys():
    padding = torch.zeros(1, 3, 6, dtype=torch.bool)
    padding[:, :, 3:] = True  # the right half of the grid is padding
    blocked = local_attention_mask((3, 6), 1, padding_mask=padding.flatten(1))
    assert blocked.shape == (1, 1, 18, 18)
    assert not blocked[0, 0].all(dim=-1).any()  # every token keeps a key
    assert bool(blocked[0, 0, 2, 3])  # a real token never attends padding
    far_padded = 5  # row 0, column 5: its whole window is padding, so it attends itself only
    assert (~blocked[0, 0, far_padded]).nonzero().flatten().tolist() == [far_padded]


def test_a_local_encoder_keeps_far_tokens_unchanged():
    torch.manual_seed(0)
    config = IntrConfig.tiny(3, short_side=64, max_side=64, dropout=0.0)
    images = torch.randn(1, 3, 64, 64)
    changed = images.clone()
    changed[..., :8, :8] += 3.0  # only the top-left cell's pixels
    for window, far_unchanged in ((1, True), (0, False)):
        model = build_model(config.replace(encoder_window=window)).eval()
        with torch.inference_mode():
            before, after = model.encode(images).memory, model.encode(changed).memory
        far = (after - before)[0].reshape(8, 8, -1)[6:, 6:].abs().max()
        assert (float(far) < 1e-5) == far_unchanged  # 2 layers × 1 cell + the backbone's reach < 6 cells


def test_checkpoints_without_the_field_attend_globally():
    config = IntrConfig.from_json(IntrConfig.tiny(3).to_json().replace(', "encoder_window": 0', ""))
    assert config.encoder_window == 0
    with pytest.raises(ValueError, match="encoder_window must be 0 or more"):
        IntrConfig.tiny(3, encoder_window=-2)


def test_intr_train_shapes_new_models_only():
    from intr_training.initialization import initial_model

    generator = torch.Generator().manual_seed(0)
    start = initial_model("none", ["a", "b"], "tiny", 64, generator, encoder_window=1)
    assert start.model.config.encoder_window == 1
    assert initial_model("none", ["a", "b"], "tiny", 64, generator).model.config.encoder_window == 0
    with pytest.raises(ValueError, match="--encoder-window must be 0"):
        initial_model("none", ["a", "b"], "tiny", 64, generator, encoder_window=-1)
    with pytest.raises(ValueError, match="keeps its own encoder"):
        initial_model("sample", ["a", "b"], None, None, generator, encoder_window=1)
