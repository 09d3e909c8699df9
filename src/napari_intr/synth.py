"""Procedural synthetic "butterfly" specimens organised in mimicry rings.

The project's offline data (tests, demo, bundled model, benchmarks). Species of
one ring share wing shape and colour pattern and differ in ONE small localised
attribute (a spot, or a band's colour), drawn on both wings so flips keep it.
Every image comes with a mask of the ring's attribute region; the mask is the
same for all species of a ring at a given pose, so painting that region from one
species' image into another's is the "change species" edit.

Images are pure functions of (species, Pose, size): `sample_pose` makes all the
random draws, so callers can render the SAME specimen as each species of a ring.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from skimage.filters import gaussian

from napari_intr.manifest import Manifest, write_json
from napari_intr.masks import read_mask

RGB = tuple[int, int, int]
BLACK, WHITE = (20, 18, 16), (245, 245, 240)


@dataclass(frozen=True)
class Band:
    """Stripe across a wing at `position` along its long axis (-1 root .. 1 tip)."""
    position: float
    half_width: float
    colour: RGB
    slant_deg: float = 0.0


@dataclass(frozen=True)
class Wing:
    """Ellipse in canonical coordinates: x outwards from the body, y down, half-span ~1."""
    centre: tuple[float, float]
    semi_axes: tuple[float, float]
    angle_deg: float
    ground: RGB
    bands: tuple[Band, ...] = ()
    margin: float = 0.0  # dark border, as a fraction of the normalised radius
    margin_colour: RGB = BLACK
    taper: float = 0.0  # >0: narrow at the root, broad at the tip (triangular forewings)


@dataclass(frozen=True)
class Site:
    """Where a ring's discriminating attribute sits, in wing-normalised coordinates.

    kind "spot": disc of `size` canonical units (with a dark rim) at (p, q);
    kind "band": stripe at p with half width `size`."""
    wing: str  # "fore" or "hind"
    kind: str
    p: float
    q: float = 0.0
    size: float = 0.12


@dataclass(frozen=True)
class RingLook:
    """Everything species of one ring share: shape, pattern and attribute sites."""
    forewing: Wing
    hindwing: Wing
    tails: bool
    sites: tuple[Site, ...]


@dataclass(frozen=True)
class Species:
    name: str
    ring: str
    attribute: str  # human description of what tells it apart within its ring
    look: RingLook
    site_colours: tuple[RGB | None, ...]  # per ring site; None = attribute absent


_POSTMAN = RingLook(  # narrow forewings, black with a red band, yellow hindwing bar
    Wing((0.50, -0.22), (0.60, 0.23), -22, BLACK, (Band(0.05, 0.22, (205, 30, 35), 25),), taper=0.3),
    Wing((0.33, 0.27), (0.36, 0.27), 38, BLACK, (Band(-0.05, 0.18, (245, 205, 40), -60),)),
    tails=False, sites=(Site("fore", "spot", 0.62, 0.05, 0.12),))
_TIGER = RingLook(  # orange, black apex crossed by a pale band
    Wing((0.48, -0.24), (0.55, 0.29), -30, (235, 125, 25), (Band(0.72, 0.40, BLACK),), 0.12, taper=0.35),
    Wing((0.36, 0.28), (0.42, 0.32), 42, (235, 125, 25), (Band(-0.10, 0.08, BLACK, 30),), 0.22),
    tails=False, sites=(Site("fore", "band", 0.58, 0.0, 0.13),))
_SWALLOWTAIL = RingLook(  # pale yellow with black stripes, tailed hindwings
    Wing((0.50, -0.20), (0.58, 0.30), -15, (240, 225, 135),
         (Band(-0.25, 0.10, BLACK, 10), Band(0.15, 0.09, BLACK, 10), Band(0.55, 0.09, BLACK, 10)), 0.18,
         taper=0.45),
    Wing((0.32, 0.30), (0.40, 0.30), 50, (240, 225, 135), (Band(-0.35, 0.10, BLACK),), 0.25),
    tails=True, sites=(Site("hind", "spot", 0.42, -0.35, 0.11),))
_MORPHO = RingLook(  # broad rounded wings, blue with a wide black border
    Wing((0.47, -0.22), (0.52, 0.34), -25, (40, 110, 215), (), 0.28, taper=0.25),
    Wing((0.36, 0.30), (0.45, 0.38), 45, (40, 110, 215), (), 0.30),
    tails=False, sites=(Site("fore", "spot", 0.58, 0.10, 0.11), Site("hind", "spot", 0.40, -0.15, 0.11)))

SPECIES: tuple[Species, ...] = (
    Species("Heliconia synthetica-rubra", "postman", "no spot beyond the red forewing band",
            _POSTMAN, (None,)),
    Species("Heliconia synthetica-alba", "postman", "white spot near the forewing tip",
            _POSTMAN, (WHITE,)),
    Species("Pseudotigris artefacta-flava", "tiger", "yellow band across the black forewing tip",
            _TIGER, ((250, 215, 30),)),
    Species("Pseudotigris artefacta-nivea", "tiger", "white band across the black forewing tip",
            _TIGER, (WHITE,)),
    Species("Papilionella simulata-coccinea", "swallowtail", "red eyespot on the hindwing",
            _SWALLOWTAIL, ((215, 25, 30),)),
    Species("Papilionella simulata-caerulea", "swallowtail", "blue eyespot on the hindwing",
            _SWALLOWTAIL, ((35, 80, 230),)),
    Species("Morphoides imaginaria-nuda", "morpho", "no white spots on the blue wings",
            _MORPHO, (None, None)),
    Species("Morphoides imaginaria-apicalis", "morpho", "white spot near the forewing tip only",
            _MORPHO, (WHITE, None)),
    Species("Morphoides imaginaria-postica", "morpho", "white spot on the hindwing only",
            _MORPHO, (None, WHITE)),
)
_BY_NAME = {s.name: s for s in SPECIES}
# The look-alike pair the rest of the project points at: identical but for one spot.
SHOWCASE_PAIR = ("Heliconia synthetica-rubra", "Heliconia synthetica-alba")
SYNTH_NOTE = ("These images are procedurally drawn by napari_intr.synth; they are not "
              "photographs of real specimens and the species are fictional.")
_SUPERSAMPLE = 2  # render at 2x and average down: cheap anti-aliasing


# -- many-species mode --------------------------------------------------------------------------
# Procedural species for class counts far beyond a mimicry ring: every combination of a wing
# shape (genus), a ground colour, a pattern and one attribute spot is a species. Species that
# share shape, colour and pattern form a ring and differ only in their attribute, which is drawn
# with its mask as in the hand-made catalogue.

_SHAPES = {  # genus -> (forewing, hindwing, tails) in the canonical frame, without colours
    "Fictilia": (((0.50, -0.22), (0.60, 0.23), -22, 0.3), ((0.33, 0.27), (0.36, 0.27), 38), False),
    "Simulacra": (((0.48, -0.24), (0.55, 0.29), -30, 0.35), ((0.36, 0.28), (0.42, 0.32), 42), False),
    "Caudata": (((0.50, -0.20), (0.58, 0.30), -15, 0.45), ((0.32, 0.30), (0.40, 0.30), 50), True),
    "Latipennis": (((0.47, -0.22), (0.52, 0.34), -25, 0.25), ((0.36, 0.30), (0.45, 0.38), 45), False),
    "Angustala": (((0.52, -0.18), (0.62, 0.18), -10, 0.1), ((0.30, 0.26), (0.30, 0.22), 30), True),
}
_GROUNDS = {  # epithet stem -> wing ground colour; all far from each other and from the spots
    "rubra": (200, 40, 40), "aurantia": (235, 130, 25), "flava": (235, 210, 60),
    "viridis": (50, 150, 70), "caerulea": (40, 100, 210), "violacea": (130, 60, 170),
    "fusca": (110, 70, 40), "grisea": (150, 150, 150),
}
_PATTERNS = ("nuda", "fasciata", "bifasciata", "marginata")  # none, 1 band, 2 bands, dark border
_ATTRIBUTES = {  # epithet suffix -> (description, spot colour or None)
    "immaculata": ("no spot near the forewing tip", None),
    "alba": ("white spot near the forewing tip", WHITE),
    "sanguinea": ("red spot near the forewing tip", (225, 20, 30)),
    "citrina": ("yellow spot near the forewing tip", (250, 235, 20)),
    "cyanea": ("blue spot near the forewing tip", (30, 60, 240)),
}
_MANY_SITE = Site("fore", "spot", 0.62, 0.05, 0.14)
MANY_SPECIES_MAX = len(_SHAPES) * len(_GROUNDS) * len(_PATTERNS) * len(_ATTRIBUTES)


def _pattern_bands(pattern: str, ground: RGB) -> tuple[tuple[Band, ...], float]:
    dark = sum(ground) < 330  # bands must contrast with the ground
    ink = (240, 235, 215) if dark else BLACK
    if pattern == "fasciata":
        return (Band(0.05, 0.16, ink, 25),), 0.0
    if pattern == "bifasciata":
        return (Band(-0.30, 0.10, ink, 10), Band(0.25, 0.10, ink, 10)), 0.0
    if pattern == "marginata":
        return (), 0.25
    return (), 0.0


def _many_look(genus: str, ground_name: str, pattern: str) -> RingLook:
    (fc, fa, fangle, taper), (hc, ha, hangle), tails = _SHAPES[genus]
    ground = _GROUNDS[ground_name]
    bands, margin = _pattern_bands(pattern, ground)
    return RingLook(Wing(fc, fa, fangle, ground, bands, margin, taper=taper),
                    Wing(hc, ha, hangle, ground, bands[:1], margin), tails, (_MANY_SITE,))


def _all_many_species() -> tuple[Species, ...]:
    species = []
    for genus in _SHAPES:
        for ground in _GROUNDS:
            for pattern in _PATTERNS:
                look = _many_look(genus, ground, pattern)
                ring = f"{genus} {ground}-{pattern}"
                for suffix, (description, colour) in _ATTRIBUTES.items():
                    species.append(Species(f"{ring}-{suffix}", ring, description, look, (colour,)))
    return tuple(species)


_MANY: dict[str, Species] = {}


def many_species(count: int) -> tuple[Species, ...]:
    """`count` procedural species (5 genera × 8 colours × 4 patterns × 5 attributes available),
    whole rings first, in a fixed order: many_species(n) is a prefix of many_species(n + 1)."""
    if not 2 <= count <= MANY_SPECIES_MAX:
        raise ValueError(f"the many-species mode draws 2 to {MANY_SPECIES_MAX} species, got {count}")
    if not _MANY:
        everything = _all_many_species()
        # Spread a prefix over all genera and colours: interleave the rings by a fixed permutation.
        rings = sorted({s.ring for s in everything})
        order = np.random.default_rng(20240).permutation(len(rings))
        by_ring = {ring: [s for s in everything if s.ring == ring] for ring in rings}
        _MANY.update((s.name, s) for index in order for s in by_ring[rings[index]])
    return tuple(_MANY.values())[:count]


def find_species(name: str) -> Species:
    """A species of the hand-made catalogue or of the many-species mode, by name."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    if not _MANY:
        many_species(MANY_SPECIES_MAX)
    if name in _MANY:
        return _MANY[name]
    raise ValueError(f"unknown species {name!r}; choose one of {sorted(_BY_NAME)} or a name from "
                     "many_species()")


