"""Paint manipulation: edits change only the painted pixels, sessions undo exactly, the effect's
numbers match a direct computation, exports round-trip, and bad input gets clear messages."""
import csv
import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy.ndimage import binary_dilation
from skimage.draw import disk
from skimage.filters import gaussian
from skimage.measure import label, regionprops
from skimage.morphology import disk as disk_footprint
from skimage.restoration import inpaint_biharmonic

from napari_intr import synth
from napari_intr.editing import (
    Blur,
    EditSession,
    Erase,
    Recolour,
    Transplant,
    compare_explanations,
    export,
    region_on_grid,
    sample_colour,
)
from napari_intr.explanation import Explainer
from napari_intr.loading import sample_model_path
from napari_intr.model import IntrConfig, build_model

NAMES = ["Heliconius erato", "Heliconius melpomene", "Morpho peleides", "Danaus plexippus"]
SHAPE = (72, 90)


def painted_disc(shape=SHAPE, centre=(30, 40), radius=9):
    mask = np.zeros(shape, bool)
    mask[disk(centre, radius, shape=shape)] = True
    return mask


def noisy(dtype, channels, seed=0):
    values = np.random.default_rng(seed).random((*SHAPE, channels) if channels else SHAPE)
    if np.issubdtype(dtype, np.integer):
        return (values * np.iinfo(dtype).max).round().astype(dtype)
    return values.astype(dtype)


IMAGES = {"uint8 RGB": (np.uint8, 3), "uint16 grey": (np.uint16, 0), "float32 RGBA": (np.float32, 4),
          "float64 grey ×1": (np.float64, 1)}
EDITS = {"recolour": lambda: Recolour((1.0, 0.0, 0.5)), "erase": Erase, "blur": lambda: Blur(2.0),
         "transplant": None}  # transplant's source depends on the image


@pytest.fixture(scope="module")
def explainer():
    torch.manual_seed(0)
    model = build_model(IntrConfig.tiny(len(NAMES)), NAMES).eval()
    with torch.no_grad():
        model.input_proj.weight.mul_(100)  # untrained features are ~1e-3: make the image matter
    return Explainer(model, "tiny")


@pytest.fixture(scope="module")
def specimen():
    image, _ = synth.render(synth.SHOWCASE_PAIR[0], synth.sample_pose(np.random.default_rng(3), 128), 128)
    return image[:, :112]  # not square, and not a multiple of the feature stride


@pytest.mark.parametrize("image_kind", IMAGES)
@pytest.mark.parametrize("edit_kind", EDITS)
def test_edit_changes_only_the_painted_pixels(image_kind, edit_kind):
    image = noisy(*IMAGES[image_kind])
    before = image.copy()
    edit = Transplant(noisy(*IMAGES[image_kind], seed=1)) if edit_kind == "transplant" else EDITS[edit_kind]()
    mask = painted_disc()
    edited = edit.apply(image, mask)
    np.testing.assert_array_equal(image, before)  # the input is never written to
    assert edited.dtype == image.dtype and edited.shape == image.shape
    np.testing.assert_array_equal(edited[~mask], image[~mask])
    colour = slice(0, 3) if image.ndim == 3 else slice(None)
    changed = np.any(edited[mask][..., colour] != image[mask][..., colour], axis=-1) if image.ndim == 3 \
        else edited[mask] != image[mask]
    assert changed.mean() > 0.9
    if image.shape[-1:] == (4,):
        np.testing.assert_array_equal(edited[..., 3], image[..., 3])  # alpha untouched


def test_recolour_values_follow_each_images_range():
    mask = painted_disc()
    assert (Recolour((1, 1, 1)).apply(noisy(np.uint8, 3), mask)[mask] == 255).all()
    assert (Recolour((1, 1, 1)).apply(noisy(np.uint16, 0), mask)[mask] == 65535).all()
    np.testing.assert_allclose(Recolour((0.25,)).apply(noisy(np.float32, 3), mask)[mask], 0.25)
    grey = Recolour((1.0, 0.0, 0.0)).apply(noisy(np.uint8, 0), mask)  # RGB on grey: its luminance
    assert (grey[mask] == round(0.2125 * 255)).all()
    stretched = noisy(np.float32, 3) * 1000 + 50  # outside [0, 1]: the image's own min..max
    edited = Recolour((1, 1, 1)).apply(stretched, mask)
    np.testing.assert_allclose(edited[mask], stretched.max(), rtol=1e-6)


