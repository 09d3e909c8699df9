"""The frozen-backbone feature cache: what it stores, what it reuses, what it recomputes."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from intr_training import feature_cache
from intr_training.data import VariantDataset
from intr_training.engine import StepOptions
from intr_training.feature_cache import (
    CachedVariants,
    FeatureCache,
    FeatureLoader,
    collate_pending,
)
from intr_training.transforms import apply_variant, fixed_variants, resize_normalise
from napari_intr.collection.scan import read_image, scan_collection
from napari_intr.model import IntrConfig, build_model
from training_data import write_classes

CONFIG = IntrConfig.tiny(2, short_side=64, max_side=112)
# Cached vs uncached in bf16: weights to 5e-3 as in fp32 (measured 5e-4), losses to 1e-2 (measured 1.6e-3).
TOLERANCE_BF16, LOSS_TOLERANCE_BF16 = 5e-3, 1e-2


def cache_for(out, samples, model, variants):
    return FeatureCache.prepare(out, "train", samples, variants, CONFIG.max_side, model.backbone[0],
                                model.feature_stride, model.backbone.num_channels)


def collection_and_model(tmp_path, counts, augment):
    """A 72-px collection of `counts` images per class, a seeded tiny model in eval mode and its variants."""
    data = write_classes(tmp_path / "data", counts, size=72)
    samples = scan_collection(data, 0).train
    torch.manual_seed(0)
    model = build_model(CONFIG).eval()
    return samples, model, fixed_variants(CONFIG, model.feature_stride, augment)


def run_epoch(cache, samples, model, variants, epoch=1):
    dataset = CachedVariants(VariantDataset(samples, variants, CONFIG.max_side, seed=0), cache)
    dataset.set_epoch(epoch)
    loader = FeatureLoader(DataLoader(dataset, batch_size=3, collate_fn=collate_pending), cache,
                           model.backbone[0], StepOptions(torch.device("cpu")))
    return list(loader), loader.computed


def test_cache_fills_once_and_holds_the_backbone_features(tmp_path):
    samples, model, variants = collection_and_model(tmp_path, {"a": 4, "b": 3}, "multiscale")
    assert len(variants) == 4  # two scales x (plain, mirrored)
    cache, reused = cache_for(tmp_path / "run", samples, model, variants)
    assert reused == 0 and cache.filled() == 0
    batches, computed = run_epoch(cache, samples, model, variants)
    assert computed == len(samples) == cache.filled()
    assert all(batch.features for batch in batches)
    assert sum(len(batch.labels) for batch in batches) == len(samples)
    _, computed_again = run_epoch(cache, samples, model, variants)  # same epoch: same variants, all cached
    assert computed_again == 0

    for index in range(len(samples)):  # every stored map is the backbone's output
        for variant_index, variant in enumerate(variants):
            if not cache.has(index, variant_index):
                continue
            image = apply_variant(resize_normalise(read_image(samples[index][0]), variant.short_side,
                                                   CONFIG.max_side), variant)
            with torch.no_grad():
                expected, _ = model.backbone[0](image[None], torch.zeros(1, *image.shape[-2:], dtype=torch.bool))
            torch.testing.assert_close(cache.read(index, variant_index), expected[0], atol=1e-5, rtol=1e-4)


def test_changed_image_or_backbone_is_recomputed(tmp_path):
    samples, model, variants = collection_and_model(tmp_path, {"a": 3, "b": 3}, "flip")
    out = tmp_path / "run"
    cache, _ = cache_for(out, samples, model, variants)
    for epoch in (1, 2, 3, 4):
        run_epoch(cache, samples, model, variants, epoch)
    filled = cache.filled()
    slots = {(i, v) for i in range(len(samples)) for v in range(len(variants)) if cache.has(i, v)}
    cache.close()

    reopened, reused = cache_for(out, samples, model, variants)  # nothing changed: all reused in place
    assert reused == filled == reopened.filled()
    reopened.close()

    changed = samples[1][0]
    pixels = np.asarray(Image.open(changed)).copy()
    pixels[:20] = 255 - pixels[:20]
    Image.fromarray(pixels).save(changed)
    cache, reused = cache_for(out, samples, model, variants)
    stale = sum(1 for i, _ in slots if i == 1)
    assert stale and reused == filled - stale
    assert not any(cache.has(1, v) for v in range(len(variants)))
    assert all(cache.has(i, v) for i, v in slots if i != 1)
    run_epoch(cache, samples, model, variants, 1)
    for v in range(len(variants)):
        if cache.has(1, v):
            image = apply_variant(resize_normalise(read_image(changed), variants[v].short_side, CONFIG.max_side),
                                  variants[v])
            with torch.no_grad():
                expected, _ = model.backbone[0](image[None], torch.zeros(1, *image.shape[-2:], dtype=torch.bool))
            torch.testing.assert_close(cache.read(1, v), expected[0], atol=1e-5, rtol=1e-4)
    cache.close()

    with torch.no_grad():
        model.backbone[0].body[0][0].weight.mul_(1.01)  # new backbone weights: nothing is reused
    cache, reused = cache_for(out, samples, model, variants)
    assert reused == 0 and cache.filled() == 0


def test_a_step_from_the_cache_equals_a_step_through_the_backbone(tmp_path):
    """Same batch, same variants: the same logits and gradients (to float rounding)."""
    data = write_classes(tmp_path / "data", {"a": 4, "b": 4}, size=72)
    samples = scan_collection(data, 0).train
    torch.manual_seed(0)
    model = build_model(CONFIG.replace(dropout=0.0))
    model.backbone.requires_grad_(False)
    variants = fixed_variants(CONFIG, model.feature_stride, "multiscale")
    cache, _ = cache_for(tmp_path / "run", samples, model, variants)
    run_epoch(cache, samples, model, variants, epoch=5)  # fill the slots epoch 5 uses
    images = VariantDataset(samples, variants, CONFIG.max_side, seed=0)
    images.set_epoch(5)
    indices = [i for i in range(len(samples)) if variants[images.variant_of(i)].short_side == CONFIG.short_side]
    assert len(indices) >= 2
    batch_images = torch.stack([images[i][0] for i in indices])
    cached = torch.stack([cache.read(i, images.variant_of(i)) for i in indices])
    model.backbone.eval()
    results = []
    for inputs, from_features in ((batch_images, False), (cached, True)):
        model.zero_grad()
        mask = torch.zeros(len(inputs), *inputs.shape[-2:], dtype=torch.bool)
        logits = model(inputs, mask, return_attention=False, from_features=from_features).logits
        torch.nn.functional.cross_entropy(logits, torch.tensor([samples[i][1] for i in indices])).backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (logits_a, grads_a), (logits_b, grads_b) = results
    torch.testing.assert_close(logits_a, logits_b, atol=1e-5, rtol=1e-4)
    assert grads_a.keys() == grads_b.keys() and not any(name.startswith("backbone") for name in grads_a)
    flat_a, flat_b = (torch.cat([grads[name].flatten() for name in sorted(grads)]) for grads in (grads_a, grads_b))
    # gradients of near-equal logits amplify rounding (here ~1 %: float32, one image vs a batch)
    assert (flat_a - flat_b).norm() <= 0.05 * flat_a.norm()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_from_the_cache_equals_training_without_it(tmp_path, capsys, precision):
    """Whole runs, same seed: the same losses (to 1e-3 in fp32) and learning rates. (Not the validation
    accuracy: this barely trained model's logits are near-equal, so argmax ties flip either way.)
    Features can differ by float rounding (~1e-7; a GPU encodes the cache's images by shape and
    the uncached batches padded), which AdamW turns into steps of full size where a gradient is
    near zero, so weights agree to a few updates' size (lr 5e-4 here), not bit for bit. In bf16
    (autocast, as large CPU steps run) the backbone's features carry bf16 rounding (~0.4 %) both ways."""
    from safetensors.torch import load_file

    from intr_training import cli
    from training_data import FAST, json_events

    data = write_classes(tmp_path / "data", {"disc": 6, "diamond": 6, "third": 6})
    runs = {}
    for name, flag in (("cached", "--cache-features"), ("uncached", "--no-cache-features")):
        assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / name), *FAST, "--epochs", "2",
                         "--freeze", "backbone", "--augment", "multiscale", "--val-split", "0.34", flag,
                         "--precision", precision, "--progress", "json"]) == 0
        runs[name] = [e for e in json_events(capsys.readouterr().out) if e["event"] == "epoch"]
    assert (tmp_path / "cached" / "feature_cache" / "train.f32").is_file()
    assert not (tmp_path / "uncached" / "feature_cache").exists()
    cached, uncached = (load_file(tmp_path / name / "last.safetensors") for name in ("cached", "uncached"))
    tolerance = {"fp32": (5e-3, 1e-3), "bf16": (TOLERANCE_BF16, LOSS_TOLERANCE_BF16)}[precision]
    for key in cached:
        torch.testing.assert_close(cached[key], uncached[key], atol=tolerance[0], rtol=0, msg=key)
    for a, b in zip(runs["cached"], runs["uncached"], strict=True):
        assert abs(a["loss"] - b["loss"]) < tolerance[1] and a["lr"] == b["lr"]  # measured: ~3e-5 (fp32)


