"""File ▸ Open Sample ▸ napari-intr: the bundled synthetic specimens (sample_data/specimens/).

One function per specimen (npe2 needs one command each); each returns an RGB image layer named
after its species, with the "synthetic" note and the look-alike in its metadata."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np


def specimens_dir() -> Path:
    from napari_intr.loading import sample_data_dir
    return sample_data_dir() / "specimens"


@lru_cache(maxsize=1)
def specimen_index() -> dict:
    path = specimens_dir() / "specimens.json"
    if not path.exists():
        raise FileNotFoundError(f"the bundled specimens are missing ({path}); reinstall napari-intr "
                                "or run sample_data/make_specimens.py in a source checkout")
    return json.loads(path.read_text(encoding="utf-8"))


def specimen_path(species: str) -> Path:
    for entry in specimen_index()["specimens"]:
        if entry["species"] == species:
            return specimens_dir() / entry["file"]
    raise ValueError(f"no bundled specimen of {species!r}")


def specimen_layer(species: str) -> list[tuple]:
    """napari LayerData for the bundled specimen of `species`."""
    from PIL import Image
    index = specimen_index()
    entry = next(e for e in index["specimens"] if e["species"] == species)
    with Image.open(specimens_dir() / entry["file"]) as image:
        data = np.asarray(image.convert("RGB"))
    metadata = {"synthetic": True, "note": index["note"], "species": species, "ring": entry["ring"],
                "attribute": entry["attribute"], "look_alike": entry["look_alike"],
                "source": str(specimens_dir() / entry["file"])}
    return [(data, {"name": f"{species} (synthetic)", "rgb": True, "metadata": metadata}, "image")]


def heliconia_rubra():
    return specimen_layer("Heliconia synthetica-rubra")


def heliconia_alba():
    return specimen_layer("Heliconia synthetica-alba")


def pseudotigris_flava():
    return specimen_layer("Pseudotigris artefacta-flava")


def papilionella_coccinea():
    return specimen_layer("Papilionella simulata-coccinea")


def morphoides_apicalis():
    return specimen_layer("Morphoides imaginaria-apicalis")


def look_alike_pair():
    """Both species of the look-alike pair, same pose, side by side in one viewer."""
    (rubra, rubra_meta, kind), (alba, alba_meta, _) = [*heliconia_rubra(), *heliconia_alba()]
    beside = (0, rubra.shape[1] + 10)
    return [(rubra, rubra_meta, kind), (alba, {**alba_meta, "translate": beside}, kind)]
