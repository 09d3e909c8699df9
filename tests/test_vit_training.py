"""`intr train` on a foundation backbone (DINOv2 ViT-S/14 here, at 56 px: a 4x4 patch grid), and
the trained model in explain and atlas: weights from a hand-placed file with the network refused,
the recipe (frozen, cached), the checkpoint that records its backbone, maps on the patch grid."""
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _intr_reference import one_torch_thread  # noqa: F401 (an autouse fixture)
from intr_training import cli
from napari_intr import load_model, synth, zoo
from napari_intr.atlas import AtlasOptions, build_atlas
from napari_intr.explanation import Explainer
from napari_intr.model.vit_backbone import ViTBackbone
from training_data import json_events

BACKBONE = "dinov2-vits14"
SMALL = ["--backbone", BACKBONE, "--image-size", "56", "--batch-size", "4", "--workers", "0", "--seed", "0"]


def refuse_network(monkeypatch, cache):
    monkeypatch.setenv(zoo.CACHE_ENV, str(cache))

    def offline(*args, **kwargs):
        raise ConnectionError("no network")
    monkeypatch.setattr("pooch.retrieve", offline)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.write_collection(root, per_class=3, size=64, seed=5)
    return root


@pytest.fixture(scope="module")
def trained(collection, tmp_path_factory):
    """A run from DINOv2 weights (random ones, in the torch-hub layout) placed in the model cache
    by hand, with every download refused. Returns the run folder and the weights."""
    base = tmp_path_factory.mktemp("vit-run")
    cache, out = base / "cache", base / "run"
    cache.mkdir()
    torch.manual_seed(7)
    weights = {key: value.clone() for key, value in ViTBackbone(BACKBONE).body.state_dict().items()}
    torch.save({**weights, "mask_token": torch.zeros(1, 384)}, cache / zoo.entry(BACKBONE).filename)
    with pytest.MonkeyPatch.context() as monkeypatch:
        refuse_network(monkeypatch, cache)
        assert cli.main(["train", "--data", str(collection), "--out", str(out), *SMALL, "--epochs", "1",
                         "--progress", "none"]) == 0
    return out, cache, weights


def test_a_run_on_published_weights_is_frozen_cached_and_records_its_backbone(trained, monkeypatch):
    out, cache, weights = trained
    assert (out / "feature_cache" / "train.f32").is_file()  # the recipe: frozen, features cached
    refuse_network(monkeypatch, cache)
    model = load_model(out / "model.safetensors", device="cpu")
    assert model.config.backbone == BACKBONE and model.config.short_side == 56
    assert model.feature_stride == 14
    for key, value in model.backbone[0].body.state_dict().items():  # frozen: the file's weights
        assert torch.equal(value, weights[key]), key
    assert zoo._sha256(cache / zoo.entry(BACKBONE).filename) in model.provenance["init"]
    saved = load_file(out / "model.safetensors")
    assert saved["backbone.0.body.pos_embed"].shape == weights["pos_embed"].shape