def choose_species(names: list[str]) -> tuple[Species, ...]:
    """Species chosen by name or by ring (every species of it), from the hand-made catalogue or the
    many-species mode, in the order given. Many-species names (e.g. "Fictilia rubra-nuda-alba",
    ring "Fictilia rubra-nuda") are species the bundled model has never seen: open-set test data."""
    if not _MANY:
        many_species(MANY_SPECIES_MAX)
    everything = (*SPECIES, *_MANY.values())
    chosen: dict[str, Species] = {}
    for name in names:
        found = [s for s in everything if s.name == name] or [s for s in everything if s.ring == name]
        if not found:
            rings = sorted({s.ring for s in SPECIES})
            raise ValueError(f"no species or ring is called {name!r}: give names of the catalogue "
                             f"({', '.join(s.name for s in SPECIES[:2])}, …), its rings ({', '.join(rings)}), or "
                             "many-species names such as 'Fictilia rubra-nuda-alba' (species the bundled model "
                             "has never seen)")
        chosen.update((s.name, s) for s in found)
    return tuple(chosen.values())


def look_alike_pairs(species: tuple[Species, ...] = SPECIES) -> list[tuple[str, str]]:
    """All pairs of species in the same ring (the showcase pair comes first)."""
    pairs = [(a.name, b.name) for a, b in combinations(species, 2) if a.ring == b.ring]
    return sorted(pairs, key=lambda pair: pair != SHOWCASE_PAIR)


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


