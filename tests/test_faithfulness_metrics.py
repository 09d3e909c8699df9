"""Faithfulness metrics on constructed cases with known answers (no INTR needed), then the
methods and the randomisation cascade on a tiny INTR model."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_intr.faithfulness import metrics, sanity
from napari_intr.faithfulness.flips import background_disc
from napari_intr.faithfulness.methods import INTR_HEAD_MEAN, INTR_TOP_HEAD, ClassScore, grad_cam, intr_maps, rise
from napari_intr.model import IntrConfig, build_model

SIZE = 32
REGION = (slice(8, 16), slice(12, 20))


class RegionModel(nn.Module):
    """A 'classifier' whose class probability depends only on the mean of one known region."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(8.0))

    def forward(self, images):
        mean = images[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))
        return torch.sigmoid(self.gain * (mean - 2.5))


def region_mask():
    mask = np.zeros((SIZE, SIZE), bool)
    mask[REGION] = True
    return mask


def image_with_region(seed=0):
    image = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 0.3
    image[:, REGION[0], REGION[1]] = 3.0
    return image


def test_auc_of_a_constant_curve_is_the_constant():
    for value, points in ((0.0, 2), (0.37, 11), (1.0, 51)):
        assert metrics.auc(np.full(points, value)) == pytest.approx(value)


def test_auc_is_the_trapezoid_rule_on_the_unit_interval():
    assert metrics.auc(np.linspace(0, 1, 7)) == pytest.approx(0.5)  # y = x, exact for the trapezoid rule
    x = np.linspace(0, 1, 5)
    # x² at 0, .25, .5, .75, 1: h/2 (y0 + 2 y1 + 2 y2 + 2 y3 + y4) = 0.125 (0 + .125 + .5 + 1.125 + 1)
    assert metrics.auc(x ** 2) == pytest.approx(0.34375)
    with pytest.raises(ValueError, match="at least 2 points"):
        metrics.auc([0.5])


def test_a_map_on_the_deciding_region_beats_random_maps_on_deletion_and_insertion():
    model, image = RegionModel(), image_with_region()
    truth = region_mask().astype(np.float32)
    deletion = metrics.auc(metrics.deletion_curve(model, image, truth, steps=16))
    insertion = metrics.auc(metrics.insertion_curve(model, image, truth, steps=16))
    rng = np.random.default_rng(0)
    random_deletion, random_insertion = [], []
    for _ in range(8):
        noise = rng.random((SIZE, SIZE))
        random_deletion.append(metrics.auc(metrics.deletion_curve(model, image, noise, steps=16)))
        random_insertion.append(metrics.auc(metrics.insertion_curve(model, image, noise, steps=16)))
    assert deletion < np.mean(random_deletion) / 3 and deletion < min(random_deletion)
    assert insertion > np.mean(random_insertion) + 0.3 and insertion > max(random_insertion)


def test_curves_start_and_end_where_they_should():
    model, image = RegionModel(), image_with_region()
    saliency = np.random.default_rng(1).random((SIZE, SIZE))
    deletion = metrics.deletion_curve(model, image, saliency, steps=5)
    insertion = metrics.insertion_curve(model, image, saliency, steps=5)
    assert len(deletion) == len(insertion) == 6
    full = float(model(image[None]))
    assert deletion[0] == pytest.approx(full) and insertion[-1] == pytest.approx(full)
    assert deletion[-1] == pytest.approx(float(model(torch.zeros(1, 3, SIZE, SIZE))))
    assert insertion[0] == pytest.approx(float(model(metrics.blurred(image)[None])))
    with pytest.raises(ValueError, match="upsample the map"):
        metrics.deletion_curve(model, image, np.zeros((8, 8)))


