"""A held-out look-alike collection that `intr synth` does not draw: judge recipes on it, never tune.

    python benchmarks/lookalikes.py --out /tmp/lookalikes [--per-class 150 --val-per-class 40 --size 160]

Six fictional species in two look-alike groups, drawn procedurally but unlike synth's butterflies:

- ground beetles (head, pronotum, two elytra, legs, antennae): a pair of pale spots on the
  elytra, just behind the pronotum, at mid-length, or at the tip;
- fish (fusiform body, tail fin, dorsal fin, eye, lateral stripe): a dark eyespot just behind
  the eye, below the dorsal fin, or at the base of the tail.

Within a group the species share body, colours and pattern, and differ ONLY in where the spot
sits relative to another part. Background discs of the same colours appear at random for every
species, so "a spot somewhere" tells nothing. Pose, size, proportions, colours, background,
blur and noise vary per image; about half the files are JPEG (quality 70-95), half PNG.
Output: OUT/train/<species>/… and OUT/val/<species>/… (`intr train --data OUT` uses them as
given), plus lookalikes.json. Images depend only on (--seed, species, split, index).
"""
from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.filters import gaussian

SUPERSAMPLE = 2


@dataclass(frozen=True)
class Species:
    name: str
    group: str
    spot_at: float  # position of the spot along the body axis, -1 (head) .. 1 (tail end)
    description: str


SPECIES = (
    Species("Carabomorpha fictiva-humeralis", "beetle", -0.05, "pale spots at the elytral shoulders, next to the pronotum"),
    Species("Carabomorpha fictiva-media", "beetle", 0.35, "pale spots at mid-length of the elytra"),
    Species("Carabomorpha fictiva-apicalis", "beetle", 0.75, "pale spots at the tip of the elytra"),
    Species("Pisciculus fictus-opercularis", "fish", -0.38, "dark eyespot just behind the eye"),
    Species("Pisciculus fictus-dorsalis", "fish", 0.05, "dark eyespot below the dorsal fin"),
    Species("Pisciculus fictus-caudalis", "fish", 0.52, "dark eyespot at the base of the tail"),
)
SPOT_COLOURS = {"beetle": (235, 215, 120), "fish": (25, 22, 30)}
RIM_COLOURS = {"beetle": (30, 35, 25), "fish": (245, 235, 190)}


def _ellipse(x, y, cx, cy, a, b):
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1


