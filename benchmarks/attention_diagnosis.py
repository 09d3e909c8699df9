"""Where INTR's heads look, and why: the diagnosis of issue 21, in numbers.

    python benchmarks/attention_diagnosis.py --model sample --data /tmp/synth [--limit 90] [--json out.json]

DATA: class folders of images with trait masks beside them as `intr synth` and
benchmarks/lookalike_draws.py write them (DATA/.masks/<class>/<file>, DATA/.specimens/<class>/<file>);
for a draw give its val/ folder. Per image, the predicted class's maps at the last decoder layer
(the raw cross-attention weights on the feature grid) are read:

- grid-strict pointing (the head's peak feature cell overlaps the trait mask) of the head shown
  first under each ranking rule: by peak weight (the rule before issue 21), by evidence (masking
  drop against the runner-up, `napari_intr.head_evidence`), the head mean, and every single head;
- where each head's peak goes when it misses: a cell beside the trait (8-neighbourhood), elsewhere
  on the specimen, the background; whether it is on the image border; and, per head, the share of
  images whose peak is the head's most frequent cell (the same token in every image);
- encoder mixing: the trait's pixels are set to the mean colour (0 after normalisation) and the
  image encoded again. Of all the change in the encoder's output tokens, which share falls on
  tokens away from the trait (not on it, not beside it)? The same share of the backbone's
  projected features says what the convolutions alone spread; the difference is what the
  encoder's self-attention carried. And for the shown head's peak token when it misses: how much
  its encoder output changes (relative to its norm) against how much its backbone feature does.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import binary_dilation

from napari_intr.head_evidence import MASK_RADIUS, flags_of, masking_drops, rank_heads, rival_of
from napari_intr.image_files import read_image
from napari_intr.loading import load_model

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
RULES = ("peak", "evidence", "mean")


def items(folder: Path, class_names: list[str]) -> list[tuple[Path, int, Path, Path]]:
    """(image, class index, trait mask, specimen mask) for every image that has both masks."""
    found = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if class_dir.name not in class_names:
            continue
        for image in sorted(class_dir.iterdir()):
            trait = folder / ".masks" / class_dir.name / image.name
            specimen = folder / ".specimens" / class_dir.name / image.name
            if image.suffix.lower() in IMAGE_SUFFIXES and trait.is_file() and specimen.is_file():
                found.append((image, class_names.index(class_dir.name), trait, specimen))
    return found


def spread(samples: list, limit: int | None) -> list:
    by_class: dict[int, list] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    mixed = [s for group in zip(*by_class.values()) for s in group]
    return mixed[:limit] if limit else mixed


def cells_of(mask: np.ndarray, shape: tuple[int, int], stride: int, grid: tuple[int, int],
             shift: int = 0) -> np.ndarray:
    """A pixel mask -> [h, w] bool, True where a feature cell holds any masked pixel at the input size.
    Cell (i, j) covers input pixels [stride*i - shift, stride*(i+1) - shift) each way: shift 0 is the
    product's placement (Explanation.grid_to_image), stride // 2 centres cells where a stack of
    padded stride-2 convolutions centres their receptive field (tuning the placement)."""
    resized = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(shape[::-1], Image.NEAREST)) > 127
    padded = np.zeros((grid[0] * stride + abs(shift), grid[1] * stride + abs(shift)), bool)
    if shift >= 0:
        padded[shift: shift + shape[0], shift: shift + shape[1]] = resized
    else:
        padded[: shape[0] + shift, : shape[1] + shift] = resized[-shift:, -shift:]
    padded = padded[: grid[0] * stride, : grid[1] * stride]
    return padded.reshape(grid[0], stride, grid[1], stride).any(axis=(1, 3)), resized


def share_of(cells: np.ndarray, grid_mask: np.ndarray) -> float:
    total = cells.sum()
    return float(cells[grid_mask].sum() / total) if total > 0 else float("nan")


def diagnose_image(model, path: Path, true_index: int, trait_path: Path, specimen_path: Path,
                   radius: int = MASK_RADIUS, shift: int = 0) -> dict | None:
    inputs = model.preprocess(read_image(path))
    shape, stride = tuple(inputs.shape[-2:]), model.feature_stride
    with torch.inference_mode():
        features, feature_mask, pos = model.backbone(inputs, torch.zeros(1, *shape, dtype=torch.bool))
        encoded = model.encode_features(features, feature_mask, shape, pos)
        output = model.decode(encoded, None, return_attention=True, attention_layers=[-1])
    grid = encoded.grid
    trait_cells, trait_pixels = cells_of(np.asarray(Image.open(trait_path).convert("L")) > 127, shape, stride, grid,
                                         shift)
    if not trait_cells.any():
        return None
    specimen_cells, _ = cells_of(np.asarray(Image.open(specimen_path).convert("L")) > 127, shape, stride,
                                  grid, shift)
    logits = output.logits[0].float().cpu().numpy()
    predicted = int(np.argmax(logits))
    maps = output.attention[0, 0, :, predicted].float().cpu().numpy()  # [heads, h, w], pixels only
    nothing = None if output.null_attention is None else output.null_attention[0, 0, :, predicted].tolist()
    heads = len(maps)
    peaks = [np.unravel_index(int(m.argmax()), grid) for m in maps]
    neighbour = binary_dilation(trait_cells, np.ones((3, 3), bool)) & ~trait_cells
    border = np.zeros(grid, bool)
    border[[0, -1], :] = border[:, [0, -1]] = True

    def where(cell) -> str:
        if trait_cells[cell]:
            return "trait"
        if neighbour[cell]:
            return "beside the trait"
        return "specimen" if specimen_cells[cell] else "background"

    rival = rival_of(logits, predicted)
    start = time.perf_counter()
    drops = masking_drops(model, encoded, [(predicted, rival)], maps[None], radius)[0]
    evidence_seconds = time.perf_counter() - start
    on_specimen = [bool(specimen_cells[p]) for p in peaks]
    shown = {"peak": int(np.argmax(maps.reshape(heads, -1).max(axis=1))),
             "evidence": rank_heads(drops, flags_of(drops))[0]}
    mean_peak = np.unravel_index(int(maps.mean(axis=0).argmax()), grid)

    # encoder mixing: hide the trait's pixels, encode again
    hidden = inputs.clone()
    hidden[..., torch.from_numpy(trait_pixels)] = 0.0
    with torch.inference_mode():
        src = model.input_proj(features)
        features2, _, _ = model.backbone(hidden, torch.zeros(1, *shape, dtype=torch.bool))
        src2 = model.input_proj(features2)
        memory2 = model.encode_features(features2, feature_mask, shape, pos).memory
    memory = encoded.memory
    delta_memory = (memory2 - memory)[0].norm(dim=-1).reshape(grid).cpu().numpy()
    delta_features = (src2 - src)[0].norm(dim=0).cpu().numpy()
    away = ~(trait_cells | neighbour)
    norm_memory = memory[0].norm(dim=-1).reshape(grid).cpu().numpy()
    norm_features = src[0].norm(dim=0).cpu().numpy()
    shown_cell = peaks[shown["evidence"]]
    return {
        "image": path.name, "true": true_index, "predicted": predicted, "correct": predicted == true_index,
        "grid": list(grid), "trait_cells": int(trait_cells.sum()),
        "hits": [bool(trait_cells[p]) for p in peaks], "where": [where(p) for p in peaks],
        "border": [bool(border[p]) for p in peaks], "peak_cells": [list(map(int, p)) for p in peaks],
        "peak_weights": [float(m.max()) for m in maps], "drops": [float(d) for d in drops],
        "on_specimen": on_specimen, "shown": shown, "mean_hit": bool(trait_cells[mean_peak]),
        "trait_mass": [float(m[trait_cells].sum()) for m in maps],
        "evidence_seconds": evidence_seconds,
        "change_away_memory": share_of(delta_memory, away), "change_away_features": share_of(delta_features, away),
        "shown_peak_change_memory": float(delta_memory[shown_cell] / max(norm_memory[shown_cell], 1e-9)),
        "shown_peak_change_features": float(delta_features[shown_cell] / max(norm_features[shown_cell], 1e-9)),
        "shown_hit": bool(trait_cells[shown_cell]), "nothing": nothing,
    }


def summarise(records: list[dict]) -> dict:
    heads = len(records[0]["hits"])
    summary = {"images": len(records), "accuracy": float(np.mean([r["correct"] for r in records])),
               "trait_cell_share": float(np.mean([r["trait_cells"] / np.prod(r["grid"]) for r in records]))}
    for rule in ("peak", "evidence"):
        summary[f"strict_{rule}"] = float(np.mean([r["hits"][r["shown"][rule]] for r in records]))
        summary[f"within_one_cell_{rule}"] = float(np.mean([r["hits"][r["shown"][rule]] or r["where"][r["shown"][rule]]
                                                            == "beside the trait" for r in records]))
    summary["strict_mean"] = float(np.mean([r["mean_hit"] for r in records]))
    summary["strict_per_head"] = [float(np.mean([r["hits"][h] for r in records])) for h in range(heads)]
    summary["strict_best_head"] = max(summary["strict_per_head"])
    summary["strict_mean_over_heads"] = float(np.mean(summary["strict_per_head"]))
    per_head = []
    for h in range(heads):
        misses = [r for r in records if not r["hits"][h]]
        counts = Counter(r["where"][h] for r in misses)
        cells = Counter(tuple(r["peak_cells"][h]) for r in records)
        cell, count = cells.most_common(1)[0]
        per_head.append({
            "head": h + 1, "strict": summary["strict_per_head"][h],
            "mean_peak": float(np.mean([r["peak_weights"][h] for r in records])),
            "mean_drop": float(np.mean([r["drops"][h] for r in records])),
            "mean_trait_mass": float(np.mean([r["trait_mass"][h] for r in records])),
            "shown_first_by_peak": float(np.mean([r["shown"]["peak"] == h for r in records])),
            "shown_first_by_evidence": float(np.mean([r["shown"]["evidence"] == h for r in records])),
            "misses": len(misses),
            "miss_where": {k: counts[k] / len(misses) for k in ("beside the trait", "specimen", "background")}
            if misses else {},
            "miss_on_border": float(np.mean([r["border"][h] for r in misses])) if misses else None,
            "same_cell_share": count / len(records), "same_cell": list(cell)})
    summary["heads"] = per_head
    summary["change_away_memory"] = float(np.nanmean([r["change_away_memory"] for r in records]))
    summary["change_away_features"] = float(np.nanmean([r["change_away_features"] for r in records]))
    missed = [r for r in records if not r["shown_hit"]]
    if missed:
        summary["missed_peak_change_memory"] = float(np.median([r["shown_peak_change_memory"] for r in missed]))
        summary["missed_peak_change_features"] = float(np.median([r["shown_peak_change_features"] for r in missed]))
    summary["evidence_ms_per_image"] = 1000 * float(np.mean([r["evidence_seconds"] for r in records]))
    if records[0]["nothing"] is not None:  # learned null keys: the share of each head that looks at nothing
        summary["nothing_per_head"] = [float(np.mean([r["nothing"][h] for r in records])) for h in range(heads)]
        summary["nothing_shown_first"] = float(np.mean([r["nothing"][r["shown"]["evidence"]] for r in records]))
    return summary


def markdown(summary: dict, title: str) -> str:
    lines = [f"**{title}**: {summary['images']} images, accuracy {summary['accuracy']:.3f}; the trait covers "
             f"{100 * summary['trait_cell_share']:.1f} % of the feature cells (chance level of the strict game).", "",
             f"Grid-strict pointing of the map shown first: by peak weight {summary['strict_peak']:.3f}, "
             f"by evidence {summary['strict_evidence']:.3f}; head mean {summary['strict_mean']:.3f}; "
             f"best single head {summary['strict_best_head']:.3f}, mean over heads "
             f"{summary['strict_mean_over_heads']:.3f}. Within one cell of the trait (on it or beside it): "
             f"{summary['within_one_cell_peak']:.3f} by peak, {summary['within_one_cell_evidence']:.3f} by evidence.", "",
             "| head | strict | shown first (peak / evidence) | mean peak | mean drop | mass on trait | "
             "misses: beside / specimen / background | misses on border | same cell |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for head in summary["heads"]:
        where = head["miss_where"]
        lines.append(
            f"| H{head['head']} | {head['strict']:.2f} | {head['shown_first_by_peak']:.2f} / "
            f"{head['shown_first_by_evidence']:.2f} | {head['mean_peak']:.3f} | {head['mean_drop']:.3f} | "
            f"{head['mean_trait_mass']:.3f} | "
            + (" / ".join(f"{where[k]:.2f}" for k in ("beside the trait", "specimen", "background")) if where else "–")
            + f" | {head['miss_on_border'] if head['miss_on_border'] is None else round(head['miss_on_border'], 2)}"
            f" | {head['same_cell_share']:.2f} at {tuple(head['same_cell'])} |")
    lines += ["", f"Encoder mixing (trait pixels hidden): share of the change away from the trait "
                  f"(not on it, not beside it): encoder output {summary['change_away_memory']:.3f}, "
                  f"backbone features {summary['change_away_features']:.3f}."]
    if "missed_peak_change_memory" in summary:
        lines.append(f"Shown head's peak token when it misses (median relative change): encoder output "
                     f"{summary['missed_peak_change_memory']:.3f}, backbone feature "
                     f"{summary['missed_peak_change_features']:.3f}.")
    lines.append(f"Evidence ranking cost: {summary['evidence_ms_per_image']:.1f} ms per image.")
    if "nothing_per_head" in summary:
        lines.append("Looks at nothing (mean weight on the null keys) per head: "
                     + ", ".join(f"H{h + 1} {share:.3f}" for h, share in enumerate(summary["nothing_per_head"]))
                     + f"; the head shown first {summary['nothing_shown_first']:.3f}.")
    return "\n".join(lines) + "\n"


def explain_cost(model, paths: list[Path], repeats: int) -> dict:
    """Milliseconds per image of Explainer.explain without and with the evidence ranking (its
    default), timed in turn (timed_training.median_seconds) so that load affects both alike."""
    from napari_intr.explanation import EVIDENCE_CLASSES, Explainer
    from timed_training import median_seconds

    explainer, images = Explainer(model), [read_image(path) for path in paths]
    seconds = median_seconds({"plain": lambda: [explainer.explain(i, evidence=0) for i in images],
                              "evidence": lambda: [explainer.explain(i, evidence=EVIDENCE_CLASSES) for i in images]},
                             repeats)
    return {name: 1000 * value / len(images) for name, value in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sample")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--title", default=None)
    parser.add_argument("--cost", type=int, default=0, metavar="REPEATS",
                        help="also time Explainer.explain per image with and without the evidence ranking "
                             "(median of REPEATS alternating passes over up to 10 images)")
    parser.add_argument("--radius", type=int, default=MASK_RADIUS,
                        help="cells hidden around a head's peak for its evidence (tuning the rule)")
    parser.add_argument("--shift", type=int, default=0, metavar="PX",
                        help="place cell i at input pixels [s*i - PX, s*(i+1) - PX) in the pointing game "
                             "(tuning the map's placement; 0: the product's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.model).eval()
    samples = spread(items(args.data, model.class_names), args.limit)
    if not samples:
        print(f"no images with trait and specimen masks in {args.data} (DATA/<class>/<image> with "
              "DATA/.masks/ and DATA/.specimens/ beside them)", file=sys.stderr)
        return 2
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    start = time.perf_counter()
    records = [r for r in (diagnose_image(model, *s, radius=args.radius, shift=args.shift) for s in samples) if r is not None]
    summary = summarise(records)
    summary.update(seconds=time.perf_counter() - start, load_before=load,
                   load_after=Path("/proc/loadavg").read_text().split()[:3] if load else [])
    if args.cost:
        summary["explain_ms"] = explain_cost(model, [s[0] for s in samples[:10]], args.cost)
    print(markdown(summary, args.title or f"{args.model} on {args.data}"))
    if args.cost:
        cost = summary["explain_ms"]
        print(f"Explain per image (median of {args.cost}): {cost['plain']:.1f} ms without the evidence ranking, "
              f"{cost['evidence']:.1f} ms with it ({cost['evidence'] / cost['plain']:.2f}x).")
    print(f"({summary['seconds']:.0f} s; load {' '.join(load)} -> {' '.join(summary['load_after'])})")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
