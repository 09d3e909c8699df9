"""Held-out look-alike collections drawn from a seed: many different collections of one kind.

    python benchmarks/lookalike_draws.py --out /tmp/draw3 --seed 3 [--per-class 150 --val-per-class 40 --size 160]

`benchmarks/lookalikes.py` is ONE fixed collection; this generator draws a new one per seed, so a
recipe can be judged on many collections that nobody tuned on. A draw (a pure function of its seed):

- 2-3 look-alike groups and 4-8 species (2-4 per group). Each group has its own body plan
  (ground beetle, fish or shield bug), body colours and trait: a PAIR of small spots;
- within a group the species differ ONLY in the spots' place along the body ("place" groups) or
  ONLY in their colour ("colour" groups); the spot radius (the trait size) differs between groups;
- backgrounds: gradient, coarse texture and 0-3 distractor discs in the draw's spot colours, so
  "a spot somewhere" tells nothing;
- pose (any rotation for beetles and bugs, a tilt and a mirror for fish), size, proportions,
  body and spot colour gain, blur, contrast, noise, and half the images JPEG-compressed
  (quality 70-95; every file is saved as PNG so the masks can share its name).

Output, in the layout `intr synth --val-per-class` writes and `intr train --data OUT` reads:
OUT/train/<species>/<file>.png and OUT/val/<species>/<file>.png; the trait's mask (the two
spots, white on black, same size and name) in OUT/<split>/.masks/<species>/<file>.png, which
`intr eval --explanations` reads for its pointing games (synth.mask_path/load_mask); where the
specimen is in OUT/<split>/.specimens/<species>/<file>.png; and lookalike_draws.json with the
groups, each species' trait and the seed. No synth.json is written: the manipulation flip rate
re-renders synth's own species and does not apply here.

SEEDS. Judge seeds 0-9 (`JUDGE_SEEDS`): held out, never looked at while tuning, run once at the end.
Tune seeds 100-119 (`TUNE_SEEDS`): tune recipes on these only.
"""
from __future__ import annotations

import argparse
import io
import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.filters import gaussian

from lookalikes import SUPERSAMPLE, _ellipse, _segment, backdrop

JUDGE_SEEDS = tuple(range(0, 10))
TUNE_SEEDS = tuple(range(100, 120))
MANIFEST = "lookalike_draws.json"

# where spots may sit along the body axis (-1 head .. 1 tail end), per body plan
SPOT_RANGE = {"beetle": (-0.1, 0.8), "fish": (-0.42, 0.55), "bug": (-0.2, 0.7)}
GENERA = {"beetle": "Carabomorpha", "fish": "Pisciculus", "bug": "Scutellomorpha"}
EPITHETS = ("alba", "borealis", "cincta", "dorsalis", "elegans", "fusca", "gracilis", "humilis")
# well-separated spot colours; a "colour" group takes distinct ones
SPOT_COLOURS = ((235, 215, 120), (245, 245, 240), (200, 40, 35), (40, 80, 200), (240, 140, 30),
                (20, 20, 25), (150, 60, 170))


@dataclass(frozen=True)
class Species:
    name: str
    group: str          # the look-alike group (species in one group differ only in the trait)
    body: str           # beetle | fish | bug
    trait: str          # "place" or "colour": what differs within the group
    spot_at: float      # spots' position along the body axis, -1 (head) .. 1 (tail end)
    spot_colour: tuple[int, int, int]
    spot_radius: float  # in body half-lengths
    ground: tuple[int, int, int]


def draw(seed: int) -> tuple[Species, ...]:
    """The species of draw `seed` (a pure function of the seed)."""
    rng = np.random.default_rng([seed, zlib.crc32(b"lookalike-draw")])
    groups = int(rng.integers(2, 4))
    classes = int(rng.integers(max(4, 2 * groups), 9))
    sizes = [2] * groups
    for _ in range(classes - 2 * groups):
        sizes[int(rng.choice([g for g in range(groups) if sizes[g] < 4]))] += 1
    bodies = rng.permutation(list(GENERA))[:groups]
    radii = rng.permutation(np.linspace(0.055, 0.11, groups) + rng.uniform(-0.008, 0.008, groups))
    species = []
    for g, (body, count, radius) in enumerate(zip(bodies, sizes, radii)):
        body = str(body)
        trait = "place" if rng.random() < 0.6 else "colour"
        ground = tuple(int(c) for c in rng.integers(30, 200, 3))
        low, high = SPOT_RANGE[body]
        if trait == "place":
            places = np.linspace(low, high, count) + rng.uniform(-0.04, 0.04, count)
            colours = [SPOT_COLOURS[int(rng.integers(len(SPOT_COLOURS)))]] * count
        else:
            places = [float(rng.uniform(low, high))] * count
            colours = [SPOT_COLOURS[int(i)] for i in rng.choice(len(SPOT_COLOURS), count, replace=False)]
        genus = f"{GENERA[body]} d{seed}"
        for k in range(count):
            species.append(Species(f"{genus} {EPITHETS[k]}", f"group {g + 1} ({body})", body, trait,
                                   round(float(places[k]), 3), colours[k], round(float(radius), 4), ground))
    return tuple(species)