def test_sampled_colour_moves_between_dtypes():
    source = noisy(np.uint16, 3, seed=2)
    colour = sample_colour(source, (5, 7))
    np.testing.assert_allclose(colour, source[5, 7] / 65535)
    edited = Recolour(colour).apply(noisy(np.uint8, 3), painted_disc())
    np.testing.assert_array_equal(edited[30, 40], np.round(source[5, 7] / 65535 * 255))
    assert sample_colour(noisy(np.uint8, 0), (1, 1)) == (sample_colour(noisy(np.uint8, 0), (1, 1))[0],) * 3


def test_erase_on_a_crop_equals_inpainting_the_whole_image():
    image, mask = noisy(np.float64, 3), painted_disc()
    # inpaint_biharmonic clips to the known pixels' range: put the image's extremes inside the
    # crop (next to the disc) so that the crop and the whole image clip alike.
    image[30, 30], image[30, 29] = 0.0, 1.0
    np.testing.assert_allclose(Erase().apply(image, mask), inpaint_biharmonic(image, mask, channel_axis=-1),
                               atol=1e-9)


def test_blur_is_the_full_gaussian_inside_and_feathered_at_the_edge():
    image, mask = noisy(np.float64, 3), painted_disc(radius=12)
    edited = Blur(sigma=1.5).apply(image, mask)
    full = gaussian(image, sigma=1.5, channel_axis=-1, mode="nearest", preserve_range=True)
    np.testing.assert_allclose(edited[30, 40], full[30, 40], atol=1e-12)  # deep inside: fully blurred
    edge = (30, 40 + 11)  # on the disc's rim, 1 px from the outside: blended 1 / 1.5 blurred
    assert mask[edge] and not mask[30, 40 + 12]
    np.testing.assert_allclose(edited[edge], full[edge] / 1.5 + image[edge] * 0.5 / 1.5, atol=1e-12)


def test_transplant_takes_the_source_pixels_at_the_offset():
    image, source, mask = noisy(np.uint8, 3), noisy(np.uint8, 3, seed=5), painted_disc()
    edited = Transplant(source, offset=(-10, 20), source_name="specimen B").apply(image, mask)
    np.testing.assert_array_equal(edited[mask], source[np.roll(mask, (-10, 20), axis=(0, 1))])
    assert Transplant(source, (-10, 20), "specimen B").describe() == \
        "transplant from specimen B shifted by (-10, 20) px"
    grey = Transplant(noisy(np.uint16, 0, seed=5)).apply(image, mask)  # grey source into RGB: repeated
    np.testing.assert_array_equal(grey[mask][:, 0], grey[mask][:, 2])


@pytest.mark.parametrize("pose_seed", [0, 1, 2])
def test_transplanting_the_attribute_reproduces_the_look_alike_render(pose_seed):
    pose = synth.sample_pose(np.random.default_rng(pose_seed), 128)
    (image_a, mask), (image_b, _) = (synth.render(name, pose, 128) for name in synth.SHOWCASE_PAIR)
    region = binary_dilation(mask, disk_footprint(3))
    assert not np.array_equal(image_a, image_b)
    edited = Transplant(image_b).apply(image_a, region)
    np.testing.assert_array_equal(edited, image_b)


def test_session_stacks_undoes_and_resets_exactly(explainer, specimen):
    session = EditSession(specimen, "specimen")
    original = explainer.explain(session.current)
    mask = painted_disc(specimen.shape[:2], (40, 50), 10)
    session.apply(Recolour((1, 1, 1)), mask)
    after_one = session.current.copy()
    explained_one = explainer.explain(after_one)
    session.apply(Blur(3.0), painted_disc(specimen.shape[:2], (80, 60), 14))
    assert session.descriptions() == [f"1. recolour to #ffffff over {mask.sum()} px",
                                      f"2. blur (Gaussian σ = 3 px) over {session.history[1].region.sum()} px"]
    assert not np.array_equal(session.current, after_one)
    np.testing.assert_array_equal(session.undo(), after_one)
    np.testing.assert_array_equal(explainer.explain(session.current).logits, explained_one.logits)
    assert len(session.history) == 1
    session.apply(Erase(), mask)
    np.testing.assert_array_equal(session.reset(), specimen)
    np.testing.assert_array_equal(explainer.explain(session.current).logits, original.logits)
    assert session.history == () and not session.current.flags.writeable
    with pytest.raises(ValueError, match="nothing to undo"):
        session.undo()


