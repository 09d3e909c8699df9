"""Every claim docs/tutorial.md makes about the bundled model, checked against the running model.

Each test quotes the tutorial's words (whitespace aside) and then measures what they claim; a
reworded tutorial or a retrained model that no longer shows it fails here, and the text or the
model must change. The specimens are the bundled ones (the pair shares one pose: synth's
(20240501, 1)); the atlas is built on the collection docs/make_screenshots.py draws for step 5."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from intr_training import cli
from napari_intr import load_model, synth
from napari_intr.comparison import most_confused_with
from napari_intr.editing import Transplant
from napari_intr.explanation import Explainer, head_number, image_tags, layer_name

TUTORIAL = " ".join((Path(__file__).resolve().parents[1] / "docs" / "tutorial.md").read_text().split())
RUBRA, ALBA = synth.SHOWCASE_PAIR
SIZE = 160
NEAR_PX = 16  # "next to the spot": within a tenth of the specimen photo


def says(*phrases: str) -> None:
    for phrase in phrases:
        assert " ".join(phrase.split()) in TUTORIAL, f"the tutorial no longer says: {phrase!r}"


@pytest.fixture(scope="module")
def pair():
    """The bundled look-alikes as the sample data holds them, their spot and specimen masks, and
    the bundled model's explanation of each."""
    from napari_intr.image_files import read_image
    from napari_intr.loading import sample_data_dir
    pose = synth.sample_pose(np.random.default_rng((20240501, 1)), SIZE)
    explainer = Explainer(load_model("sample", device="cpu"))
    found = {}
    for name in (ALBA, RUBRA):
        image, spot, cover = synth.render_with_coverage(name, pose, SIZE)
        bundled = read_image(sample_data_dir() / "specimens" / f"{synth.slug(name)}.png")[..., :3]
        np.testing.assert_array_equal(bundled, image)  # the masks below belong to the bundled image
        found[name] = {"image": image, "spot": spot, "specimen": cover > 0.5, "cover": cover,
                       "explanation": explainer.explain(image, name)}
    return explainer, found


def peak(explanation, class_name: str, head: int) -> tuple[int, int]:
    heads = explanation.upsample(explanation.head_maps(class_name, -1, "none"))
    return np.unravel_index(int(np.argmax(heads[head])), heads[head].shape)


def test_the_look_alikes_differ_only_by_the_white_spot(pair):
    says("differ only by a white spot near the forewing tip")
    _, found = pair
    differ = np.any(found[ALBA]["image"] != found[RUBRA]["image"], axis=-1)
    assert differ.any() and not (differ & ~binary_dilation(found[ALBA]["spot"], iterations=3)).any()


def test_step_1_where_albas_heads_look(pair):
    says("On the bundled model the head shown first peaks on the white forewing spot",
         "The head with the highest peak weight peaks on the background just beyond the forewing tip, "
         "next to the spot, not on it")
    _, found = pair
    alba = found[ALBA]
    explanation = alba["explanation"]
    assert explanation.top_class() == ALBA
    shown_first = explanation.head_order(ALBA, -1)[0]  # the Attention box's order (by evidence)
    assert alba["spot"][peak(explanation, ALBA, shown_first)]
    says("on the bundled alba specimen the Explorer shows H3 first")  # step 5's comparison with the atlas
    assert head_number(shown_first) == 3
    highest = int(np.argmax(explanation.head_maps(ALBA, -1, "none").max(axis=(1, 2))))
    y, x = peak(explanation, ALBA, highest)
    spot = np.argwhere(alba["spot"])
    assert not alba["specimen"][y, x] and not alba["spot"][y, x]
    assert np.sqrt(((spot - (y, x)) ** 2).sum(axis=1)).min() <= NEAR_PX
    # the layer name quoted as an example is the one the Explorer gives
    # (the look-alike pair open: the alba image is named by what tells it from rubra)
    example = re.search(r"`(alba ◂ query [^`]+)`", TUTORIAL).group(1)
    tag = image_tags([f"{ALBA} (synthetic)", f"{RUBRA} (synthetic)"])[f"{ALBA} (synthetic)"]
    assert example == layer_name(tag, ALBA, explanation.num_layers, 3)


def test_step_2_most_confused_ticks_the_mimic_with_alba_selected(pair):
    says("With *alba* (the prediction) as the selected class, **Most confused** ticks it and the class whose "
         "logit comes closest on this image: its mimic *rubra*",
         "With *rubra* selected it ticks the classes nearest *rubra*'s logit, which here are not the pair: "
         "*rubra* and *Papilionella simulata-coccinea*")
    _, found = pair
    explanation = found[ALBA]["explanation"]
    assert most_confused_with(explanation, ALBA, 2) == [ALBA, RUBRA]
    assert most_confused_with(explanation, RUBRA, 2) == [RUBRA, "Papilionella simulata-coccinea"]


def test_step_3_the_spot_flips_rubra_to_alba_on_the_wing_only(pair):
    says("Painting the spot flips the prediction to *alba*; painting the same white spot onto the background, "
         "anywhere around the specimen, does not")
    explainer, found = pair
    rubra, alba = found[RUBRA], found[ALBA]
    assert rubra["explanation"].top_class() == RUBRA
    region = binary_dilation(alba["spot"], iterations=3)  # as painted in the screenshot
    edited = Transplant(alba["image"], source_name="alba").apply(rubra["image"], region)
    assert explainer.explain(edited, "spot on the wing").top_class() == ALBA
    # the same spot copied onto the background: every place on a grid clear of the specimen
    rows, columns = np.nonzero(region)
    clear = ~binary_dilation(rubra["cover"] > 0, iterations=2)
    tried = 0
    for dy in range(-rows.min(), SIZE - rows.max(), 11):
        for dx in range(-columns.min(), SIZE - columns.max(), 11):
            if not clear[rows + dy, columns + dx].all():
                continue
            moved = np.zeros_like(region)
            moved[rows + dy, columns + dx] = True
            edited = Transplant(alba["image"], offset=(-dy, -dx)).apply(rubra["image"], moved)
            assert explainer.explain(edited, "spot on the background").top_class() == RUBRA, (dy, dx)
            tried += 1
    assert tried >= 8


def test_step_5_the_head_the_caption_names_separates_the_pair(tmp_path):
    caption = re.search(r"!\[INTR Traits: [^\]]*head H(\d) separates alba from rubra\]", TUTORIAL)
    assert caption, "the Traits caption no longer names the separating head"
    collection = tmp_path / "atlas-collection"  # what docs/make_screenshots.py draws for step 5
    synth.write_collection(collection, per_class=3, size=96, seed=3)
    assert cli.main(["atlas", "--model", "sample", "--data", str(collection), "--out", str(tmp_path / "atlas"),
                     "--pairs", f"{ALBA}:{RUBRA}", "--device", "cpu"]) == 0
    (pair_summary,) = json.loads((tmp_path / "atlas" / "atlas.json").read_text(encoding="utf-8"))["pairs"]
    assert pair_summary["heads"][0]["head"] + 1 == int(caption.group(1))
