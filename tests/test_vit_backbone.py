"""Foundation ViT backbones (model/vit_backbone.py) and their published weights (backbone_weights.py).

No published weights can be downloaded here: every check runs on random weights, and the three
published layouts (DINOv2's torch hub, timm's, BioCLIP 2's open_clip) are written by the test
from a random model. ViT-L/14 (300 M parameters) is built once, on the meta device and filled
with random numbers (timm's own initialisation takes ~9 s here), and run on small inputs."""
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from _intr_reference import one_torch_thread  # noqa: F401 (an autouse fixture)
from napari_intr import zoo
from napari_intr.backbone_weights import BackboneWeightsError, load_backbone_weights, weights_file
from napari_intr.model.config import VIT_BACKBONES, IntrConfig
from napari_intr.model.vit_backbone import ViTBackbone

SMALL = ("dinov2-vits14", "dinov2-vits14-reg", "dinov2-vitb14", "dinov2-vitb14-reg")


def random_backbone(name: str, seed: int = 0, depth: int | None = None) -> ViTBackbone:
    """The backbone with random weights: built on the meta device, then filled (fast for ViT-L).
    depth: keep only the first `depth` transformer blocks."""
    with torch.device("meta"):
        backbone = ViTBackbone(name)
    if depth is not None:
        backbone.body.blocks = backbone.body.blocks[:depth]
    backbone.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in backbone.state_dict().items():
            base = 1.0 if key.endswith("norm1.weight") or key.endswith("norm2.weight") or key.endswith(
                "norm.weight") or key.endswith("norm_pre.weight") else 0.0
            tensor.normal_(base, 0.02, generator=generator)
    return backbone.eval()


@pytest.fixture(scope="module")
def backbones() -> dict[str, ViTBackbone]:
    return {name: random_backbone(name) for name in VIT_BACKBONES}


