"""The bundled default model: what `load_model("sample")` promises in sample_data/README.md."""
import numpy as np
import pytest
import torch

import napari_intr
from napari_intr import synth
from napari_intr.loading import sample_model_path

FRESH_SEED = 20261127  # not the seed the model was trained on (0): these images are new to it
PER_CLASS = 6


@pytest.fixture(scope="module")
def model():
    return napari_intr.load_model("sample", device="cpu")


def test_the_bundled_model_is_small_safetensors_with_synthetic_provenance(model):
    path = sample_model_path()
    assert path.suffix == ".safetensors"
    assert path.stat().st_size <= 20 * 1024 * 1024
    assert model.config.backbone == "tiny"
    assert model.class_names == [species.name for species in sorted(synth.SPECIES, key=lambda s: s.name)]
    assert "synth" in str(model.provenance.get("data", "")) + str(model.provenance.get("dataset", ""))


def test_accuracy_on_freshly_drawn_specimens_is_at_least_90_percent(model):
    rng = np.random.default_rng(FRESH_SEED)
    correct = total = 0
    with torch.inference_mode():
        for species in synth.SPECIES:
            for _ in range(PER_CLASS):
                image, _ = synth.render(species.name, synth.sample_pose(rng, 128), 128)
                logits = model(model.preprocess(image), return_attention=False).logits[0]
                correct += model.class_names[int(logits.argmax())] == species.name
                total += 1
    assert correct / total >= 0.9, f"{correct}/{total} correct"