def test_mass_shares_equal_a_direct_computation(explainer):
    # 128×192 with the tiny model: input 128×192 at stride 8, so each cell is an 8×8 pixel block.
    pose = synth.sample_pose(np.random.default_rng(4), 192)
    image = synth.render(synth.SHOWCASE_PAIR[1], pose, 192)[0][32:160]
    mask = painted_disc(image.shape[:2], (60, 90), 20)
    before = explainer.explain(image)
    after = explainer.explain(Recolour((0, 0, 1)).apply(image, mask))
    effect = compare_explanations(before, after, mask, NAMES[2], layer=-1)
    coverage = mask.reshape(16, 8, 24, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(effect.region_on_grid, coverage, atol=1e-12)
    for explanation, mass in ((before, effect.mass_before), (after, effect.mass_after)):
        direct = (explanation.attention[-1, :, 2] * coverage).sum(axis=(1, 2))
        np.testing.assert_allclose(mass, direct, rtol=1e-5)
        assert ((0 <= mass) & (mass <= 1)).all()
    np.testing.assert_allclose(effect.difference, after.attention[-1, :, 2] - before.attention[-1, :, 2])
    np.testing.assert_allclose(effect.limits, np.abs(effect.difference).max(axis=(1, 2)))
    assert np.abs(effect.mass_after - effect.mass_before).max() > 0
    assert effect.top1_changed == (before.top_class() != after.top_class())
    rows = {row["name"]: row for row in effect.table()}
    for column, name in enumerate(NAMES):
        assert rows[name]["logit_change"] == pytest.approx(float(after.logits[column] - before.logits[column]))
        assert rows[name]["probability_change"] == pytest.approx(
            float(after.probabilities[column] - before.probabilities[column]))


def test_region_on_grid_of_an_odd_size_splits_the_cells_exactly(explainer, specimen):
    explanation = explainer.explain(specimen)  # 128×112 -> cells of 8·128/146 px, not whole pixels
    mask = painted_disc(specimen.shape[:2], (50, 50), 23)
    inside, outside = region_on_grid(mask, explanation), region_on_grid(~mask, explanation)
    assert inside.shape == explanation.attention.shape[-2:]
    np.testing.assert_allclose(inside + outside, 1, atol=1e-9)
    assert ((0 <= inside) & (inside <= 1)).all() and 0 < inside.max() and inside.min() == 0


@pytest.mark.parametrize("suffix, dtype, channels", [(".tif", np.uint16, 0), (".tif", np.float32, 4),
                                                     (".png", np.uint8, 3)])
def test_export_round_trip(tmp_path, explainer, specimen, suffix, dtype, channels):
    image = noisy(dtype, channels)
    session = EditSession(image, "noise")
    session.apply(Recolour((1, 1, 1)), painted_disc())
    session.apply(Erase(), painted_disc(centre=(50, 20), radius=6))
    before, after = explainer.explain(image), explainer.explain(session.current)
    effect = compare_explanations(before, after, session.painted_region(), NAMES[0])
    paths = export(session, [None, effect], tmp_path / f"edited{suffix}", tmp_path / "report")
    read = tifffile.imread(paths["image"]) if suffix == ".tif" else np.asarray(Image.open(paths["image"]))
    assert read.dtype == image.dtype and read.shape == image.shape
    np.testing.assert_array_equal(read, session.current)
    report = json.loads(paths["json"].read_text())
    assert [edit["description"] for edit in report["edits"]] == [s.description for s in session.history]
    assert report["edits"][0]["effect"] is None
    reported = report["edits"][1]["effect"]
    assert reported["top1_changed"] == effect.top1_changed
    assert [h["mass_after"] for h in reported["heads"]] == pytest.approx(effect.mass_after.tolist())
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 + 2 * len(NAMES) + len(effect.mass_after)
    logit = next(r for r in rows if r["quantity"] == "logit" and r["item"] == NAMES[3])
    assert float(logit["change"]) == pytest.approx(float(after.logits[3] - before.logits[3]))


def test_bad_input_gets_clear_messages(tmp_path):
    image = noisy(np.uint8, 3)
    with pytest.raises(ValueError, match="painted region is empty"):
        Erase().apply(image, np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="covers the whole image"):
        Blur().apply(image, np.ones(SHAPE, bool))
    with pytest.raises(ValueError, match="mask is 72×80 but the image is 72×90"):
        Recolour((1, 1, 1)).apply(image, np.ones((72, 80), bool))
    with pytest.raises(ValueError, match="source is 72×80 but the image is 72×90"):
        Transplant(image[:, :80]).apply(image, painted_disc())
    with pytest.raises(ValueError, match="outside the source image"):
        Transplant(image, offset=(60, 0)).apply(image, painted_disc())
    with pytest.raises(ValueError, match="between 0 and 1.*divide 0–255 values by 255"):
        Recolour((255, 0, 0))
    with pytest.raises(ValueError, match="positive"):
        Blur(sigma=0)
    with pytest.raises(ValueError, match="channels last"):
        Erase().apply(np.moveaxis(image, -1, 0), painted_disc())
    with pytest.raises(ValueError, match="outside the 72×90 image"):
        sample_colour(image, (72, 0))
    session = EditSession(image)
    with pytest.raises(ValueError, match="nothing is painted"):
        session.painted_region()
    with pytest.raises(ValueError, match="save it as .tif"):
        export(EditSession(noisy(np.float32, 3)), [], tmp_path / "x.png", tmp_path / "r")
    session.apply(Erase(), painted_disc())
    with pytest.raises(ValueError, match="got 2 effects for 1 edits; give one per edit"):
        export(session, [None, None], tmp_path / "x.png", tmp_path / "r")


def test_compare_explanations_needs_the_same_classes(explainer, specimen):
    mask = painted_disc(specimen.shape[:2], (40, 50), 10)
    encoded = explainer.encode(specimen)
    with pytest.raises(ValueError, match="same classes"):
        compare_explanations(explainer.decode(encoded), explainer.decode(encoded, NAMES[:2]), mask, NAMES[0])


# --- with the trained bundled model: the paper's "change the attribute, change the species" ---

FLIP_POSES = range(5)  # a majority must pass: single poses can sit near the decision boundary


@pytest.fixture(scope="module")
def sample_explainer():
    if not sample_model_path().exists():
        pytest.skip(f"the bundled sample model is missing ({sample_model_path()}); train it to run the flip tests")
    from napari_intr import load_model
    return Explainer(load_model("sample", device="cpu"), "sample")


def corner_disc(shape, area, away_from):
    """A disc of about `area` px in the image corner farthest from `away_from` (the mean of the
    two mirrored spots lies on the body, so this is the corner farthest from the specimen)."""
    radius = np.sqrt(area / np.pi)
    corners = [(radius + 1, radius + 1), (radius + 1, shape[1] - radius - 2),
               (shape[0] - radius - 2, radius + 1), (shape[0] - radius - 2, shape[1] - radius - 2)]
    centre = max(corners, key=lambda c: np.hypot(c[0] - away_from[0], c[1] - away_from[1]))
    return painted_disc(shape, centre, radius), np.array(centre)


def test_painting_the_look_alikes_attribute_flips_the_prediction_elsewhere_not(sample_explainer):
    species_a, species_b = synth.SHOWCASE_PAIR
    correct, flipped, kept = 0, 0, 0
    for seed in FLIP_POSES:
        pose = synth.sample_pose(np.random.default_rng([777, seed]), 128)
        (image_a, mask), (image_b, _) = (synth.render(name, pose, 128) for name in synth.SHOWCASE_PAIR)
        region = binary_dilation(mask, disk_footprint(3))
        correct += sample_explainer.explain(image_a).top_class() == species_a
        painted = Transplant(image_b, source_name=species_b).apply(image_a, region)
        flipped += sample_explainer.explain(painted).top_class() == species_b
        # The control: a background region of the same area, far from the specimen, painted
        # with the colour of species B's spot. The attribute is a spot *on the forewing*; a
        # patch of its colour in the background must not change the species.
        spots = [props.centroid for props in regionprops(label(mask))]
        corner, _ = corner_disc(image_a.shape[:2], region.sum(), np.mean(spots, axis=0))
        spot_colour = sample_colour(image_b, spots[0])
        elsewhere = Recolour(spot_colour).apply(image_a, corner)
        kept += sample_explainer.explain(elsewhere).top_class() == species_a
    poses = len(FLIP_POSES)
    assert correct > poses / 2, f"the sample model recognises {species_a} in only {correct}/{poses} renders"
    assert flipped > poses / 2, f"painting {species_b}'s attribute flipped only {flipped}/{poses} poses"
    assert kept > poses / 2, f"the same edit in a background corner changed the top-1 in {poses - kept}/{poses}"
