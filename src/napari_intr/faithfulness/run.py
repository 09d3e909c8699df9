"""`intr eval --explanations`: every metric for every method on one model and image folder."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from napari_intr.collection.scan import read_image
from napari_intr.explanation import layer_from_number, layer_number
from napari_intr.image_files import reason
from napari_intr.model import INTR

from .. import synth
from . import flips, metrics, report, sanity
from .methods import INTR_TOP_HEAD, METHODS, ClassScore, all_maps, intr_maps

SANITY_SIZE = 112   # maps are compared at most this many px per side (memory on large data sets)
EXAMPLES = 4        # images in the example grid
FLIP_POSES = 10     # specimens per pair and direction (fewer with --limit)


@dataclass(frozen=True)
class Settings:
    """What `intr eval --explanations` measures (see options.py for each setting's meaning)."""
    out: Path
    model_name: str
    layer: int = -1                      # 1-based; -1: the last
    rise_masks: int = 500
    steps: int = 50
    explain_class: str = "predicted"     # or "true"
    limit: int | None = None


def spread(samples: list[tuple[Path, int]], limit: int | None) -> list[tuple[Path, int]]:
    """Round-robin over the classes, so a small --limit still sees every class."""
    by_class: dict[int, list] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    mixed = [s for group in zip_longest(*by_class.values()) for s in group if s is not None]
    return mixed[:limit] if limit else mixed


def synth_info(root: Path, folder: Path) -> dict | None:
    for place in (folder, root):
        info = synth.read_info(place)
        if info and info.get("look_alike_pairs") and info.get("species"):
            return info
    return None


def _small(saliency: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))[None, None]
    scale = SANITY_SIZE / max(tensor.shape[-2:])
    if scale < 1:
        tensor = F.interpolate(tensor, scale_factor=scale, mode="area")
    return tensor[0, 0].numpy()


@dataclass
class Measurements:
    """What the images gave, per (method, metric): the values to average, and what the later
    steps reuse (each image's trained maps for the sanity check, examples for the plot)."""
    values: dict = field(default_factory=lambda: {(method, key): [] for method in METHODS
                                                  for key, _ in report.METRICS})
    curves: dict = field(default_factory=lambda: {kind: {m: [] for m in METHODS} for kind in ("insertion", "deletion")})
    trained_maps: list = field(default_factory=list)
    explained: list = field(default_factory=list)  # (inputs, explained class) per image
    examples: list = field(default_factory=list)
    masks_missing: int = 0


def evaluate_explanations(model: INTR, samples: list[tuple[Path, int]], root: Path, folder: Path,
                          settings: Settings) -> dict:
    """Every metric for every method: measure the images, check the masks, randomise, flip, report."""
    layer = layer_from_number(settings.layer, model.config.dec_layers, "--layer")
    out = Path(settings.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    samples = spread(samples, settings.limit)
    info = synth_info(root, folder)
    notes: list[str] = []
    if info is None:
        notes.append("no synth.json with look-alike pairs in the data folder: the look-alikes-only pointing game "
                     "and the manipulation flip rate are skipped")
    measured = Measurements()
    ring_of = look_alike_rings(info)
    skipped = []
    for number, (path, true_index) in enumerate(tqdm(samples, desc="explanations", unit="image")):
        try:
            measure_image(model, path, true_index, number, layer, settings, ring_of, measured)
        except (ValueError, OSError) as error:  # one unreadable image or mask never ends the evaluation
            skipped.append(f"skipped {path}: {reason(error)}")
    if len(skipped) == len(samples):
        raise ValueError(f"none of the {len(samples)} images could be measured:\n  " + "\n  ".join(skipped[:5]))
    notes += skipped
    measured_count = len(samples) - len(skipped)
    notes += mask_notes(measured, info is not None, measured_count)
    sanity_check(model, layer, settings, measured)
    flip_summary = flip_rate(model, info, settings, notes) if info is not None else None
    return write_report(model, folder, out, layer, settings, measured_count, measured, flip_summary, notes)


def look_alike_rings(info: dict | None) -> dict[str, list[str]]:
    """Species name -> the names in its mimicry ring (synth.json)."""
    rings: dict[str, list[str]] = {}
    for species in (info or {}).get("species", []):
        rings.setdefault(species["ring"], []).append(species["name"])
    return {name: members for members in rings.values() for name in members}


def measure_image(model: INTR, path: Path, true_index: int, number: int, layer: int, settings: Settings,
                  ring_of: dict[str, list[str]], measured: Measurements) -> None:
    """Insertion/deletion and, where the image has an attribute mask, the pointing games."""
    image = read_image(path)
    mask = synth.load_mask(path, image.shape[:2])  # a damaged or mis-sized mask: refused before any measure
    inputs = model.preprocess(image)
    with torch.inference_mode():
        predicted = int(model(inputs, return_attention=False).logits[0].argmax())
    target = predicted if settings.explain_class == "predicted" else true_index
    maps = all_maps(model, inputs, target, layer, settings.rise_masks, seed=number)
    score = ClassScore(model, target)
    for method, saliency in maps.items():
        for kind, curve in (("insertion", metrics.insertion_curve(score, inputs[0], saliency, settings.steps)),
                            ("deletion", metrics.deletion_curve(score, inputs[0], saliency, settings.steps))):
            measured.curves[kind][method].append(curve)
            measured.values[method, kind].append(metrics.auc(curve))
    if mask is not None and mask.any():
        mask = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=inputs.shape[-2:],
                             mode="nearest")[0, 0].numpy() > 0.5
        stride = model.feature_stride
        grids = {**{m: metrics.on_grid(s, stride) for m, s in maps.items()},
                 **intr_maps(model, inputs, target, layer, on_grid=True)}  # INTR: the raw weights
        for method, saliency in maps.items():
            measured.values[method, "pointing"].append(float(metrics.pointing_hit(saliency, mask)))
            measured.values[method, "pointing_strict"].append(
                float(metrics.strict_pointing_hit(grids[method], mask, stride)))
        name = model.class_names[true_index]
        ring = [model.class_names.index(n) for n in ring_of.get(name, []) if n in model.class_names]
        if len(ring) >= 2:
            ring_target = target if settings.explain_class == "true" else _top_among(model, inputs, ring)
            for method, saliency in intr_maps(model, inputs, ring_target, layer, ring, "drop").items():
                measured.values[method, "pointing_look_alikes"].append(float(metrics.pointing_hit(saliency, mask)))
            for method, grid in intr_maps(model, inputs, ring_target, layer, ring, "drop", on_grid=True).items():
                measured.values[method, "pointing_look_alikes_strict"].append(
                    float(metrics.strict_pointing_hit(grid, mask, stride)))
    else:
        measured.masks_missing += 1
    measured.trained_maps.append({m: _small(s) for m, s in maps.items()})
    measured.explained.append((inputs.cpu(), target))
    if len(measured.examples) < EXAMPLES:
        measured.examples.append({"image": inputs[0].cpu().numpy(), "maps": maps,
                                  "title": f"{path.name}\ntrue {model.class_names[true_index]}\n"
                                           f"explained {model.class_names[target]}"})