@pytest.mark.parametrize("shape", [(50, 75), (97, 64), (64, 64)])
def test_maps_sit_on_the_patch_grid_of_the_image(trained, shape):
    """An image of any size is resized to the 56-px short side (the long side not a multiple of
    14 but for the square): the maps have ceil(side / 14) cells, each covering 14 input px, so
    that the cell under an image pixel is the patch of the model input that holds that pixel."""
    model = load_model(trained[0] / "model.safetensors", device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    explanation = Explainer(model).explain(image)
    input_h, input_w = explanation.input_shape
    assert min(input_h, input_w) == 56
    cells = explanation.attention.shape[-2:]
    assert cells == (math.ceil(input_h / 14), math.ceil(input_w / 14))
    (scale_y, scale_x), (shift_y, shift_x) = explanation.grid_to_image()
    assert scale_y == pytest.approx(14 * shape[0] / input_h) and scale_x == pytest.approx(14 * shape[1] / input_w)
    for y, x in ((0, 0), (shape[0] - 1, shape[1] - 1), (shape[0] // 2, shape[1] // 3)):
        # napari draws cell (i, j) over image pixels [i * scale - 0.5 + shift - (scale - 1) / 2 ...]:
        # the cell whose span holds the pixel centre is the patch holding its input pixel
        cell = (math.floor((y + 0.5) / scale_y), math.floor((x + 0.5) / scale_x))
        patch = (math.floor((y + 0.5) * input_h / shape[0]) // 14, math.floor((x + 0.5) * input_w / shape[1]) // 14)
        assert cell == patch and cell[0] < cells[0] and cell[1] < cells[1]
    assert shift_y == pytest.approx((scale_y - 1) / 2)
    sums = explanation.attention.sum(axis=(-2, -1))
    np.testing.assert_allclose(sums, 1, atol=1e-4)


def test_the_atlas_runs_on_a_vit_model(trained, collection, tmp_path):
    model = load_model(trained[0] / "model.safetensors", device="cpu")
    result = build_atlas(model, "vit", collection, tmp_path, AtlasOptions(per_head=1))
    assert result.total == 27 and result.atlas.images == 27
    assert (tmp_path / "atlas.html").is_file()


def test_a_cached_run_equals_an_uncached_run(collection, tmp_path, capsys):
    """Random ViT weights (--init none, same seed), frozen: the same losses and weights with and
    without the cache (fp32; tolerances as test_feature_cache's)."""
    runs = {}
    for name, flag in (("cached", "--cache-features"), ("uncached", "--no-cache-features")):
        assert cli.main(["train", "--data", str(collection), "--out", str(tmp_path / name), *SMALL, "--init", "none",
                         "--epochs", "2", "--freeze", "backbone", flag, "--precision", "fp32",
                         "--progress", "json"]) == 0
        runs[name] = [e for e in json_events(capsys.readouterr().out) if e["event"] == "epoch"]
    assert (tmp_path / "cached" / "feature_cache" / "train.f32").is_file()
    assert not (tmp_path / "uncached" / "feature_cache").exists()
    cached, uncached = (load_file(tmp_path / name / "last.safetensors") for name in ("cached", "uncached"))
    for key in cached:
        torch.testing.assert_close(cached[key], uncached[key], atol=5e-3, rtol=0, msg=key)
    for a, b in zip(runs["cached"], runs["uncached"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-3 and a["lr"] == b["lr"]


def test_offline_without_weights_names_the_file_and_where_to_put_it(collection, tmp_path, monkeypatch, capsys):
    refuse_network(monkeypatch, tmp_path / "cache")
    assert cli.main(["train", "--data", str(collection), "--out", str(tmp_path / "run"), *SMALL,
                     "--epochs", "1", "--progress", "none"]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "cache" / "dinov2_vits14_pretrain.pth") in error
    assert "dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth" in error


def test_bad_vit_settings_get_clear_messages(collection, tmp_path, capsys):
    base = ["train", "--data", str(collection), "--out", str(tmp_path / "run"), "--backbone", BACKBONE,
            "--epochs", "1", "--progress", "none"]
    assert cli.main([*base, "--image-size", "50"]) == 2
    assert "must be a multiple of 14 px (the patch size) for dinov2-vits14, got 50: try 56" in capsys.readouterr().err
    assert cli.main([*base, "--backbone-weights", str(tmp_path / "absent.pth")]) == 2
    assert "no backbone weights file at" in capsys.readouterr().err
    assert cli.main([*base, "--init", "none", "--backbone-weights", str(tmp_path / "absent.pth")]) == 2
    assert "--backbone-weights is for --init pretrained" in capsys.readouterr().err
    assert cli.main([*base[:-6], "--backbone", "tiny", "--init", "pretrained", "--epochs", "1"]) == 2
    assert "--init pretrained fits the foundation backbones" in capsys.readouterr().err
