"""benchmarks/tiny_grid.py's stride-4 tiny backbone: a 32x32 grid at 128 px inside its context,
the product's stride-8 backbone (16x16) untouched outside it. No training, no timing."""
import torch

import tiny_grid  # benchmarks/ is on the tests' pythonpath (pyproject.toml)
from napari_intr.model import IntrConfig, build_model
from napari_intr.model.config import BACKBONE_FEATURES


def test_the_stride_4_variant_has_a_finer_grid_and_leaves_the_tiny_backbone_as_it_was():
    names = ["a", "b", "c"]
    inputs = torch.zeros(1, 3, 128, 128)
    with tiny_grid.stride_4_tiny():
        finer = build_model(IntrConfig.tiny(3), names).eval()
    plain = build_model(IntrConfig.tiny(3), names).eval()
    with torch.inference_mode():
        assert finer(inputs).attention.shape[-2:] == (32, 32)
        assert plain(inputs).attention.shape[-2:] == (16, 16)
    assert (finer.feature_stride, plain.feature_stride) == (4, 8)
    assert BACKBONE_FEATURES["tiny"] == (128, 8)
    # same tensors, other strides: why the variant's checkpoints must stay inside the benchmark
    assert {k: v.shape for k, v in finer.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