def filled_cache(tmp_path):
    """A run folder whose cache holds an epoch's features; its samples, model and variants."""
    samples, model, variants = collection_and_model(tmp_path, {"a": 2, "b": 2}, "flip")
    out = tmp_path / "run"
    cache, _ = cache_for(out, samples, model, variants)
    run_epoch(cache, samples, model, variants)
    assert cache.filled() > 0
    cache.close()
    return out, samples, model, variants


def test_features_of_another_precision_are_recomputed(tmp_path):
    out, samples, model, variants = filled_cache(tmp_path)
    again, reused = cache_for(out, samples, model, variants)
    assert reused == again.filled() > 0
    again.close()
    bf16, reused = FeatureCache.prepare(out, "train", samples, variants, CONFIG.max_side, model.backbone[0],
                                        model.feature_stride, model.backbone.num_channels, "bf16")
    assert reused == 0 and bf16.filled() == 0


def test_cache_flag_needs_a_frozen_backbone(tmp_path, capsys):
    from intr_training import cli
    from training_data import FAST

    data = write_classes(tmp_path / "data", {"disc": 3, "diamond": 3})
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *FAST, "--epochs", "1",
                     "--cache-features"]) == 2
    assert "--freeze backbone" in capsys.readouterr().err


def test_a_cache_the_disk_cannot_hold_is_refused_before_any_file_is_written(tmp_path, monkeypatch):
    samples, model, variants = collection_and_model(tmp_path, {"a": 2, "b": 2}, "flip")
    monkeypatch.setattr(feature_cache.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 100))
    with pytest.raises(ValueError, match="the feature cache needs .* GiB are free.*--no-cache-features"):
        cache_for(tmp_path / "run", samples, model, variants)
    assert not any((tmp_path / "run" / "feature_cache").iterdir())