def _segment(x, y, x0, y0, x1, y1, width):
    t = np.clip(((x - x0) * (x1 - x0) + (y - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0, 1)
    return np.hypot(x - x0 - t * (x1 - x0), y - y0 - t * (y1 - y0)) < width


def _muted(rng):
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.9)
    k = (np.array([5, 3, 1]) + hue * 6) % 6
    return val * (1 - sat * np.clip(np.minimum(k, 4 - k), 0, 1))


def backdrop(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A muted gradient with a coarse texture (float RGB at SUPERSAMPLE × size) and the pixel
    centres' coordinates (px, py in -0.5..0.5); the discs and the specimen are painted on it."""
    n = size * SUPERSAMPLE
    grid = (np.arange(n) + 0.5) / n - 0.5
    py, px = np.meshgrid(grid, grid, indexing="ij")
    c0, c1, g = _muted(rng), _muted(rng), rng.uniform(0, 2 * np.pi)
    ramp = np.clip(px * np.cos(g) + py * np.sin(g) + 0.5, 0, 1)[..., None]
    coarse = rng.normal(size=(5, 5)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse).resize((n, n), Image.BICUBIC))[..., None]
    return c0 + (c1 - c0) * ramp + rng.uniform(0.02, 0.1) * texture, px, py


def render(species: Species, rng: np.random.Generator, size: int) -> np.ndarray:
    """One specimen, uint8 size×size×3; all randomness from `rng`."""
    # background: gradient, coarse texture, distractor discs in the attribute colours
    image, px, py = backdrop(rng, size)
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.35, 0.3, 0.25, 0.1]))):
        group = ("beetle", "fish")[int(rng.integers(2))]
        cx, cy, r = rng.uniform(-0.45, 0.45), rng.uniform(-0.45, 0.45), rng.uniform(0.02, 0.035)
        image[np.hypot(px - cx, py - cy) < 1.4 * r] = np.asarray(RIM_COLOURS[group]) / 255
        image[np.hypot(px - cx, py - cy) < r] = np.asarray(SPOT_COLOURS[group]) / 255

    # the specimen's own frame: x along the body (head at -1), y across; random pose
    angle = rng.uniform(-np.pi, np.pi) if species.group == "beetle" else rng.uniform(-0.5, 0.5)
    half_length = rng.uniform(0.28, 0.42)
    ox, oy = rng.uniform(-0.08, 0.08, 2)
    mirror = -1 if (species.group == "fish" and rng.random() < 0.5) else 1
    x = ((px - ox) * np.cos(angle) + (py - oy) * np.sin(angle)) / half_length * mirror
    y = (-(px - ox) * np.sin(angle) + (py - oy) * np.cos(angle)) / half_length
    width = rng.uniform(0.9, 1.1)
    gain = rng.uniform(0.85, 1.15, 3)

    def paint(region, rgb):
        image[region] = np.clip(np.asarray(rgb) / 255 * gain, 0, 1)

    if species.group == "beetle":
        ground, edge = (40, 75, 50), (20, 30, 22)
        for side in (-1, 1):  # legs and antennae under the body
            for at, reach in ((-0.45, -0.2), (-0.05, 0.1), (0.3, 0.55)):
                paint(_segment(x, y, at, 0, reach, side * 0.62 * width, 0.025), edge)
            paint(_segment(x, y, -0.95, side * 0.05, -1.3, side * 0.35 * width, 0.018), edge)
        paint(_ellipse(x, y, -0.88, 0, 0.13, 0.13 * width), edge)            # head
        paint(_ellipse(x, y, -0.58, 0, 0.22, 0.26 * width), (35, 60, 42))    # pronotum
        elytra = _ellipse(x, y, 0.3, 0, 0.68, 0.36 * width)
        paint(elytra, ground)
        paint(elytra & (np.abs(y) < 0.015), edge)                          # suture
        for side in (-1, 1):
            spot = np.hypot(x - species.spot_at, (y - side * 0.17 * width)) < 0.075
            paint(spot, SPOT_COLOURS["beetle"])
    else:
        ground, belly, edge = (150, 160, 175), (215, 215, 200), (60, 65, 80)
        paint(_segment(x, y, 0.75, 0, 1.05, 0.3, 0.05) | _segment(x, y, 0.75, 0, 1.05, -0.3, 0.05)
              | ((x > 0.78) & (x < 1.05) & (np.abs(y) < (x - 0.72) * 1.1)), edge)  # tail fin
        paint((y < 0) & (y > -0.42 * width + 0.5 * np.abs(x + 0.05)) & (np.abs(x + 0.05) < 0.25), edge)  # dorsal fin
        body = _ellipse(x, y, 0, 0, 0.85, 0.3 * width)
        paint(body, ground)
        paint(body & (y > 0.1 * width), belly)
        paint(body & (np.abs(y - 0.02) < 0.025), edge)                       # lateral stripe
        paint(_ellipse(x, y, -0.68, -0.06, 0.06, 0.06), (240, 240, 235))     # eye
        paint(_ellipse(x, y, -0.68, -0.06, 0.03, 0.03), (10, 10, 10))
        spot = np.hypot(x - species.spot_at, y + 0.05)
        paint(spot < 0.1, RIM_COLOURS["fish"])
        paint(spot < 0.07, SPOT_COLOURS["fish"])

    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    image = gaussian(image, sigma=rng.uniform(0.3, 0.9) * size / 160, channel_axis=-1, preserve_range=True)
    image = (image - 0.5) * rng.uniform(0.85, 1.15) + 0.5 * rng.uniform(0.85, 1.15)
    image += rng.normal(0, rng.uniform(0.005, 0.03), image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def write(out: Path, per_class: int = 150, val_per_class: int = 40, size: int = 160, seed: int = 0) -> dict:
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "lookalikes.json").is_file():
        raise ValueError(f"{out} is not empty and holds no earlier look-alike collection; choose a new folder")
    for split, count in (("train", per_class), ("val", val_per_class)):
        for species in SPECIES:
            folder = out / split / species.name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                rng = np.random.default_rng([seed, zlib.crc32(species.name.encode()), split == "val", index])
                image = Image.fromarray(render(species, rng, size))
                stem = folder / f"{species.group}_{index:04d}"
                if rng.random() < 0.5:
                    image.save(stem.with_suffix(".jpg"), quality=int(rng.integers(70, 96)))
                else:
                    image.save(stem.with_suffix(".png"))
    summary = {"synthetic": True, "held_out": True, "seed": seed, "size": size, "per_class": per_class,
               "val_per_class": val_per_class,
               "species": [{"name": s.name, "group": s.group, "attribute": s.description} for s in SPECIES]}
    (out / "lookalikes.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--per-class", type=int, default=150, help="training images per species")
    parser.add_argument("--val-per-class", type=int, default=40, help="validation images per species")
    parser.add_argument("--size", type=int, default=160, help="image side in px")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write(args.out, args.per_class, args.val_per_class, args.size, args.seed)
    print(f"wrote {len(SPECIES)} species x ({args.per_class} train + {args.val_per_class} val) to {args.out}")


if __name__ == "__main__":
    main()