@dataclass(frozen=True)
class Pose:
    """All random draws for one specimen; resolution-independent and species-independent."""
    angle_deg: float
    scale: float                   # wingspan as a fraction of the image size
    offset: tuple[float, float]    # centre shift as a fraction of the image size
    wing_stretch: float            # individual variation of wing size
    colour_gain: tuple[float, float, float]  # individual variation of wing colours
    background: tuple[RGB, RGB]    # gradient end colours
    gradient_deg: float
    texture_seed: int
    texture_strength: float
    brightness: float
    contrast: float
    temperature: float             # >0 warmer (more red, less blue)
    blur: float                    # Gaussian sigma in pixels at 128 px
    noise_sigma: float             # on the 0..1 intensity scale
    noise_seed: int
    # Spot-like discs lying in the background: (centre x, centre y, radius) as fractions of the
    # image size, and a colour. Every species gets them alike, so a model cannot name a species
    # from "a white spot somewhere" and has to look at where on the wing the spot sits.
    distractors: tuple[tuple[float, float, float, RGB], ...] = ()


def _random_colour(rng: np.random.Generator) -> RGB:
    # Muted colours only, so the background never looks like a wing pattern.
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.1, 0.55), rng.uniform(0.35, 0.85)
    k = (np.array([5, 3, 1]) + hue * 6) % 6  # HSV -> RGB
    rgb = val * (1 - sat * np.clip(np.minimum(k, 4 - k), 0, 1))
    return tuple(int(round(c * 255)) for c in rgb)


