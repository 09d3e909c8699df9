"""heads.csv (one row per class and head) and pairs.csv (one row per pair and head), written by
the project's one CSV writer (`napari_intr.csv_output`: formula-safe cells, atomic files)."""
from __future__ import annotations

from ..explanation import head_number
from .aggregate import Atlas

HEADS_COLUMNS = ["class", "layer", "head", "images", "accuracy", "mean_peak", "median_peak", "mean_spread",
                 "on_specimen", "consistency", "consistency_method", "part", "top_patches_on_part", "misidentified_images",
                 "misidentified_mean_peak", "top_images"]
PAIRS_COLUMNS = ["class_a", "class_b", "rank", "layer", "head", "effect_size", "masking_drop", "mean_peak_on_a",
                 "mean_peak_on_b", "peak_on_part_a", "top_patches_on_part_a", "images_a", "images_b", "masked_images", "confused_images", "top_images_a",
                 "top_images_b"]


def number(value) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def head_rows(atlas: Atlas, layer: int) -> list[dict]:
    rows = []
    for summary in atlas.classes:
        for head in summary.heads:
            rows.append({
                "class": summary.name, "layer": layer, "head": head_number(head.head), "images": head.images,
                "accuracy": number(summary.accuracy), "mean_peak": number(head.mean_peak),
                "median_peak": number(head.median_peak), "mean_spread": number(head.mean_spread),
                "on_specimen": number(head.on_specimen), "consistency": number(head.consistency),
                "consistency_method": head.consistency_method, "part": head.part or "",
                "top_patches_on_part": number(head.top_covering_part),
                "misidentified_images": head.misidentified_images,
                "misidentified_mean_peak": number(head.misidentified_mean_peak),
                "top_images": ";".join(exemplar.key for exemplar in head.top)})
    return rows


def pair_rows(atlas: Atlas, layer: int) -> list[dict]:
    rows = []
    for pair in atlas.pairs:
        for rank, head in enumerate(pair.heads, start=1):
            rows.append({
                "class_a": pair.a, "class_b": pair.b, "rank": rank, "layer": layer, "head": head_number(head.head),
                "effect_size": number(head.effect_size), "masking_drop": number(head.masking_drop),
                "mean_peak_on_a": number(head.mean_peak_a), "mean_peak_on_b": number(head.mean_peak_b), "peak_on_part_a": number(head.on_part_a),
                "top_patches_on_part_a": number(head.top_a_covering_part),
                "images_a": pair.images_a, "images_b": pair.images_b, "masked_images": head.masked_images,
                "confused_images": pair.confused,
                "top_images_a": ";".join(e.key for e in head.top_a),
                "top_images_b": ";".join(e.key for e in head.top_b)})
    return rows