def _spots(species: Species, x, y, width):
    """The two spots of the trait in the specimen's frame (bool, supersampled grid)."""
    r = species.spot_radius
    if species.body == "fish":  # seen from the side: two spots one behind the other, below the stripe
        return (np.hypot(x - species.spot_at + 1.3 * r, y - 0.12 * width) < r) | \
               (np.hypot(x - species.spot_at - 1.3 * r, y - 0.12 * width) < r)
    across = 0.17 if species.body == "beetle" else 0.22
    return (np.hypot(x - species.spot_at, y - across * width) < r) | (np.hypot(x - species.spot_at, y + across * width) < r)


def render(species: Species, rng: np.random.Generator, size: int, palette, trait: bool = True):
    """Image (uint8 size×size×3), trait mask (bool) and specimen mask (bool); all randomness from `rng`.
    trait=False paints the spots in the body colour (same draw otherwise): the mask test's reference."""
    image, px, py = backdrop(rng, size)
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.3, 0.3, 0.25, 0.15]))):
        colour = palette[int(rng.integers(len(palette)))]
        cx, cy, r = rng.uniform(-0.45, 0.45), rng.uniform(-0.45, 0.45), rng.uniform(0.015, 0.035)
        image[np.hypot(px - cx, py - cy) < r] = np.asarray(colour) / 255

    rotates = species.body != "fish"
    angle = rng.uniform(-np.pi, np.pi) if rotates else rng.uniform(-0.5, 0.5)
    half_length = rng.uniform(0.26, 0.42)
    ox, oy = rng.uniform(-0.08, 0.08, 2)
    mirror = -1 if (not rotates and rng.random() < 0.5) else 1
    x = ((px - ox) * np.cos(angle) + (py - oy) * np.sin(angle)) / half_length * mirror
    y = (-(px - ox) * np.sin(angle) + (py - oy) * np.cos(angle)) / half_length
    width = rng.uniform(0.9, 1.1)
    gain = rng.uniform(0.85, 1.15, 3)
    spot_gain = rng.uniform(0.9, 1.1, 3)
    ground = np.asarray(species.ground, float)
    edge, light = ground * 0.45, np.minimum(ground * 1.3 + 30, 255)
    cover = np.zeros(px.shape, bool)

    def paint(region, rgb, factor=gain):
        image[region] = np.clip(np.asarray(rgb) / 255 * factor, 0, 1)
        cover[region] = True

    if species.body == "beetle":
        for side in (-1, 1):
            for at, reach in ((-0.45, -0.2), (-0.05, 0.1), (0.3, 0.55)):
                paint(_segment(x, y, at, 0, reach, side * 0.62 * width, 0.025), edge)
            paint(_segment(x, y, -0.95, side * 0.05, -1.3, side * 0.35 * width, 0.018), edge)
        paint(_ellipse(x, y, -0.88, 0, 0.13, 0.13 * width), edge)
        paint(_ellipse(x, y, -0.58, 0, 0.22, 0.26 * width), ground * 0.85)
        body = _ellipse(x, y, 0.3, 0, 0.68, 0.36 * width)
        paint(body, ground)
        paint(body & (np.abs(y) < 0.015), edge)
    elif species.body == "bug":
        for side in (-1, 1):
            for at, reach in ((-0.3, -0.45), (0.05, 0.1), (0.35, 0.6)):
                paint(_segment(x, y, at, 0, reach, side * 0.6 * width, 0.022), edge)
            paint(_segment(x, y, -0.85, side * 0.06, -1.2, side * 0.4 * width, 0.016), edge)
        paint(_ellipse(x, y, -0.8, 0, 0.14, 0.12 * width), edge)
        paint((x > -0.7) & (x < -0.3) & (np.abs(y) < (0.2 + (x + 0.7) * 0.55) * width), ground * 0.8)
        body = _ellipse(x, y, 0.25, 0, 0.62, 0.42 * width) & (x > -0.3)
        paint(body, ground)
        paint((x > -0.3) & (x < 0.3) & (np.abs(y) < (0.3 - x) * 0.32 * width), light)  # scutellum
        paint(body & (x > 0.65), edge)  # membrane
    else:
        belly = np.minimum(ground + 70, 255)
        paint(_segment(x, y, 0.75, 0, 1.05, 0.3, 0.05) | _segment(x, y, 0.75, 0, 1.05, -0.3, 0.05)
              | ((x > 0.78) & (x < 1.05) & (np.abs(y) < (x - 0.72) * 1.1)), edge)
        paint((y < 0) & (y > -0.42 * width + 0.5 * np.abs(x + 0.05)) & (np.abs(x + 0.05) < 0.25), edge)
        body = _ellipse(x, y, 0, 0, 0.85, 0.3 * width)
        paint(body, ground)
        paint(body & (y > 0.1 * width), belly)
        paint(body & (np.abs(y - 0.02) < 0.025), edge)
        paint(_ellipse(x, y, -0.68, -0.06, 0.06, 0.06), (240, 240, 235))
        paint(_ellipse(x, y, -0.68, -0.06, 0.03, 0.03), (10, 10, 10))
    spots = _spots(species, x, y, width) & body
    if trait:
        paint(spots, species.spot_colour, spot_gain)

    def down(a):
        return a.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, *a.shape[2:]).mean(axis=(1, 3))

    image, mask, specimen = down(image), down(spots.astype(float)) >= 0.5, down(cover.astype(float)) >= 0.5
    image = gaussian(image, sigma=rng.uniform(0.3, 0.8) * size / 160, channel_axis=-1, preserve_range=True)
    image = (image - 0.5) * rng.uniform(0.85, 1.15) + 0.5 * rng.uniform(0.85, 1.15)
    image += rng.normal(0, rng.uniform(0.005, 0.025), image.shape)
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if rng.random() < 0.5:  # JPEG artefacts, kept in a PNG so the mask shares the file name
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(rng.integers(70, 96)))
        pixels = np.asarray(Image.open(buffer).convert("RGB"))
    return pixels, mask, specimen


