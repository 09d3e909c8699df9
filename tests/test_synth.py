"""Behaviour of the synthetic mimicry-ring specimen generator."""
import json
from itertools import combinations

import numpy as np
import pytest
from skimage.morphology import dilation, disk

from napari_intr import synth

SIZE = 96


def poses(n, seed=0):
    rng = np.random.default_rng(seed)
    return [synth.sample_pose(rng, SIZE) for _ in range(n)]


def test_catalogue_has_rings_of_look_alikes():
    names = [s.name for s in synth.SPECIES]
    assert 8 <= len(names) <= 10 and len(set(names)) == len(names)
    rings = {s.ring for s in synth.SPECIES}
    assert len(rings) >= 4
    pairs = synth.look_alike_pairs()
    assert pairs[0] == synth.SHOWCASE_PAIR
    by_name = {s.name: s for s in synth.SPECIES}
    for a, b in pairs:
        assert by_name[a].ring == by_name[b].ring
    for ring in rings:  # every ring has at least one pair
        assert any(by_name[a].ring == ring for a, _ in pairs)
    assert all(s.attribute for s in synth.SPECIES)


def test_render_is_a_pure_function_of_its_inputs():
    pose = poses(1)[0]
    image, mask = synth.render(synth.SPECIES[0].name, pose, SIZE)
    again, mask_again = synth.render(synth.SPECIES[0].name, pose, SIZE)
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    assert mask.dtype == bool and mask.shape == (SIZE, SIZE)
    assert np.array_equal(image, again) and np.array_equal(mask, mask_again)
    with pytest.raises(ValueError, match="unknown species"):
        synth.render("Nonexistent species", pose, SIZE)


def test_masks_are_non_empty_and_inside_the_specimen():
    for pose in poses(4):
        for species in synth.SPECIES:
            _, coverage, mask = synth._rasterise(species, pose, SIZE)
            assert mask.sum() > 10, species.name
            assert np.all(coverage[mask] > 0), species.name


def test_look_alikes_differ_only_inside_the_attribute_mask():
    for pose in poses(5, seed=1):
        for a, b in synth.look_alike_pairs():
            image_a, mask_a = synth.render(a, pose, SIZE)
            image_b, mask_b = synth.render(b, pose, SIZE)
            assert np.array_equal(mask_a, mask_b), (a, b)
            changed = np.any(image_a != image_b, axis=-1)
            near_mask = dilation(mask_a, disk(3))
            assert not np.any(changed & ~near_mask), (a, b)
            # ... and inside it they differ clearly (the attribute is visible).
            contrast = np.abs(image_a.astype(int) - image_b.astype(int)).max(-1)[mask_a]
            assert np.mean(contrast > 60) > 0.2, (a, b)


def test_different_rings_differ_broadly():
    first_of_ring = {}
    for species in synth.SPECIES:
        first_of_ring.setdefault(species.ring, species.name)
    for pose in poses(3, seed=2):
        for a, b in combinations(first_of_ring.values(), 2):
            (image_a, mask_a), (image_b, mask_b) = synth.render(a, pose, SIZE), synth.render(b, pose, SIZE)
            outside = ~(mask_a | mask_b)
            different = np.abs(image_a.astype(int) - image_b.astype(int)).max(-1) > 40
            assert (different & outside).mean() > 0.05, (a, b)


def test_write_collection_layout_masks_and_summary(tmp_path):
    calls = []
    summary = synth.write_collection(tmp_path, per_class=2, size=48, seed=3,
                                     progress=lambda done, total: calls.append((done, total)))
    total = 2 * len(synth.SPECIES)
    assert calls[-1] == (total, total) and len(calls) == total
    meta = json.loads((tmp_path / "synth.json").read_text())
    assert meta == summary
    assert meta["synthetic"] is True and "not" in meta["note"] and "real" in meta["note"]
    assert (meta["seed"], meta["size"], meta["per_class"]) == (3, 48, 2)
    assert [s["name"] for s in meta["species"]] == [s.name for s in synth.SPECIES]
    assert all(s["ring"] and s["attribute"] for s in meta["species"])
    assert [tuple(p) for p in meta["look_alike_pairs"]] == synth.look_alike_pairs()
    class_dirs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert class_dirs == sorted(s.name for s in synth.SPECIES)
    for species in synth.SPECIES:
        files = sorted((tmp_path / species.name).iterdir())
        assert [f.name for f in files] == [f"{synth.slug(species.name)}_{i:04d}.png" for i in range(2)]
        for index, path in enumerate(files):
            assert synth.mask_path(path) == tmp_path / ".masks" / species.name / path.name
            mask = synth.load_mask(path)
            pose = synth.sample_pose(synth.image_rng(3, species.name, index), 48)
            image, expected = synth.render(species.name, pose, 48)
            assert np.array_equal(mask, expected) and mask.any()
            from PIL import Image
            with Image.open(synth.specimen_mask_path(path)) as opened:
                specimen = np.asarray(opened) > 127  # the specimen, not its background
            assert specimen.any() and not specimen.all() and specimen[mask].mean() > 0.9
            with Image.open(path) as im:
                assert im.mode == "RGB" and np.array_equal(np.asarray(im), image)
    assert synth.load_mask(tmp_path / "elsewhere" / "x.png") is None


