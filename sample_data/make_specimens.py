"""Regenerate the bundled specimens in sample_data/specimens/ exactly.

    python sample_data/make_specimens.py

Each specimen is `napari_intr.synth.render(species, pose, SIZE)` with a pose drawn from a
fixed seed; the two species of the look-alike pair are rendered from the SAME pose, so the
images differ only in the attribute that tells them apart. The seeds are not used by
`intr synth` collections (those key their generators on seed, species name and index), so the
bundled specimens are not training images of the bundled model.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))  # a source checkout without an install
from napari_intr import synth  # noqa: E402

SIZE = 160
# (species, pose seed): the look-alike pair shares seed 1, so it shares the pose.
SPECIMENS = (
    ("Heliconia synthetica-rubra", 1),
    ("Heliconia synthetica-alba", 1),
    ("Pseudotigris artefacta-flava", 2),
    ("Papilionella simulata-coccinea", 3),
    ("Morphoides imaginaria-apicalis", 4),
)
SEED_BASE = 20240501  # keeps these poses apart from any `intr synth --seed N` collection


def specimen_path(species: str) -> Path:
    return ROOT / "specimens" / f"{synth.slug(species)}.png"


def render_specimen(species: str, pose_seed: int) -> np.ndarray:
    pose = synth.sample_pose(np.random.default_rng([SEED_BASE, pose_seed]), SIZE)
    image, _mask = synth.render(species, pose, SIZE)
    return image


def main() -> None:
    by_name = {s.name: s for s in synth.SPECIES}
    index = []
    for species, pose_seed in SPECIMENS:
        path = specimen_path(species)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_specimen(species, pose_seed)).save(path)
        print(path.relative_to(ROOT))
        twins = [other for other, seed in SPECIMENS if seed == pose_seed and other != species]
        index.append({"file": path.name, "species": species, "ring": by_name[species].ring,
                      "attribute": by_name[species].attribute, "pose_seed": pose_seed,
                      "look_alike": twins[0] if twins else None})
    listing = {"synthetic": True, "note": synth.SYNTH_NOTE, "size": SIZE, "specimens": index}
    (ROOT / "specimens" / "specimens.json").write_text(json.dumps(listing, indent=2) + "\n")


if __name__ == "__main__":
    main()