def image_rng(seed: int, species: Species, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(species.name.encode()), split == "val", index])


def palette_of(species: tuple[Species, ...]) -> list[tuple[int, int, int]]:
    return sorted({s.spot_colour for s in species})


def write(out: Path, seed: int, per_class: int = 150, val_per_class: int = 40, size: int = 160) -> dict:
    """Write draw `seed` to `out` (see module doc); returns the manifest."""
    out = Path(out)
    if per_class < 1 or val_per_class < 1:
        raise ValueError(f"per_class and val_per_class must be at least 1 (got {per_class}, {val_per_class})")
    if size < 64:
        raise ValueError(f"size must be at least 64 px (got {size}): the spots vanish below that")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ValueError(f"{out} is not empty and holds no earlier look-alike draw; choose a new folder")
    species = draw(seed)
    palette = palette_of(species)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for s in species:
            for index in range(count):
                image, mask, specimen = render(s, image_rng(seed, s, split, index), size, palette)
                name = f"{s.body}_{index:04d}.png"
                for folder, pixels in (("", image), (".masks", mask.astype(np.uint8) * 255),
                                       (".specimens", specimen.astype(np.uint8) * 255)):
                    path = out / split / folder / s.name / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(path)
    groups: dict[str, list[str]] = {}
    for s in species:
        groups.setdefault(s.group, []).append(s.name)
    manifest = {"synthetic": True, "held_out": seed in JUDGE_SEEDS, "seed": seed, "size": size,
                "per_class": per_class, "val_per_class": val_per_class, "groups": groups,
                "species": [asdict(s) for s in species],
                "masks": "<split>/.masks/<species name>/<image file name>",
                "specimen_masks": "<split>/.specimens/<species name>/<image file name>"}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, required=True,
                        help=f"judge seeds {JUDGE_SEEDS[0]}-{JUDGE_SEEDS[-1]}, tune seeds {TUNE_SEEDS[0]}-{TUNE_SEEDS[-1]}")
    parser.add_argument("--per-class", type=int, default=150, help="training images per species")
    parser.add_argument("--val-per-class", type=int, default=40, help="validation images per species")
    parser.add_argument("--size", type=int, default=160, help="image side in px")
    args = parser.parse_args(argv)
    try:
        manifest = write(args.out, args.seed, args.per_class, args.val_per_class, args.size)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote draw {args.seed}: {len(manifest['species'])} species in {len(manifest['groups'])} groups "
          f"x ({args.per_class} train + {args.val_per_class} val) to {args.out}")


if __name__ == "__main__":
    main()
