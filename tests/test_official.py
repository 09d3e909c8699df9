"""Released INTR checkpoints (.pth) and DETR's COCO weights, built here in their exact layout."""
import os
import pickle

import pytest
import torch

from _intr_reference import (
    official_args,
    official_checkpoint,
    official_shapes,
    one_torch_thread,  # noqa: F401 (an autouse fixture)
    random_state,
    reference_forward,
)
from napari_intr.checkpoints import CheckpointError, load_state
from napari_intr.loading import load_model
from napari_intr.model import IntrConfig, build_model
from napari_intr.official import detr_initial_state, load_official

C = 5
SMALL = dict(backbone="resnet18", hidden_dim=32, nheads=8, enc_layers=1, dec_layers=1, dim_feedforward=64)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """An `intr_checkpoint_cub_detr_r50.pth` look-alike with 5 classes: state, args, path."""
    args = official_args()
    state = random_state(official_shapes(C))
    path = tmp_path_factory.mktemp("official") / "intr_checkpoint_cub_detr_r50.pth"
    torch.save(official_checkpoint(state, args), path)
    return state, args, path


def small_checkpoint(path, num_classes=C, drop=(), replace=None, claimed=None, **arg_overrides):
    """The same layout with a resnet18 and a one-layer transformer, for the cheap error cases.
    `claimed`: training arguments changed after the weights were made (a mismatching file)."""
    args = official_args(**{**SMALL, **arg_overrides})
    state = random_state(official_shapes(num_classes, args.backbone, args.hidden_dim, args.enc_layers,
                                         args.dec_layers, args.dim_feedforward), seed=1)
    for key in drop:
        del state[key]
    state.update(replace or {})
    for name, value in (claimed or {}).items():
        setattr(args, name, value)
    torch.save(official_checkpoint(state, args), path)
    return path


def test_official_checkpoint_matches_the_reference_implementation(official):
    state, args, path = official
    # fp32 on the inference path (batch norm folded, channels-last): the authors' numbers to 1e-4
    model = load_model(path, device="cpu", precision="fp32")
    assert model.inference.precision == "fp32"
    assert model.config == IntrConfig(num_classes=C)  # C read from query_embed.weight, the rest from args
    assert model.class_names == [f"class {i}" for i in range(C)]
    assert model.provenance["format"] == "official INTR checkpoint"
    body = model.backbone[0].body  # DETR trains layer2-4 only; loading keeps that
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad and model.query_embed.weight.requires_grad
    assert all(tensor.device.type == "cpu" for tensor in model.state_dict().values())

    image = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(image)
    logits, attention = reference_forward(state, args, image)
    assert ours.attention.shape == attention.shape == (6, 1, 8, C, 2, 3)
    torch.testing.assert_close(ours.logits, logits, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ours.attention, attention, atol=2e-6, rtol=1e-4)

    # the comparison is sharp enough to matter: classes differ by far more than the tolerance,
    # and so does DETR's variant with positions on the cross-attention keys
    assert logits.max() - logits.min() > 100 * 2e-5
    assert attention.flatten(-2).std(-1).mean() > 100 * 2e-6
    detr_logits, detr_attention = reference_forward(state, args, image, positions_on_cross_attention_keys=True)
    assert (detr_logits - logits).abs().max() > 100 * 2e-5
    assert (detr_attention - attention).abs().max() > 100 * 2e-6


def test_official_checkpoint_with_class_names(official, tmp_path):
    _, _, path = official
    names = tmp_path / "classes.txt"
    names.write_text("".join(f"{i} {i:03d}.Bird_{i}\n" for i in range(1, C + 1)))
    assert load_official(path, names).class_names == [f"Bird {i}" for i in range(1, C + 1)]
    names.write_text("a\nb\nc\nd\n")
    with pytest.raises(ValueError, match=r"4 class names were given but the model has 5 classes"):
        load_model(path, class_names=names, device="cpu")