def sample_pose(rng: np.random.Generator, size: int = 128) -> Pose:
    """Draw a pose, background, lighting and noise. `size` only checks the image size:
    the pose is resolution-independent and can be rendered at any size."""
    if size < 32:
        raise ValueError(f"size must be at least 32 px (got {size}); attributes vanish below that")
    scale = rng.uniform(0.6, 0.9)
    room = max(0.0, 0.5 - 0.5 * scale) * 0.6  # keep the attribute sites in frame
    return Pose(
        angle_deg=rng.uniform(-30, 30), scale=scale,
        offset=(rng.uniform(-room, room), rng.uniform(-room, room)),
        wing_stretch=rng.uniform(0.94, 1.06),
        colour_gain=tuple(rng.uniform(0.92, 1.08, 3)),
        background=(_random_colour(rng), _random_colour(rng)),
        gradient_deg=rng.uniform(0, 360), texture_seed=int(rng.integers(2**31)),
        texture_strength=rng.uniform(0.03, 0.12),
        brightness=rng.uniform(0.85, 1.15), contrast=rng.uniform(0.85, 1.15),
        temperature=rng.uniform(-0.08, 0.08), blur=rng.uniform(0.3, 0.8),
        noise_sigma=rng.uniform(0.005, 0.03), noise_seed=int(rng.integers(2**31)),
        distractors=_distractors(rng))


def _distractors(rng: np.random.Generator) -> tuple[tuple[float, float, float, RGB], ...]:
    colours = sorted({colour for species in SPECIES for colour in species.site_colours if colour})
    count = int(rng.choice([0, 1, 2, 3], p=[0.4, 0.3, 0.2, 0.1]))
    return tuple((float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.05, 0.95)),
                  float(rng.uniform(0.025, 0.05)), colours[int(rng.integers(len(colours)))])
                 for _ in range(count))