def reference_features(backbone: ViTBackbone, images: torch.Tensor) -> torch.Tensor:
    """timm's own forward_features, its patch tokens laid on the grid by hand."""
    vit = backbone.body
    if backbone.renormalise:
        from napari_intr.model.vit_backbone import CLIP_MEAN, CLIP_STD
        from napari_intr.preprocess import IMAGENET_MEAN, IMAGENET_STD
        pixels = images * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        images = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    tokens = vit.forward_features(images)
    prefix = 1 + (vit.reg_token.shape[1] if vit.reg_token is not None else 0)
    height, width = images.shape[-2] // 14, images.shape[-1] // 14
    return tokens[:, prefix:].reshape(len(images), height, width, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", VIT_BACKBONES)
def test_features_are_timms_patch_tokens_at_two_sizes(backbones, name):
    backbone = backbones[name]
    for height, width in ((28, 42), (56, 70)):
        images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height))
        mask = torch.zeros(2, height, width, dtype=torch.bool)
        with torch.no_grad():
            features, feature_mask = backbone(images, mask)
            expected = reference_features(backbone, images)
        assert features.shape == (2, backbone.num_channels, height // 14, width // 14)
        assert not feature_mask.any()
        torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


def test_padded_batch_gives_each_image_its_own_features(backbones):
    """Images of different sizes in one padded batch: each gets the features it has alone (the
    ViT never sees the padding), on ceil(size / 14) cells, the rest masked."""
    backbone = backbones["dinov2-vits14-reg"]
    sizes = [(40, 60), (70, 30), (40, 60)]
    generator = torch.Generator().manual_seed(1)
    alone = [torch.randn(1, 3, h, w, generator=generator) for h, w in sizes]
    batch = torch.zeros(3, 3, 70, 60)
    mask = torch.ones(3, 70, 60, dtype=torch.bool)
    for i, (image, (h, w)) in enumerate(zip(alone, sizes)):
        batch[i, :, :h, :w], mask[i, :h, :w] = image[0], False
    with torch.no_grad():
        features, feature_mask = backbone(batch, mask)
        assert features.shape[-2:] == (5, 5)
        for i, (image, (h, w)) in enumerate(zip(alone, sizes)):
            cells = (math.ceil(h / 14), math.ceil(w / 14))
            single, single_mask = backbone(image, torch.zeros(1, h, w, dtype=torch.bool))
            assert single.shape[-2:] == cells and not single_mask.any()
            torch.testing.assert_close(features[i, :, :cells[0], :cells[1]], single[0], atol=1e-5, rtol=0)
            assert not feature_mask[i, :cells[0], :cells[1]].any()
            assert feature_mask[i].sum() == 25 - cells[0] * cells[1]
            assert (features[i][:, feature_mask[i]] == 0).all()
    with pytest.raises(ValueError, match="all padding"):
        backbone(batch, torch.ones(3, 70, 60, dtype=torch.bool))


def test_feature_cells_sit_on_the_patch_grid():
    """With the transformer blocks taken out, a token depends on its own patch only: changing
    the pixels of input patch (i, j) changes feature cell (i, j) and no other, at a size that is
    not a multiple of 14 (the last row and column are partial patches)."""
    backbone = random_backbone("dinov2-vits14")
    backbone.body.blocks = torch.nn.Sequential()
    height, width = 45, 61  # 4 x 5 cells, the last ones partial
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    with torch.no_grad():
        before, _ = backbone(image, mask)
        assert before.shape[-2:] == (4, 5)
        for y, x in ((0, 0), (20, 50), (44, 60), (30, 13)):
            changed = image.clone()
            changed[..., y, x] += 5
            after, _ = backbone(changed, mask)
            moved = (after - before).abs().amax(dim=1)[0] > 1e-4
            assert moved.nonzero().tolist() == [[y // 14, x // 14]]


def to_dinov2_hub(vit, generator) -> dict:
    """timm's state dict -> DINOv2's official torch-hub layout (the inverse of timm's conversion:
    registers as `register_tokens`, the class token's position inside `pos_embed`, a mask token)."""
    state = {key: value.clone() for key, value in vit.state_dict().items()}
    dim = state["cls_token"].shape[-1]
    state["mask_token"] = torch.randn(1, dim, generator=generator)
    if "reg_token" in state:
        class_position = torch.randn(1, 1, dim, generator=generator)
        state["register_tokens"] = state.pop("reg_token")
        state["cls_token"] = state["cls_token"] - class_position
        state["pos_embed"] = torch.cat([class_position, state["pos_embed"]], dim=1)
    return state


def to_open_clip(vit, generator) -> dict:
    """timm's CLIP image tower -> open_clip's full CLIP layout, as BioCLIP 2 publishes it: key by
    key as open_clip's VisionTransformer names them, with a text tower beside it."""
    state = vit.state_dict()
    dim = state["cls_token"].shape[-1]
    out = {"visual.conv1.weight": state["patch_embed.proj.weight"],
           "visual.class_embedding": state["cls_token"][0, 0],
           "visual.positional_embedding": state["pos_embed"][0],
           "visual.ln_pre.weight": state["norm_pre.weight"], "visual.ln_pre.bias": state["norm_pre.bias"],
           "visual.ln_post.weight": state["norm.weight"], "visual.ln_post.bias": state["norm.bias"],
           "visual.proj": torch.randn(dim, 768, generator=generator),
           "token_embedding.weight": torch.randn(10, 768, generator=generator),
           "transformer.resblocks.0.attn.in_proj_weight": torch.randn(3 * 768, 768, generator=generator),
           "text_projection": torch.randn(768, 768, generator=generator), "logit_scale": torch.tensor(4.6)}
    names = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv.": "attn.in_proj_", "attn.proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for key, value in state.items():
        if key.startswith("blocks."):
            block, rest = key[len("blocks."):].split(".", 1)
            for timm_name, clip_name in names.items():
                rest = rest.replace(timm_name, clip_name)
            out[f"visual.transformer.resblocks.{block}.{rest}"] = value
    return out


def check_same_features(source: ViTBackbone, path, name: str) -> None:
    with torch.device("meta"):
        loaded = ViTBackbone(name)
    loaded.body.blocks = loaded.body.blocks[:len(source.body.blocks)]
    load_backbone_weights(loaded, path)
    images = torch.randn(1, 3, 42, 56, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 42, 56, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(images, mask)[0], source(images, mask)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["dinov2-vits14", "dinov2-vits14-reg"])
def test_dinov2_hub_files_load_to_identical_features(backbones, tmp_path, name):
    path = tmp_path / "dinov2_pretrain.pth"
    torch.save(to_dinov2_hub(backbones[name].body, torch.Generator().manual_seed(4)), path)
    check_same_features(backbones[name], path, name)


def test_timm_files_load_to_identical_features(backbones, tmp_path):
    name = "dinov2-vitb14-reg"
    path = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in backbones[name].body.state_dict().items()}, str(path))
    check_same_features(backbones[name], path, name)


def test_bioclip2_open_clip_files_load_to_identical_features(tmp_path):
    """ViT-L/14 with 3 of its 24 blocks (the file's every other key, and the conversion, as the
    full model's; writing and reading 1.2 GB would take most of this file's time)."""
    name = "bioclip2-vitl14"
    source = random_backbone(name, seed=5, depth=3)
    state = to_open_clip(source.body, torch.Generator().manual_seed(5))
    assert not any(key.startswith("visual.trunk") for key in state)  # open_clip's own ViT, not timm's
    path = tmp_path / "open_clip_model.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    check_same_features(source, path, name)


def test_wrong_or_unsafe_files_are_refused_with_a_message(backbones, tmp_path):
    other = tmp_path / "vits.safetensors"
    save_file({key: value.contiguous() for key, value in backbones["dinov2-vits14"].body.state_dict().items()},
              str(other))
    with torch.device("meta"):
        base = ViTBackbone("dinov2-vitb14")
    with pytest.raises(BackboneWeightsError, match="does not hold the weights of this backbone.*shapes differ"):
        load_backbone_weights(base, other)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"weights": torch.zeros(2), "code": F.relu}, unsafe)  # a pickled function
    with pytest.raises(BackboneWeightsError, match="could not be read as weights"):
        load_backbone_weights(base, unsafe)
    with pytest.raises(BackboneWeightsError, match="no backbone weights file at"):
        weights_file("dinov2-vitb14", tmp_path / "absent.pth")
    with pytest.raises(BackboneWeightsError, match="has no published weights"):
        weights_file("resnet50")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(zoo.CACHE_ENV, str(folder))

    def offline(*args, **kwargs):
        raise ConnectionError("no network")
    monkeypatch.setattr("pooch.retrieve", offline)
    return folder


