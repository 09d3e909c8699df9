"""The CPU dropout (model/dropout.py): torch's dropout, drawn faster."""
import pytest
import torch

from napari_intr.model import IntrConfig, build_model
from napari_intr.model.attention import MultiheadAttention
from napari_intr.model.dropout import LEVELS, Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keeps_one_minus_p_and_scales_by_its_inverse(p, dtype):
    torch.manual_seed(0)
    n = 400_003  # not a multiple of the 4 draws per 64 random bits
    out = dropout(torch.ones(n, dtype=dtype), p, True)
    assert out.dtype == dtype
    kept = out != 0
    share = kept.double().mean().item()
    assert abs(share - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    scale = torch.tensor(LEVELS / (LEVELS - round(p * LEVELS)), dtype=dtype)
    assert torch.equal(out[kept], scale.expand(int(kept.sum())))
    assert abs(1 / scale.double().item() - (1 - p)) < 0.004  # bf16 rounds the scale; p itself to 1/65536


def test_the_random_bits_are_uniform():
    torch.manual_seed(0)
    out = dropout(torch.ones(64, 4096), 0.25, True)
    # each of the 4 elements that share one 64-bit draw keeps with probability 0.75
    per_lane = (out != 0).view(-1, 4).double().mean(0)
    assert torch.all((per_lane - 0.75).abs() < 0.01)


def test_identity_in_evaluation_and_at_zero():
    x = torch.randn(5, 7)
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    layer = Dropout(0.1).eval()
    assert layer(x) is x


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(1000, 33, requires_grad=True)
    out = dropout(x, 0.2, True)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, out.detach() / x.detach())


def test_deterministic_under_the_seed():
    x = torch.randn(300, 300)
    torch.manual_seed(3)
    a = dropout(x, 0.1, True)
    torch.manual_seed(3)
    b = dropout(x, 0.1, True)
    c = dropout(x, 0.1, True)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_attention_with_dropout_on_the_cpu_drops_its_weights():
    """Training with dropout on the CPU computes attention explicitly and drops weights: the
    output is the dropped weights times the values; evaluation is the fused kernel's result."""
    torch.manual_seed(0)
    attention = MultiheadAttention(16, 2, dropout=0.3)
    query, key = torch.randn(2, 5, 16), torch.randn(2, 9, 16)
    with torch.no_grad():
        evaluated, _ = attention.eval()(query, key, key)
        _, weights = attention(query, key, key, need_weights=True)
        torch.manual_seed(1)
        trained, returned = attention.train()(query, key, key)
        torch.manual_seed(1)
        _, v = attention.project_key_value(key, key)
        expected = attention.out_proj((dropout(weights, 0.3, True) @ v).transpose(1, 2).flatten(2))
    assert returned is None
    torch.testing.assert_close(trained, expected)
    assert not torch.allclose(trained, evaluated)


def test_the_transformer_uses_it_and_set_dropout_reaches_it():
    from intr_training.initialization import set_dropout
    model = build_model(IntrConfig.tiny(3))
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert layers and all(isinstance(m, Dropout) for m in layers)
    set_dropout(model, 0.0)
    assert all(m.p == 0.0 for m in layers)
