"""File ▸ Open Sample ▸ napari-intr: the bundled synthetic specimens."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManager

ROOT = Path(__file__).resolve().parents[1]


def manifest_samples():
    manifest = PluginManager.instance().get_manifest("napari-intr")
    return {sample.key: sample for sample in manifest.contributions.sample_data}


def test_every_sample_opens_as_a_named_synthetic_rgb_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    samples = manifest_samples()
    assert len(samples) >= 5 and "look-alike-pair" in samples
    for key in samples:
        before = len(viewer.layers)
        viewer.open_sample("napari-intr", key)
        for layer in list(viewer.layers)[before:]:
            assert layer.rgb and layer.data.shape == (160, 160, 3) and layer.data.dtype == np.uint8
            species = layer.metadata["species"]
            assert species in layer.name and "synthetic" in layer.name
            assert layer.metadata["synthetic"] is True and "not photographs" in layer.metadata["note"]


def test_look_alike_pair_shares_the_pose_and_differs_locally(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-intr", "look-alike-pair")
    rubra, alba = viewer.layers
    assert rubra.metadata["look_alike"] == alba.metadata["species"]
    assert rubra.metadata["ring"] == alba.metadata["ring"]
    differs = np.abs(rubra.data.astype(int) - alba.data.astype(int)).max(axis=-1) > 30
    assert 0 < differs.mean() < 0.05  # one small attribute (the spot), same pose and background
    assert alba.extent.world[0][1] > rubra.extent.world[1][1]  # side by side, not stacked


def test_make_specimens_regenerates_the_bundled_files_exactly():
    pytest.importorskip("skimage")
    spec = importlib.util.spec_from_file_location("make_specimens", ROOT / "sample_data" / "make_specimens.py")
    make_specimens = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_specimens)
    from PIL import Image
    for species, seed in make_specimens.SPECIMENS:
        stored = np.asarray(Image.open(make_specimens.specimen_path(species)).convert("RGB"))
        assert np.array_equal(stored, make_specimens.render_specimen(species, seed)), species
