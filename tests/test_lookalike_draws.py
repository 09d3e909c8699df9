"""benchmarks/lookalike_draws.py: a draw is a pure function of its seed, its groups differ only in
the trait, and the masks it writes (where `intr eval --explanations` looks) cover exactly the spots."""
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

import lookalike_draws as draws  # benchmarks/ is on the tests' pythonpath (pyproject.toml)
from napari_intr import synth


def test_tune_and_judge_seeds_are_apart_and_draws_follow_the_spec():
    assert not set(draws.TUNE_SEEDS) & set(draws.JUDGE_SEEDS)
    sizes = set()
    for seed in draws.TUNE_SEEDS:
        species = draws.draw(seed)
        assert species == draws.draw(seed)
        groups = {}
        for s in species:
            groups.setdefault(s.group, []).append(s)
        assert 4 <= len(species) <= 8 and 2 <= len(groups) <= 3
        assert len({s.name for s in species}) == len(species)
        for members in groups.values():
            assert len(members) >= 2
            # within a group only the trait's place (or only its colour) differs
            assert len({replace(s, name="", spot_at=0, spot_colour=(0, 0, 0)) for s in members}) == 1
            differs = "spot_at" if members[0].trait == "place" else "spot_colour"
            assert len({getattr(s, differs) for s in members}) == len(members)
        sizes |= {s.spot_radius for s in species}
    assert max(sizes) > 1.5 * min(sizes)  # traits of different sizes


def test_masks_cover_the_spots_and_nothing_else():
    seed = draws.TUNE_SEEDS[0]
    species = draws.draw(seed)
    palette = draws.palette_of(species)
    for s in species:
        rng = draws.image_rng(seed, s, "train", 0)
        image, mask, specimen = draws.render(s, rng, 128, palette)
        plain, _, _ = draws.render(s, draws.image_rng(seed, s, "train", 0), 128, palette, trait=False)
        diff = np.abs(image.astype(int) - plain.astype(int)).max(axis=-1)
        assert mask.any() and (mask <= specimen).all()
        assert np.median(diff[mask]) > 15  # the spots are there ...
        assert diff[~binary_dilation(mask, iterations=3)].max() < 64  # ... and nowhere else (blur, JPEG aside)


def test_write_is_deterministic_and_in_synth_layout(tmp_path):
    first = draws.write(tmp_path / "a", seed=101, per_class=1, val_per_class=1, size=96)
    draws.write(tmp_path / "b", seed=101, per_class=1, val_per_class=1, size=96)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    for rel in files:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / rel)), np.asarray(Image.open(tmp_path / "b" / rel)))
    manifest = json.loads((tmp_path / "a" / draws.MANIFEST).read_text())
    assert manifest == json.loads(json.dumps(first)) and sum(len(v) for v in manifest["groups"].values()) == len(manifest["species"])
    image = next((tmp_path / "a" / "val").glob("*/*.png"))
    assert synth.load_mask(image) is not None and synth.load_mask(image).shape == (96, 96)
    assert synth.specimen_mask_path(image).is_file()


def test_bad_inputs_are_refused_with_a_reason(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        draws.write(tmp_path, seed=100, per_class=1, val_per_class=1)
    with pytest.raises(ValueError, match="at least 1"):
        draws.write(tmp_path / "new", seed=100, per_class=0)
    with pytest.raises(ValueError, match="at least 64"):
        draws.write(tmp_path / "new", seed=100, size=32)