def mask_notes(measured: Measurements, has_rings: bool, images: int) -> list[str]:
    notes = []
    missing = measured.masks_missing
    if missing:
        notes.append(f"{missing} of {images} images have no attribute mask (intr synth writes "
                     "them in DATA/.masks/): the pointing game is over the others" if missing < images
                     else "no attribute masks (DATA/.masks/<class>/<image>, written by intr synth): "
                          "the pointing game is skipped")
    if has_rings and missing < images and not measured.values[INTR_TOP_HEAD, "pointing_look_alikes"]:
        notes.append("no image's class has a look-alike the model knows: the look-alikes-only pointing game "
                     "is skipped")
    return notes


def sanity_check(model: INTR, layer: int, settings: Settings, measured: Measurements) -> None:
    """Cascading randomisation: how much each method's maps still look like the trained model's."""
    for stage, randomised in sanity.cascade(model):
        for index, ((inputs, target), trained) in enumerate(
                tqdm(list(zip(measured.explained, measured.trained_maps)), desc=f"sanity: random {stage}",
                     unit="image")):
            maps = all_maps(randomised, inputs.to(model.device), target, layer, settings.rise_masks, seed=index)
            for method, saliency in maps.items():
                measured.values[method, f"sanity_{stage}"].append(
                    metrics.rank_correlation(_small(saliency), trained[method]))


def flip_rate(model: INTR, info: dict, settings: Settings, notes: list[str]) -> dict:
    """Manipulation flip rate on the look-alike pairs of synth.json."""
    pairs = [tuple(pair) for pair in info["look_alike_pairs"]]
    poses = min(FLIP_POSES, settings.limit) if settings.limit else FLIP_POSES
    with tqdm(total=2 * len(pairs) * poses, desc="flip rate", unit="edit") as bar:
        counts = flips.flip_counts(model, pairs, poses, int(info.get("size", 128)),
                                   int(info.get("seed", 0)), progress=bar.update)
    notes += counts.notes
    attribute, background = counts.rates()
    if not counts.edited:
        notes.append("flip rate: the model named no specimen of a look-alike pair correctly, so no edit "
                     "could flip it")
    return {"edited": counts.edited, "attribute": attribute, "background": background}


def write_report(model: INTR, folder: Path, out: Path, layer: int, settings: Settings, images: int,
                 measured: Measurements, flip_summary: dict | None, notes: list[str]) -> dict:
    """faithfulness.csv, faithfulness.md and the two plots; returns the summary for `intr eval`."""
    values = measured.values
    rows = [report.Row.of(method, key, values[method, key]) for method in METHODS for key, _ in report.METRICS
            if values[method, key]]
    if flip_summary is not None:
        rows += [report.Row("INTR model", "flip_rate_attribute", flip_summary["attribute"], flip_summary["edited"]),
                 report.Row("INTR model", "flip_rate_background", flip_summary["background"], flip_summary["edited"])]
    header = (f"Faithfulness of the explanations of {settings.model_name} on {images} images of {folder} "
              f"(INTR maps from decoder layer L{layer_number(layer)}; {settings.explain_class} class; "
              f"{settings.steps} insertion/deletion steps; RISE with {settings.rise_masks} masks). "
              "Mean over images; the sanity columns are Spearman correlations with the trained model's maps.")
    text = report.markdown([r for r in rows if not r.metric.startswith("flip")], flip_summary, notes, header)
    report.write_csv(rows, out / "faithfulness.csv")
    (out / "faithfulness.md").write_text(text, encoding="utf-8")
    report.plot_curves(measured.curves, out / "insertion_deletion.png")
    report.plot_examples(measured.examples, list(METHODS), out / "example_maps.png")
    return {"rows": [{**vars(r), "value": finite(r.value)} for r in rows], "flips": flip_summary, "notes": notes,
            "markdown": text, "out": str(out), "images": images}


def _top_among(model: INTR, inputs: torch.Tensor, classes: list[int]) -> int:
    with torch.inference_mode():
        logits = model.decode(model.encode(inputs), classes, "drop", return_attention=False).logits[0]
    return classes[int(logits.argmax())]


def finite(value: float) -> float | None:
    return None if math.isnan(value) else value
