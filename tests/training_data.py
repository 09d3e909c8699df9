"""Small image collections for the training tests: each class is a distinct colour and shape,
so a tiny model can tell them apart in an epoch or two."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# Short side 64 px for the tiny backbone keeps every training test CPU-sized.
FAST = ["--backbone", "tiny", "--image-size", "64", "--batch-size", "4", "--workers", "0", "--seed", "0"]
COLOURS = [(220, 40, 40), (40, 90, 220), (40, 180, 60), (230, 200, 40), (160, 60, 200)]


def draw(class_index: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    image = (rng.random((size, size, 3)) * 60 + 90).astype(np.uint8)  # grey noise background
    y, x = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    shape = (np.abs(y - cy) + np.abs(x - cx) < size // 4) if class_index % 2 else (
        (y - cy) ** 2 + (x - cx) ** 2 < (size // 4) ** 2)
    image[shape] = COLOURS[class_index % len(COLOURS)]
    return image


def write_classes(root: Path, counts: dict[str, int], size: int = 64, seed: int = 0) -> Path:
    """root/<class>/<i>.png with counts[class] images per class."""
    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(draw(index, rng, size)).save(folder / f"{i:03d}.png")
    return root


def json_events(text: str) -> list[dict]:
    """Every stdout line must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