def test_missing_and_misshaped_keys_are_listed(tmp_path):
    path = small_checkpoint(tmp_path / "a.pth", drop=["transformer.decoder.norm.weight",
                                                      "backbone.0.body.layer4.1.bn2.running_var"])
    with pytest.raises(CheckpointError, match=r"missing keys: backbone\.0\.body\.layer4\.1\.bn2\.running_var, "
                                              r"transformer\.decoder\.norm\.weight"):
        load_model(path, device="cpu")

    path = small_checkpoint(tmp_path / "b.pth", replace={"input_proj.weight": torch.zeros(32, 2048, 1, 1),
                                                         "presence_vector.weight": torch.zeros(2, 32)})
    with pytest.raises(CheckpointError) as error:
        load_official(path)
    message = str(error.value)
    assert "mis-shaped keys" in message
    assert "input_proj.weight [32, 2048, 1, 1] (expected [32, 512, 1, 1])" in message
    assert "presence_vector.weight [2, 32] (expected [1, 32])" in message

    path = small_checkpoint(tmp_path / "c.pth", replace={"class_embed.weight": torch.zeros(92, 32)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: class_embed\.weight"):
        load_official(path)

    path = small_checkpoint(tmp_path / "d.pth", drop=["query_embed.weight"])
    with pytest.raises(CheckpointError, match=r"no query_embed\.weight"):
        load_official(path)


def test_architectures_we_do_not_implement_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="pre-norm"):
        load_official(small_checkpoint(tmp_path / "a.pth", claimed={"pre_norm": True}))
    with pytest.raises(CheckpointError, match="dilated"):
        load_official(small_checkpoint(tmp_path / "b.pth", claimed={"dilation": True}))
    with pytest.raises(CheckpointError, match="resnet101"):
        load_official(small_checkpoint(tmp_path / "c.pth", claimed={"backbone": "resnet101"}))
    with pytest.raises(CheckpointError, match=r"unexpected keys: backbone\.1\.col_embed\.weight"):
        load_official(small_checkpoint(tmp_path / "d.pth", claimed={"position_embedding": "learned"},
                                       replace={"backbone.1.col_embed.weight": torch.zeros(50, 16),
                                                "backbone.1.row_embed.weight": torch.zeros(50, 16)}))


def test_small_layout_loads_and_runs(tmp_path):
    # some exports still carry BatchNorm's step counters; frozen BN has none, so they are ignored
    path = small_checkpoint(tmp_path / "small.pth", num_classes=7,
                            replace={"backbone.0.body.bn1.num_batches_tracked": torch.tensor(0)})
    model = load_model(path, device="cpu")
    assert model.config.num_classes == 7 and model.config.backbone == "resnet18"
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.logits.shape == (1, 7)


def test_truncated_and_foreign_files(official, tmp_path):
    data = official[2].read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"truncated"):
        load_model(truncated, device="cpu")
    for name, content in [("png.pth", b"\x89PNG\r\n\x1a\n" + bytes(200)), ("notes.pth", b"lr=1e-4\n"),
                          ("empty.pth", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=r"not a PyTorch checkpoint"):
            load_model(path, device="cpu")
    # a PyTorch file that holds something else
    other = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), other)
    with pytest.raises(CheckpointError, match=r"not an INTR/DETR checkpoint"):
        load_model(other, device="cpu")
    legacy_truncated = tmp_path / "legacy.pth"
    torch.save({"model": {"query_embed.weight": torch.zeros(3, 8)}}, legacy_truncated,
               _use_new_zipfile_serialization=False)
    legacy_truncated.write_bytes(legacy_truncated.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"truncated"):
        load_model(legacy_truncated, device="cpu")


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "intr_checkpoint_cub_detr_r50.pth"
    torch.save({"model": {"query_embed.weight": torch.zeros(3, 8)}, "args": RunsCode(marker)}, path)
    # the payload is real: an unrestricted load runs it
    proof = tmp_path / "proof"
    torch.save({"args": RunsCode(proof)}, tmp_path / "proof.pth")
    torch.load(tmp_path / "proof.pth", weights_only=False)
    assert proof.exists()
    for loader in (lambda: load_model(path, device="cpu"), lambda: load_official(path)):
        with pytest.raises(CheckpointError, match=r"refused.*could run code"):
            loader()
    assert not marker.exists()
    # a plain pickle file (no torch container) with the same payload is refused as well
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"model": RunsCode(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        load_model(raw, device="cpu")
    assert not marker.exists()


# ---------------------------------------------------------------- DETR initialisation

@pytest.fixture(scope="module")
def detr_file(tmp_path_factory):
    state = random_state(official_shapes(100, detr=True), seed=2)
    path = tmp_path_factory.mktemp("detr") / "detr-r50-e632da11.pth"
    torch.save({"model": state}, path)  # DETR's release holds the model only
    return state, path


@pytest.mark.parametrize("num_classes", [5, 150])
def test_detr_initial_state(detr_file, num_classes):
    detr, path = detr_file
    with torch.device("meta"):
        shapes = build_model(IntrConfig(num_classes=num_classes)).state_dict()
    model = build_model(IntrConfig(num_classes=num_classes))
    fresh_presence = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("presence_vector.")}
    state = detr_initial_state(path, model, generator=torch.Generator().manual_seed(0))

    assert set(state) == set(shapes)  # detection heads gone, nothing missing
    assert not any(key.startswith(("class_embed.", "bbox_embed.")) for key in state)
    model.load_state_dict(state, strict=True)
    load_state(model, state, path)

    queries = state["query_embed.weight"]
    assert queries.shape == (num_classes, 256)
    kept = min(num_classes, 100)
    assert torch.equal(queries[:kept], detr["query_embed.weight"][:kept])
    if num_classes > 100:
        extra = queries[100:] - detr["query_embed.weight"][: num_classes - 100]
        assert extra.abs().max() > 0  # noise, so the repeated queries are not exact copies
        assert extra.abs().max() < 0.1 * detr["query_embed.weight"].std()
    for key, value in fresh_presence.items():
        assert torch.equal(state[key], value)
    for key in ("backbone.0.body.layer3.2.bn2.running_var", "transformer.decoder.norm.bias", "input_proj.weight",
                "transformer.decoder.layers.5.multihead_attn.in_proj_weight"):
        assert torch.equal(model.state_dict()[key], detr[key])


def test_detr_initial_state_refuses_other_models(detr_file, tmp_path):
    _, path = detr_file
    with pytest.raises(CheckpointError, match="resnet50"):
        detr_initial_state(path, build_model(IntrConfig.tiny(5)))
    intr = small_checkpoint(tmp_path / "intr.pth", drop=["query_embed.weight"])
    with torch.device("meta"):
        model = build_model(IntrConfig(num_classes=5))
    with pytest.raises(CheckpointError, match="not a DETR-R50 checkpoint"):
        detr_initial_state(intr, model)