def read_all(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synth.write_collection(tmp_path / name, per_class=1, size=40, seed=seed)
    a, b, c = (read_all(tmp_path / n) for n in "abc")
    assert a == b
    images = [k for k in a if k.suffix == ".png" and not str(k).startswith(".")]
    assert all(a[k] != c[k] for k in images)


def test_existing_images_stay_the_same_when_per_class_grows(tmp_path):
    synth.write_collection(tmp_path / "small", per_class=1, size=40, seed=9)
    synth.write_collection(tmp_path / "large", per_class=3, size=40, seed=9)
    small = read_all(tmp_path / "small")
    large = read_all(tmp_path / "large")
    assert all(large[k] == v for k, v in small.items() if k.suffix == ".png")


def test_refuses_bad_arguments_and_foreign_folders(tmp_path):
    with pytest.raises(ValueError, match="per_class must be at least 1"):
        synth.write_collection(tmp_path / "x", per_class=0)
    with pytest.raises(ValueError, match="size must be at least 32"):
        synth.write_collection(tmp_path / "x", size=16)
    user = tmp_path / "user"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ValueError, match="not from a previous synth run.*empty or new folder"):
        synth.write_collection(user, per_class=1, size=40)
    assert (user / "holiday.jpg").read_bytes() == b"precious"
    # A previous synth run with a stray user file inside is refused too.
    synth.write_collection(tmp_path / "run", per_class=1, size=40)
    (tmp_path / "run" / synth.SPECIES[0].name / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt|" + synth.SPECIES[0].name):
        synth.write_collection(tmp_path / "run", per_class=1, size=40)
    assert (tmp_path / "run" / synth.SPECIES[0].name / "notes.txt").exists()


def test_previous_run_is_overwritten_without_stale_files(tmp_path):
    synth.write_collection(tmp_path, per_class=3, size=40, seed=1)
    synth.write_collection(tmp_path, per_class=1, size=40, seed=1)
    pngs = [p for p in tmp_path.rglob("*.png")]
    assert len(pngs) == 3 * len(synth.SPECIES)  # one image, attribute mask and specimen mask per species
    assert json.loads((tmp_path / "synth.json").read_text())["per_class"] == 1


def test_many_species_mode_has_over_500_distinct_species_with_masks():
    species = synth.many_species(synth.MANY_SPECIES_MAX)
    assert len(species) >= 500 and len({s.name for s in species}) == len(species)
    assert synth.many_species(500) == species[:500]  # a prefix: more species never reorders
    assert len({(s.look, s.site_colours) for s in species}) == len(species)  # distinct looks
    pose = poses(1, seed=4)[0]
    renders = {}
    for s in species[:40]:
        image, mask = synth.render(s.name, pose, 64)
        assert mask.sum() > 10, s.name
        renders[s.name] = image
    images = list(renders.values())
    assert all(not np.array_equal(a, b) for a, b in combinations(images, 2))
    # look-alikes of the many-species mode differ only in their attribute spot
    a, b = (s for s in species if s.ring == species[0].ring and s.name != species[0].name).__next__(), species[0]
    image_a, mask_a = synth.render(a.name, pose, 64)
    image_b, mask_b = synth.render(b.name, pose, 64)
    near = dilation(mask_a | mask_b, disk(4))
    assert not np.any(np.abs(image_a.astype(int) - image_b.astype(int))[~near] > 2)
    with pytest.raises(ValueError, match="2 to"):
        synth.many_species(synth.MANY_SPECIES_MAX + 1)


def test_many_species_collection_with_held_out_split(tmp_path):
    summary = synth.write_collection(tmp_path / "many", per_class=2, size=48, species_count=12, val_per_class=1)
    assert summary["mode"] == "many-species" and len(summary["species"]) == 12
    train = sorted((tmp_path / "many" / "train").iterdir())
    val = sorted((tmp_path / "many" / "val").iterdir())
    species = [p for p in train if p.is_dir() and not p.name.startswith(".")]  # .masks, .specimens
    assert [p.name for p in species] == sorted(s["name"] for s in summary["species"])
    assert all(len(list(folder.glob("*.png"))) == 2 for folder in species)
    assert all(len(list(folder.glob("*.png"))) == 1 for folder in val if not folder.name.startswith("."))
    first = next(folder for folder in val if not folder.name.startswith("."))
    image = next(first.glob("*.png"))
    assert synth.load_mask(image) is not None and synth.load_mask(image).any()
    # validation images are other draws than the training images of the species
    names = {p.name for p in (tmp_path / "many" / "train" / first.name).glob("*.png")}
    assert image.name not in names
    # a second run over the first replaces it
    synth.write_collection(tmp_path / "many", per_class=1, size=48, species_count=3)
    assert not (tmp_path / "many" / "train").exists()


def test_only_draws_chosen_species_and_rings_including_unseen_ones(tmp_path, capsys):
    from intr_training.cli import main
    unseen = synth.many_species(5)[0]  # a many-species ring: none of them is in the bundled model
    code = main(["synth", "--out", str(tmp_path / "open"), "--per-class", "1", "--size", "32",
                 "--only", f"morpho, {unseen.ring}, {synth.SHOWCASE_PAIR[0]}"])
    assert code == 0, capsys.readouterr().err
    drawn = json.loads((tmp_path / "open" / "synth.json").read_text())
    names = [s["name"] for s in drawn["species"]]
    morpho = [s.name for s in synth.SPECIES if s.ring == "morpho"]
    ring = [s.name for s in synth.many_species(synth.MANY_SPECIES_MAX) if s.ring == unseen.ring]
    assert names == [*morpho, *ring, synth.SHOWCASE_PAIR[0]] and drawn["mode"] == "chosen"
    assert sorted(p.name for p in (tmp_path / "open").iterdir() if not p.name.startswith(".")) == sorted(
        [*names, "synth.json"])
    from napari_intr import load_model
    assert not set(ring) & set(load_model("sample").class_names)  # species the bundled model never saw
    assert main(["synth", "--out", str(tmp_path / "bad"), "--only", "Papilio nonexistens"]) == 2
    assert "no species or ring is called 'Papilio nonexistens'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not both"):
        synth.write_collection(tmp_path / "both", 1, 32, species_count=4, only=["morpho"])