def test_pointing_game():
    mask = region_mask()
    assert metrics.pointing_hit(mask.astype(float), mask)  # all mass on the true region
    far = np.zeros((SIZE, SIZE))
    far[31, 0] = 1  # more than 15 px from the region
    assert not metrics.pointing_hit(far, mask, tolerance=15)
    near = np.zeros((SIZE, SIZE))
    near[REGION[0].stop - 1 + 10, 14] = 1  # 10 px below the region: inside 15 px ...
    assert metrics.pointing_hit(near, mask, tolerance=15) and not metrics.pointing_hit(near, mask, tolerance=5)
    assert not metrics.pointing_hit(near, mask)  # ... but not inside TorchRay's 15 px scaled to 32 px
    with pytest.raises(ValueError, match="mask is empty"):
        metrics.pointing_hit(far, np.zeros_like(mask))
    with pytest.raises(ValueError, match="mask is"):
        metrics.pointing_hit(far[:10], mask)


def test_torchray_tolerance_scales_with_the_input():
    assert metrics.pointing_tolerance((224, 300)) == pytest.approx(15)
    assert metrics.pointing_tolerance((128, 160)) == pytest.approx(15 * 128 / 224)
    assert metrics.pointing_tolerance((448, 448)) == pytest.approx(30)
    big, small = np.zeros((224, 224), bool), np.zeros((128, 128), bool)
    big[100:110, 100:110] = small[60:70, 60:70] = True
    for mask, default in ((big, 15), (small, 15 * 128 / 224)):
        peak = np.zeros(mask.shape)
        peak[int(np.nonzero(mask)[0].max()) + int(default), 105 if mask is big else 65] = 1  # just inside
        assert metrics.pointing_hit(peak, mask)
        peak = np.roll(peak, 2, axis=0)  # 2 px further: outside
        assert not metrics.pointing_hit(peak, mask)