def test_offline_message_names_the_file_and_where_to_put_it(cache):
    with pytest.raises(zoo.ZooError) as error:
        weights_file("dinov2-vits14-reg")
    message = str(error.value)
    expected = cache / "dinov2_vits14_reg4_pretrain.pth"
    assert str(expected) in message and zoo.entry("dinov2-vits14-reg").url in message
    assert "copy the file to" in message


def test_hand_placed_file_is_used_and_checked_against_a_given_hash(cache, backbones):
    import hashlib
    cache.mkdir()
    placed = cache / zoo.entry("dinov2-vits14").filename
    torch.save(to_dinov2_hub(backbones["dinov2-vits14"].body, torch.Generator().manual_seed(6)), placed)
    assert weights_file("dinov2-vits14") == placed  # no download: pooch.retrieve would raise
    assert not (cache / (placed.name + ".sha256")).exists()  # trusted once it loads (intr train)
    zoo.trust(placed)
    assert (cache / (placed.name + ".sha256")).read_text().strip() == hashlib.sha256(placed.read_bytes()).hexdigest()
    with pytest.raises(zoo.ZooError, match="is not the file expected for dinov2-vits14"):
        weights_file("dinov2-vits14", sha256="0" * 64)
    assert weights_file("dinov2-vits14", sha256=hashlib.sha256(placed.read_bytes()).hexdigest()) == placed
    with pytest.raises(zoo.ZooError, match="64 hexadecimal digits"):
        weights_file("dinov2-vits14", sha256="abc")


def test_configs_default_per_backbone_and_old_configs_are_unchanged():
    for name in VIT_BACKBONES:
        config = IntrConfig.for_backbone(name, 5)
        assert config.short_side % 14 == 0 and config.short_side == 224
    assert IntrConfig.for_backbone("resnet50", 5) == IntrConfig(num_classes=5)
    assert IntrConfig.for_backbone("tiny", 5) == IntrConfig.tiny(5)
