"""Learned null keys in cross-attention (IntrConfig.null_keys) and fewer encoder layers (issue 21):
attention on the null keys is reported as "looks at nothing", never drawn as a pixel."""
import numpy as np
import pytest
import torch

from napari_intr.explanation import Explainer
from napari_intr.export import explanation_metadata
from napari_intr.head_evidence import ON_REGISTERS
from napari_intr.model import IntrConfig, build_model

CONFIG = IntrConfig.tiny(3, short_side=64, max_side=64, dropout=0.0, dec_layers=1, null_keys=2)


def model_that_looks_at_nothing(config: IntrConfig = CONFIG):
    """A model whose class 0 puts nearly all of each head's layer-1 attention on null key 0: its key
    is made a large multiple of class 0's query (captured on a first decode)."""
    torch.manual_seed(0)
    model = build_model(config).eval()
    image = torch.randn(1, 3, 64, 64)
    queries = []
    attention = model.transformer.decoder.layers[0].multihead_attn
    hook = attention.register_forward_pre_hook(lambda module, args: queries.append(args[0].detach()))
    with torch.inference_mode():
        model.decode(model.encode(image))
    hook.remove()
    w_q, w_k, _ = attention.in_proj_weight.detach().chunk(3)
    b_q, b_k, _ = attention.in_proj_bias.detach().chunk(3)
    wanted_key = 50.0 * (queries[0][0, 0] @ w_q.T + b_q)  # class 0's query, per head, scaled up
    with torch.no_grad():
        model.transformer.decoder.layers[0].null_memory[0] = torch.linalg.solve(w_k, wanted_key - b_k)
    return model, image


def test_null_key_attention_is_reported_and_never_a_pixel():
    model, image = model_that_looks_at_nothing()
    with torch.inference_mode():
        encoded = model.encode(image)
        output = model.decode(encoded)
    grid = encoded.grid
    assert output.attention.shape == (1, 1, CONFIG.nheads, 3, *grid)  # pixels only, no extra cells
    assert output.null_attention.shape == (1, 1, CONFIG.nheads, 3)
    total = output.attention.sum(dim=(-1, -2)) + output.null_attention
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    assert bool((output.null_attention[0, 0, :, 0] > 0.99).all())  # class 0 looks at nothing
    assert float(output.attention[0, 0, :, 0].sum(dim=(-1, -2)).max()) < 0.01  # and is not drawn anywhere

    explanation = Explainer(model).explain(image[0].permute(1, 2, 0).numpy(), classes=[0, 1, 2])
    assert explanation.looks_at_nothing.shape == (1, CONFIG.nheads, 3)
    # the Explainer preprocesses the pixels itself (a float image is stretched): close, not equal
    np.testing.assert_allclose(explanation.looks_at_nothing, output.null_attention[:, 0].numpy(), atol=2e-3)
    assert (explanation.looks_at_nothing[0, :, 0] > 0.99).all()
    maps = explanation.layer_maps(-1)
    assert maps.shape[-2:] == grid
    np.testing.assert_allclose(maps.sum(axis=(-1, -2)) + explanation.looks_at_nothing[0], 1.0, atol=1e-5)


def test_heads_that_look_at_nothing_are_flagged_never_shown_first():
    model, image = model_that_looks_at_nothing()
    explanation = Explainer(model).explain(image[0].permute(1, 2, 0).numpy(), classes=[0, 1, 2], evidence=[0])
    found = explanation.evidence[(0, explanation.column(model.class_names[0]))]
    assert all(flag == ON_REGISTERS for flag in found.flags)
    name = model.class_names[0]
    assert (explanation.nothing_share(name) > 0.99).all()
    written = explanation_metadata(explanation, name, -1)["looks_at_nothing"]  # the TIFF's description
    assert len(written) == CONFIG.nheads and min(written) > 0.99
    plain = Explainer(build_model(IntrConfig.tiny(3, short_side=64, max_side=64)).eval()).explain(
        image[0].permute(1, 2, 0).numpy())
    assert plain.nothing_share(plain.class_names[0]) is None
    assert explanation_metadata(plain, plain.class_names[0], -1)["looks_at_nothing"] is None


def test_no_null_keys_leaves_the_papers_shape_and_state():
    model = build_model(IntrConfig.tiny(3))
    assert not any("null_memory" in name for name in model.state_dict())
    config = IntrConfig.from_json(IntrConfig.tiny(3).to_json().replace(', "null_keys": 0', ""))
    assert config.null_keys == 0  # checkpoints written before the field
    with torch.inference_mode():
        output = model.eval().decode(model.encode(torch.randn(1, 3, 64, 64)))
    assert output.null_attention is None
    with pytest.raises(ValueError, match="null_keys must be 0 or more"):
        IntrConfig.tiny(3, null_keys=-1)


@pytest.mark.parametrize("enc_layers", [0, 1])
def test_fewer_encoder_layers_keep_far_tokens_local(enc_layers):
    """With no encoder layer the decoder reads the backbone's projected features: a change in one
    corner cell reaches no far token (the convolutions' reach only)."""
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(3, short_side=64, max_side=64, enc_layers=enc_layers)).eval()
    images = torch.randn(1, 3, 64, 64)
    changed = images.clone()
    changed[..., :8, :8] += 3.0
    with torch.inference_mode():
        far = (model.encode(changed).memory - model.encode(images).memory)[0].reshape(8, 8, -1)[6:, 6:]
    assert (float(far.abs().max()) < 1e-5) == (enc_layers == 0)


def test_intr_train_shapes_new_models_with_these_options_only():
    from intr_training.initialization import initial_model

    generator = torch.Generator().manual_seed(0)
    config = initial_model("none", ["a", "b"], "tiny", 64, generator, enc_layers=0, null_keys=3).model.config
    assert (config.enc_layers, config.null_keys) == (0, 3)
    with pytest.raises(ValueError, match="--enc-layers must be"):
        initial_model("none", ["a", "b"], "tiny", 64, generator, enc_layers=-1)
    with pytest.raises(ValueError, match="--null-keys must be"):
        initial_model("none", ["a", "b"], "tiny", 64, generator, null_keys=100)
    with pytest.raises(ValueError, match="--null-keys shapes a new model"):
        initial_model("sample", ["a", "b"], None, None, generator, null_keys=1)