def strict_case(stride=8, size=64):
    """A 2×2-cell attribute at cells (3..4, 5..6) of an 8×8 grid of 8 px cells."""
    mask = np.zeros((size, size), bool)
    mask[3 * stride + 2: 5 * stride - 2, 5 * stride + 1: 7 * stride - 3] = True
    return mask, np.zeros((size // stride, size // stride))


def test_strict_pointing_hit_when_the_peak_cell_overlaps_the_mask():
    mask, grid = strict_case()
    grid[4, 6] = 1.0
    assert metrics.strict_pointing_hit(grid, mask, stride=8)
    edge = np.zeros((64, 64), bool)
    edge[31, 47] = True  # one pixel in the corner of cell (3, 5) is enough
    grid = np.zeros((8, 8))
    grid[3, 5] = 0.3
    assert metrics.strict_pointing_hit(grid, edge, stride=8)


@pytest.mark.parametrize("cell", [(2, 5), (5, 5), (3, 4), (4, 7), (2, 7)])
def test_strict_pointing_misses_by_one_cell(cell):
    mask, grid = strict_case()
    grid[cell] = 1.0
    grid[0, 0] = 0.5  # a lower peak elsewhere changes nothing
    assert not metrics.strict_pointing_hit(grid, mask, stride=8)
    # the same peak is within TorchRay's tolerance: the strict game is the stricter one
    assert metrics.pointing_hit(np.kron(grid, np.ones((8, 8))), mask, tolerance=15)


def test_strict_pointing_on_grids_that_overhang_the_image():
    mask = np.zeros((60, 70), bool)  # 60×70 px at stride 8: an 8×9 grid, the last cells partly outside
    mask[57:, 65:] = True
    grid = np.zeros((8, 9))
    grid[7, 8] = 1
    assert metrics.strict_pointing_hit(grid, mask, stride=8)
    grid[7, 8], grid[7, 7] = 0, 1
    assert not metrics.strict_pointing_hit(grid, mask, stride=8)
    with pytest.raises(ValueError, match="does not cover"):
        metrics.strict_pointing_hit(np.zeros((4, 4)), mask, stride=8)
    with pytest.raises(ValueError, match="mask is empty"):
        metrics.strict_pointing_hit(grid, np.zeros_like(mask), stride=8)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        metrics.strict_pointing_hit(grid, mask, stride=0)
    with pytest.raises(ValueError, match="finite"):
        metrics.strict_pointing_hit(np.full((8, 9), np.nan), mask, stride=8)


def test_pixel_maps_enter_the_strict_game_averaged_over_cells():
    saliency = np.zeros((60, 70), np.float32)
    saliency[56:, 64:] = 2.0  # the overhanging corner cell averages over its 4×6 pixels inside
    pooled = metrics.on_grid(saliency, 8)
    assert pooled.shape == (8, 9) and pooled[7, 8] == pytest.approx(2.0)
    assert metrics.peak_cell(pooled) == (7, 8)


def test_rank_correlation():
    a = np.random.default_rng(2).random((6, 6))
    assert metrics.rank_correlation(a, a * 3 + 1) == pytest.approx(1)
    assert metrics.rank_correlation(a, -a) == pytest.approx(-1)
    assert math.isnan(metrics.rank_correlation(a, np.ones_like(a)))


def test_rise_finds_the_deciding_region():
    saliency = rise(RegionModel(), image_with_region(), masks=128, batch_size=40)
    mask = region_mask()
    assert saliency.shape == (SIZE, SIZE)
    assert saliency[mask].mean() > saliency[~mask].mean() + 0.05


def test_inputs_go_to_the_score_functions_device():
    model = RegionModel()  # CPU model; numpy input is accepted and converted
    curve = metrics.deletion_curve(model, image_with_region().numpy(), region_mask(), steps=4)
    assert curve.shape == (5,)

    seen = []

    def score(images):
        seen.append(images.device.type)
        return torch.zeros(len(images))
    score.device = torch.device("meta")  # a device the CPU image is not on
    metrics.deletion_curve(score, image_with_region(), region_mask(), steps=3)
    assert seen and set(seen) == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_images_with_a_gpu_model():
    model, image = RegionModel().cuda(), image_with_region()
    assert metrics.auc(metrics.deletion_curve(model, image, region_mask().astype(float), steps=8)) < 0.2


@pytest.fixture(scope="module")
def tiny_intr():
    torch.manual_seed(0)
    return build_model(IntrConfig.tiny(3, short_side=64, max_side=96), ["a", "b", "c"]).eval()


def test_intr_and_grad_cam_maps_are_at_the_input_size(tiny_intr):
    inputs = torch.randn(1, 3, 64, 80)
    maps = intr_maps(tiny_intr, inputs, class_index=1)
    assert maps[INTR_TOP_HEAD].shape == maps[INTR_HEAD_MEAN].shape == (64, 80)
    cam = grad_cam(tiny_intr, inputs, class_index=1)
    assert cam.shape == (64, 80) and (cam >= 0).all()
    score = ClassScore(tiny_intr, 1)
    with torch.inference_mode():
        expected = tiny_intr(inputs, return_attention=False).logits.softmax(-1)[0, 1]
    assert float(score(inputs)[0]) == pytest.approx(float(expected), abs=1e-5)


def test_cascade_randomises_top_down_on_a_copy(tiny_intr):
    original = {k: v.clone() for k, v in tiny_intr.state_dict().items()}

    def changed(model, prefix):
        return any(not torch.equal(v, original[k]) for k, v in model.state_dict().items() if k.startswith(prefix))

    seen = []
    for stage, randomised in sanity.cascade(tiny_intr, seed=1):
        seen.append(stage)
        assert changed(randomised, "transformer.decoder") and changed(randomised, "query_embed")
        assert changed(randomised, "transformer.encoder") == (stage != "decoder")
        assert changed(randomised, "backbone.0.body") == (stage == "backbone")
    assert seen == list(sanity.STAGES)
    assert all(torch.equal(v, original[k]) for k, v in tiny_intr.state_dict().items())


def test_background_disc_has_the_area_and_avoids_the_specimen():
    specimen = np.zeros((100, 100), bool)
    specimen[20:60, 20:60] = True
    disc = background_disc(specimen, 80)
    assert abs(int(disc.sum()) - 80) <= 12 and not (disc & specimen).any()
