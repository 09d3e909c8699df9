"""The faithfulness report: one row per method and metric (CSV), a Markdown table, PNG plots."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_intr import csv_output
from napari_intr.preprocess import IMAGENET_MEAN, IMAGENET_STD

# (key, column heading); ↑ higher is more faithful, ↓ lower is.
METRICS = (("insertion", "insertion AUC ↑"), ("deletion", "deletion AUC ↓"),
           ("pointing", "pointing game ↑"), ("pointing_strict", "pointing, peak cell on mask ↑"),
           ("pointing_look_alikes", "pointing, look-alikes only ↑"),
           ("pointing_look_alikes_strict", "… peak cell on mask ↑"),
           ("sanity_decoder", "rank corr., decoder random ↓"), ("sanity_encoder", "… + encoder ↓"),
           ("sanity_backbone", "… + backbone ↓"))


@dataclass
class Row:
    method: str
    metric: str
    value: float   # the mean over images (NaN where no image had a value)
    images: int    # how many values the mean is over

    @classmethod
    def of(cls, method: str, metric: str, values) -> "Row":
        values = [v for v in values if not math.isnan(v)]
        return cls(method, metric, float(np.mean(values)) if values else float("nan"), len(values))


def _format(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def write_csv(rows: list[Row], path: Path) -> None:
    csv_output.write_csv(path, ["method", "metric", "value", "images"],
                         ([row.method, row.metric, row.value, row.images] for row in rows))


def markdown(rows: list[Row], flips: dict | None, notes: list[str], header: str) -> str:
    """A method × metric table (mean over images), the flip rates and the notes."""
    methods = list(dict.fromkeys(row.method for row in rows))
    metrics = [(key, title) for key, title in METRICS if any(row.metric == key for row in rows)]
    cell = {(row.method, row.metric): row for row in rows}
    lines = [header, "", "| method | " + " | ".join(title for _, title in metrics) + " |",
             "| --- |" + " ---: |" * len(metrics)]
    for method in methods:
        values = [_format(cell[method, key].value) if (method, key) in cell else "–" for key, _ in metrics]
        lines.append(f"| {method} | " + " | ".join(values) + " |")
    if flips is not None:
        lines += ["", f"Manipulation flip rate on look-alike pairs ({flips['edited']} specimens named "
                  "correctly before the edit):", "",
                  "| edit | flips to the look-alike |", "| --- | ---: |",
                  f"| transplant the look-alike's attribute | {_format(flips['attribute'])} |",
                  f"| same-area background disc, attribute colour | {_format(flips['background'])} |"]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, dict[str, list[np.ndarray]]], path: Path) -> None:
    """Insertion and deletion curves, averaged over images, one line per method."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    for axes, kind in zip(figure.subplots(1, 2), ("insertion", "deletion")):
        for method, per_image in curves[kind].items():
            if not per_image:
                continue
            mean = np.mean(per_image, axis=0)
            x = np.linspace(0, 1, len(mean))
            axes.plot(x, mean, label=f"{method} (AUC {np.mean([_auc(c) for c in per_image]):.3f})")
        axes.set(title=f"{kind} ({'higher' if kind == 'insertion' else 'lower'} is better)",
                 xlabel="fraction of pixels " + ("inserted" if kind == "insertion" else "deleted"),
                 ylabel="probability of the explained class", xlim=(0, 1), ylim=(0, 1.02))
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def plot_examples(examples: list[dict], methods: list[str], path: Path) -> None:
    """A grid: per example image, the image and each method's map."""
    from matplotlib.figure import Figure

    if not examples:
        return
    figure = Figure(figsize=(2.2 * (len(methods) + 1), 2.3 * len(examples)), layout="constrained")
    grid = np.atleast_2d(figure.subplots(len(examples), len(methods) + 1, squeeze=False))
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    for row, example in zip(grid, examples):
        picture = np.clip(example["image"] * std + mean, 0, 1).transpose(1, 2, 0)
        row[0].imshow(picture)
        row[0].set_title(example["title"], fontsize=7)
        for axes, method in zip(row[1:], methods):
            axes.imshow(picture)
            axes.imshow(example["maps"][method], cmap="inferno", alpha=0.6)
            axes.set_title(method, fontsize=8)
        for axes in row:
            axes.set_axis_off()
    figure.savefig(path, dpi=100)


def _auc(curve) -> float:
    from .metrics import auc
    return auc(curve)