def test_features_computed_another_way_are_recomputed(tmp_path, monkeypatch):
    """The fingerprint holds how features are computed (FEATURE_COMPUTATION: e.g. batch norm
    folded or not): a cache from another computation reuses nothing."""
    out, samples, model, variants = filled_cache(tmp_path)
    monkeypatch.setattr(feature_cache, "FEATURE_COMPUTATION", feature_cache.FEATURE_COMPUTATION + 1)
    again, reused = cache_for(out, samples, model, variants)
    assert reused == 0 and again.filled() == 0


@pytest.mark.parametrize("flag", ["--cache-features", "--no-cache-features"])
def test_frozen_runs_compute_features_with_the_folded_backbone(tmp_path, monkeypatch, flag):
    """With --freeze, cached or not, the features come from one batch-norm-folded copy of the
    backbone (model/backbone.py: folded_batch_norm); the model's own backbone never runs."""
    from intr_training import cli, training_run
    from napari_intr.model.backbone import Backbone, _is_batch_norm
    from training_data import FAST

    folded, callers = [], []
    fold, forward = training_run.folded_batch_norm, Backbone.forward

    def folding(backbone):
        folded.append(fold(backbone))
        return folded[-1]

    calibrating, calibrate = [], training_run.TrainingRun.calibrate

    def flagged_calibrate(self):  # the end of the run calibrates the SAVED model: not training's forward
        calibrating.append(True)
        return calibrate(self)

    def counted_forward(self, images, mask):
        if not calibrating:
            callers.append(self)
        return forward(self, images, mask)

    monkeypatch.setattr(training_run.TrainingRun, "calibrate", flagged_calibrate)
    monkeypatch.setattr(training_run, "folded_batch_norm", folding)
    monkeypatch.setattr(Backbone, "forward", counted_forward)
    data = write_classes(tmp_path / "data", {"disc": 3, "diamond": 3})
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *FAST, "--epochs", "1",
                     "--freeze", "backbone", "--val-split", "0.34", flag, "--progress", "none"]) == 0
    assert len(folded) == 1 and not any(_is_batch_norm(module) for module in folded[0].modules())
    assert callers and all(caller is folded[0] for caller in callers)


def test_a_cached_run_hashes_the_backbone_once(tmp_path, monkeypatch):
    """The train and validation caches share one fingerprint of the backbone's weights (hashing
    them is resnet50's ~100 MB read), computed once per run."""
    from intr_training import cli, training_run
    from training_data import FAST

    hashed = []
    fingerprint = training_run.backbone_fingerprint

    def counted(backbone):
        hashed.append(backbone)
        return fingerprint(backbone)

    monkeypatch.setattr(training_run, "backbone_fingerprint", counted)
    monkeypatch.setattr(feature_cache, "backbone_fingerprint", counted)
    data = write_classes(tmp_path / "data", {"disc": 3, "diamond": 3})
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *FAST, "--epochs", "1",
                     "--freeze", "backbone", "--val-split", "0.34", "--cache-features", "--progress", "none"]) == 0
    assert len(hashed) == 1
    assert (tmp_path / "run" / "feature_cache" / "val-rank0.json").is_file()