def _wing_coords(wing: Wing, u, v, stretch):
    """Wing-normalised coordinates: p along the long axis (root -1, tip 1), q across,
    and the squared shape radius (<= 1 inside the wing)."""
    a, b = wing.semi_axes[0] * stretch, wing.semi_axes[1] * stretch
    t = np.deg2rad(wing.angle_deg)
    du, dv = u - wing.centre[0], v - wing.centre[1]
    p, q = (du * np.cos(t) + dv * np.sin(t)) / a, (-du * np.sin(t) + dv * np.cos(t)) / b
    return p, q, p ** 2 + (q / (1 + wing.taper * p)) ** 2


def _near_segment(x, y, start, end, width):
    (x0, y0), (x1, y1) = start, end
    t = np.clip(((x - x0) * (x1 - x0) + (y - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0, 1)
    return np.hypot(x - x0 - t * (x1 - x0), y - y0 - t * (y1 - y0)) < width


def _rasterise(species: Species, pose: Pose, size: int):
    """Specimen colour (H×W×3, 0..1, premultiplied by coverage), coverage (H×W, 0..1)
    and attribute mask (H×W bool)."""
    n, look = size * _SUPERSAMPLE, species.look
    pix = (np.arange(n) + 0.5) / _SUPERSAMPLE
    py, px = np.meshgrid(pix - size * (0.5 + pose.offset[1]), pix - size * (0.5 + pose.offset[0]),
                         indexing="ij")
    t, half_span = np.deg2rad(pose.angle_deg), pose.scale * size / 2
    x = (px * np.cos(t) + py * np.sin(t)) / half_span  # undo the rotation: canonical frame
    y = (-px * np.sin(t) + py * np.cos(t)) / half_span
    u = np.abs(x)  # mirror: both wings are drawn from one description
    colour, cover = np.zeros((n, n, 3)), np.zeros((n, n), bool)
    attribute = np.zeros((n, n), bool)

    def paint(region, rgb):
        colour[region] = np.asarray(rgb) / 255.0
        cover[region] = True
        attribute[region] = False  # later layers hide the attribute below them

    if look.tails:  # drawn first so the hindwing overlaps their root
        tail = ((u - 0.48) / 0.06) ** 2 + ((y - 0.72) / 0.24) ** 2 < 1
        paint(tail, BLACK)
    for name in ("hind", "fore"):  # forewing overlaps hindwing, as in real butterflies
        wing = look.hindwing if name == "hind" else look.forewing
        p, q, radius2 = _wing_coords(wing, u, y, pose.wing_stretch)
        inside = radius2 <= 1
        paint(inside, wing.ground)
        for band in wing.bands:
            s = np.deg2rad(band.slant_deg)
            paint(inside & (np.abs(p * np.cos(s) + q * np.sin(s) - band.position) < band.half_width),
                  band.colour)
        if wing.margin:
            paint(inside & (radius2 > (1 - wing.margin) ** 2), wing.margin_colour)
        for site, site_colour in zip(look.sites, species.site_colours):
            if site.wing != name:
                continue
            if site.kind == "band":
                region = inside & (np.abs(p - site.p) < site.size) & (radius2 < (1 - wing.margin) ** 2)
                paint(region, site_colour or wing.ground)
            else:  # spot: canonical radius, so it stays round whatever the wing's proportions
                a, b = np.asarray(wing.semi_axes) * pose.wing_stretch
                dist = np.hypot((p - site.p) * a, (q - site.q) * b)
                region = inside & (dist < site.size * 1.3)
                if site_colour is not None:  # dark rim keeps the spot crisp on any ground
                    paint(region, BLACK)
                    paint(dist < site.size, site_colour)
            attribute |= region
    paint(((x / 0.055) ** 2 + ((y - 0.05) / 0.45) ** 2 < 1) | (np.hypot(x, y + 0.44) < 0.075),
          (45, 35, 30))  # body and head
    antennae = (_near_segment(u, y, (0.02, -0.48), (0.24, -0.95), 0.014)
                | (np.hypot(u - 0.24, y + 0.95) < 0.035))
    paint(antennae, BLACK)
    colour *= np.asarray(pose.colour_gain)

    def down(a):  # average each supersample block
        return a.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, *a.shape[2:]).mean(axis=(1, 3))
    return down(colour), down(cover.astype(float)), down(attribute.astype(float)) > 0


def _background(pose: Pose, size: int) -> np.ndarray:
    grid = (np.arange(size) + 0.5) / size - 0.5
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    g = np.deg2rad(pose.gradient_deg)
    ramp = np.clip(xx * np.cos(g) + yy * np.sin(g) + 0.5, 0, 1)[..., None]
    c0, c1 = (np.asarray(c) / 255.0 for c in pose.background)
    # Low-frequency texture: a coarse random grid, smoothly upsampled (size-independent).
    coarse = np.random.default_rng(pose.texture_seed).normal(size=(6, 6)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
    background = c0 + (c1 - c0) * ramp + pose.texture_strength * texture[..., None]
    for cx, cy, radius, rgb in pose.distractors:  # drawn like the wing spots: dark rim, coloured disc
        distance = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy)
        background[distance < radius * 1.3] = np.asarray(BLACK) / 255.0
        background[distance < radius] = np.asarray(rgb) / 255.0
    return background


def render(species_name: str, pose: Pose, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Image (uint8 H×W×3) and attribute mask (bool H×W); a pure function of its inputs."""
    image, mask, _ = render_with_coverage(species_name, pose, size)
    return image, mask


def render_with_coverage(species_name: str, pose: Pose, size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`render`'s image and attribute mask, plus the specimen's coverage (float H×W, 0..1: the
    share of each pixel the specimen covers; 0 is background)."""
    colour, cover, mask = _rasterise(find_species(species_name), pose, size)
    return _finish(colour, cover, pose, size), mask, cover


def _finish(colour: np.ndarray, cover: np.ndarray, pose: Pose, size: int) -> np.ndarray:
    """Specimen over its background, then blur, lighting and noise -> uint8 image."""
    # colour is premultiplied by coverage (block average), so edges blend with the background
    image = colour + _background(pose, size) * (1 - cover[..., None])
    # truncate=3: the blur spreads an attribute edit by at most ~3 px beyond its mask
    image = gaussian(image, sigma=pose.blur * size / 128, truncate=3, channel_axis=-1,
                     preserve_range=True)
    image = (image - 0.5) * pose.contrast + 0.5
    image = image * pose.brightness * np.array([1 + pose.temperature, 1, 1 - pose.temperature])
    image += np.random.default_rng(pose.noise_seed).normal(0, pose.noise_sigma, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def image_rng(seed: int, species_name: str, index: int) -> np.random.Generator:
    """Per-image generator: keyed on the species NAME (not its catalogue position) and
    the image index, so adding species or images never changes existing ones."""
    return np.random.default_rng([seed, zlib.crc32(species_name.encode()), index])


# A synthetic collection on disk (this module is its one owner): OUT/<species>/<file>.png (or
# OUT/train/… and OUT/val/…), each image's attribute mask and specimen mask in hidden folders beside
# the class folders, and OUT/synth.json (species, rings, look-alike pairs).
SYNTH_JSON, MASKS_FOLDER, SPECIMENS_FOLDER = "synth.json", ".masks", ".specimens"


def beside(image_path: str | Path, folder: str) -> Path:
    """out/<species>/<file>.png -> out/<folder>/<species>/<file>.png (hidden from loaders)."""
    image_path = Path(image_path)
    return image_path.parent.parent / folder / image_path.parent.name / image_path.name


def mask_path(image_path: str | Path) -> Path:
    """Where the image's attribute mask is."""
    return beside(image_path, MASKS_FOLDER)


def specimen_mask_path(image_path: str | Path) -> Path:
    """Where the specimen (not the background) is, for statistics such as the trait atlas's "peak
    on the specimen"."""
    return beside(image_path, SPECIMENS_FOLDER)


def read_info(folder: str | Path) -> dict | None:
    """The folder's synth.json, or None when it has none."""
    path = Path(folder) / SYNTH_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def load_mask(image_path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """The attribute mask of an image (None without one); see napari_intr.masks.read_mask."""
    return read_mask(mask_path(image_path), shape, "attribute mask")


def _clear_previous_run(out: Path) -> None:
    """Remove what an earlier synth run wrote into `out` (the files its manifest lists, unchanged);
    refuse, before removing anything, if anything else lives there (napari_intr.manifest)."""
    entries = sorted(out.iterdir())
    if not entries:
        return
    try:
        previous = json.loads((out / SYNTH_JSON).read_text(encoding="utf-8"))
        assert previous.get("synthetic") is True
    except Exception:
        raise ValueError(f"{out} already contains files that are not from a previous synth run "
                         f"(e.g. {entries[0]}); choose an empty or new folder so nothing of yours is "
                         "removed") from None
    Manifest.from_json(out, previous.get("files"), out / SYNTH_JSON).remove_written(keep={SYNTH_JSON})
    (out / SYNTH_JSON).unlink()


def write_collection(out: str | Path, per_class: int = 40, size: int = 128, seed: int = 0,
                     progress: Callable[[int, int], None] | None = None, species_count: int | None = None,
                     val_per_class: int = 0, only: list[str] | None = None) -> dict:
    """Write images, masks and synth.json (see module doc); returns the summary.

    species_count: the many-species mode (`many_species(species_count)`) instead of the
    hand-made catalogue. val_per_class > 0: out/train/<species>/ and out/val/<species>/ (the
    validation images are further draws, never seen in training). only: draw just these species or
    rings (`choose_species`), from the catalogue or the many-species mode."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1 (got {per_class}); ask for 1 or more images")
    if size < 32:
        raise ValueError(f"size must be at least 32 px (got {size}); attributes vanish below that")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder path for the synthetic collection")
    if val_per_class < 0:
        raise ValueError(f"val_per_class must be 0 or more (got {val_per_class})")
    if only is not None and species_count is not None:
        raise ValueError("choose species either by count (--species N) or by name (--only), not both")
    catalogue = choose_species(only) if only is not None else (
        SPECIES if species_count is None else many_species(species_count))
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous_run(out)
    splits = [(out, range(per_class))] if not val_per_class else [
        (out / "train", range(per_class)), (out / "val", range(per_class, per_class + val_per_class))]
    total, done = (per_class + val_per_class) * len(catalogue), 0
    written = Manifest(out)
    for species in catalogue:
        for folder, indices in splits:
            for index in indices:
                pose = sample_pose(image_rng(seed, species.name, index), size)
                colour, cover, mask = _rasterise(species, pose, size)
                image = _finish(colour, cover, pose, size)
                path = folder / species.name / f"{slug(species.name)}_{index:04d}.png"
                for target, pixels in ((path, image), (mask_path(path), mask.astype(np.uint8) * 255),
                                       (specimen_mask_path(path), (cover > 0.5).astype(np.uint8) * 255)):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(target)
                    written.add(target)
                done += 1
                if progress is not None:
                    progress(done, total)
    summary = {
        "synthetic": True, "note": SYNTH_NOTE, "seed": seed, "size": size, "per_class": per_class,
        "val_per_class": val_per_class, "mode": "chosen" if only is not None else "catalogue" if species_count is None else "many-species",
        "species": [{"name": s.name, "ring": s.ring, "attribute": s.attribute} for s in catalogue],
        "look_alike_pairs": [list(pair) for pair in look_alike_pairs(catalogue)],
        "masks": f"{MASKS_FOLDER}/<species name>/<image file name>",
        "specimen_masks": f"{SPECIMENS_FOLDER}/<species name>/<image file name>",
        "files": written.to_json(),  # what a later run into `out` may remove (and nothing else)
    }
    write_json(out / SYNTH_JSON, summary)
    return summary
