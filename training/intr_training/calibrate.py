"""Calibrate a model on images of its known species (`intr calibrate`, and the end of `intr
train`) and judge it on unknown ones (`intr eval --unknown`). The maths and the metadata format
are napari_intr.calibration's; here the images are read, run through the model and the result
written into a checkpoint."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from napari_intr.calibration import (
    DEFAULT_ALPHA,
    DEFAULT_KEEP,
    DEFAULT_SCORE,
    Calibration,
    calibrate,
    check_share,
    open_set_scores,
)
from napari_intr.checkpoints import save_model
from napari_intr.collection.scan import Collection, class_images
from napari_intr.model import INTR

from .data import ImageFolderDataset, collate
from .engine import autocast, full_width, options_for, to_device
from .transforms import eval_transform

CALIBRATED_SUFFIX = ".calibrated.safetensors"


@dataclass
class Outputs:
    """What calibration reads off the model for N images (all classes decoded)."""
    logits: np.ndarray        # [N, C] over all the model's classes
    labels: np.ndarray        # [N] class indices (-1: unknown)
    top_features: np.ndarray  # [N, 2, D] decoder outputs z_out of each image's top two classes
    true_features: np.ndarray  # [N, D] z_out of each image's true class (NaN for unknown images)


@torch.no_grad()
def collect_outputs(model: INTR, samples: list[tuple[Path, int]], batch_size: int = 16,
                    workers: int = 0) -> Outputs:
    """The logits and decoder outputs of the readable images of (path, class index) samples."""
    model.eval()
    options = options_for(model.device)
    loader = DataLoader(ImageFolderDataset(samples, eval_transform(model.config)), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate)
    parts = []
    for batch in loader:
        if not len(batch.labels):
            continue
        images, mask, _ = to_device(batch, options)
        with autocast(options):
            output = model.decode(model.encode(images, mask), return_attention=False)
        logits = full_width(output, len(model.class_names))
        features = output.features.float().cpu()  # [B, C, D]: every class decoded, in model order
        top = logits.topk(min(2, logits.shape[1]), dim=1).indices
        rows = torch.arange(len(logits))
        labels = batch.labels.cpu()
        true = features[rows, labels.clamp(min=0)]
        true[labels < 0] = float("nan")
        parts.append((logits.numpy(), labels.numpy(), features[rows[:, None], top].numpy(), true.numpy()))
    if not parts:
        width, hidden = len(model.class_names), model.config.hidden_dim
        return Outputs(np.zeros((0, width)), np.zeros(0, dtype=np.int64), np.zeros((0, min(2, width), hidden)),
                       np.zeros((0, hidden)))
    logits, labels, top, true = (np.concatenate(arrays) for arrays in zip(*parts))
    return Outputs(logits.astype(np.float64), labels, top.astype(np.float64), true.astype(np.float64))


def calibrate_samples(model: INTR, samples, data: str, score: str = DEFAULT_SCORE, keep: float = DEFAULT_KEEP,
                      alpha: float = DEFAULT_ALPHA, batch_size: int = 16, workers: int = 0) -> Calibration:
    """Calibrate `model` on (path, class index) samples of its known species; sets model.calibration."""
    keep, alpha = check_share(keep, "--keep"), check_share(alpha, "--alpha")
    outputs = collect_outputs(model, samples, batch_size, workers)
    model.calibration = calibrate(outputs.logits, outputs.labels, score, keep, alpha, data,
                                  outputs.top_features[:, 0], outputs.true_features)
    return model.calibration


def calibration_target(source, out=None, overwrite: bool = False) -> Path:
    """Where `intr calibrate` writes: --out, else beside the model (M.calibrated.safetensors);
    the model's own file only with --overwrite. An existing file is replaced only with --overwrite."""
    if out is not None:
        target = Path(out).expanduser()
        if target.suffix != ".safetensors":
            raise ValueError(f"--out {target} must be a .safetensors file (the calibrated model)")
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ValueError(f"--model {source} is not a file: give --out FILE.safetensors for the calibrated copy")
        if path.is_dir():
            path = path / "model.safetensors"
        if overwrite and path.suffix == ".safetensors":
            return path
        target = path.with_name(path.name.removesuffix(".safetensors").removesuffix(".pth") + CALIBRATED_SUFFIX)
    if target.is_dir():
        raise ValueError(f"--out {target} is a folder; give a .safetensors file path")
    if target.exists() and not overwrite:
        raise ValueError(f"{target} exists: add --overwrite to replace it, or give another --out")
    return target


def write_calibrated(model: INTR, target: Path) -> Path:
    provenance = dict(getattr(model, "provenance", None) or {})
    return save_model(model, target, **provenance)


def calibrate_training_run(model_file: Path, collection: Collection, device, score: str = DEFAULT_SCORE,
                           keep: float = DEFAULT_KEEP, alpha: float = DEFAULT_ALPHA) -> dict:
    """The end of `intr train`: calibrate the kept model on the validation images and write the
    calibration into it. Returns what the run reports (calibrated or why not)."""
    from napari_intr.checkpoints import load_checkpoint
    started = time.monotonic()
    model = load_checkpoint(model_file, device=device)
    try:
        calibration = calibrate_samples(model, collection.val, str(collection.root), score, keep, alpha)
    except ValueError as error:
        return {"calibrated": False, "reason": str(error)}
    save_model(model, model_file, **model.provenance)
    return {"calibrated": True, "seconds": round(time.monotonic() - started, 3), **summary_of(calibration)}


def summary_of(calibration: Calibration) -> dict:
    return {"score": calibration.score, "threshold": calibration.threshold, "keep": calibration.keep,
            "alpha": calibration.alpha, "quantile": calibration.quantile, "method": calibration.method,
            "images": calibration.images,
            "known_kept": calibration.known_kept, "coverage": calibration.coverage,
            "mean_set_size": calibration.mean_set_size, "text": calibration.describe()}


def unknown_samples(model: INTR, folder) -> list[tuple[Path, int]]:
    """The images of an --unknown folder (any layout: class folders or images); refuses one whose
    class folders are named after species the model knows (they are not unknown)."""
    from napari_intr.image_files import find_images
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--unknown {folder} is not a folder; give a folder of images of species the model "
                         "was not trained on")
    known = sorted(name for name in class_images(folder, Collection(folder, [], [], [])) if name in model.class_names)
    if known:
        raise ValueError(f"--unknown {folder} holds images of species the model knows ({', '.join(known[:5])}"
                         f"{', …' if len(known) > 5 else ''}): an unknown folder must hold only species outside the "
                         "model's classes; move those folders out")
    paths = find_images([folder])
    if not paths:
        raise ValueError(f"--unknown {folder} holds no images")
    return [(path, -1) for path in paths]


def scores_of(model: INTR, outputs: Outputs, score: str) -> np.ndarray:
    """[N] open-set scores by `score` (a feature score with the model's calibration statistics)."""
    scale = None if model.calibration is None else model.calibration.scale
    return open_set_scores(outputs.logits, score, outputs.top_features[:, 0], scale)


def open_set_report(model: INTR, known: Outputs, unknown: Outputs) -> dict:
    """AUROC and FPR at 95 % TPR of every open-set score the model's calibration allows (the
    calibrated one first; the feature scores need its statistics), and how the stored threshold
    splits known and unknown images."""
    from napari_intr.calibration import CLASS_SCORES, FEATURE_SCORES, SCORES, UNCALIBRATED_SCORE, auroc, fpr_at_tpr
    calibration = model.calibration
    scale = None if calibration is None else calibration.scale
    usable = [s for s in SCORES if s not in CLASS_SCORES
              or (scale is not None and (s not in FEATURE_SCORES or scale.classes is not None))]
    chosen = calibration.score if calibration is not None else UNCALIBRATED_SCORE
    scores, values = {}, {}
    for name in sorted(usable, key=lambda s: s != chosen):
        values[name] = scores_of(model, known, name), scores_of(model, unknown, name)
        scores[name] = {"auroc": auroc(*values[name]), "fpr_at_95_tpr": fpr_at_tpr(*values[name])}
    report = {"score": chosen, "known_images": len(known.logits), "unknown_images": len(unknown.logits),
              "auroc": scores[chosen]["auroc"], "fpr_at_95_tpr": scores[chosen]["fpr_at_95_tpr"], "scores": scores}
    if calibration is not None:
        known_scores, unknown_scores = values[chosen]
        report.update(threshold=calibration.threshold,
                      known_kept=float((known_scores >= calibration.threshold).mean()),
                      unknown_rejected=float((unknown_scores < calibration.threshold).mean()))
    return report


def evaluate_open_set(model: INTR, samples: list[tuple[Path, int]], folder: Path, unknown=None,
                      batch_size: int = 16, workers: int = 0) -> dict:
    """`intr eval`'s open-set part: with --unknown, AUROC and FPR at 95 % TPR of known vs unknown
    images; for a calibrated model, the empirical coverage and mean set size of its prediction
    sets on the known images, overall and per class (a fair test only on images it was not
    calibrated on: a folder it was calibrated on is flagged)."""
    from napari_intr.calibration import coverage_table
    report: dict = {"calibrated": model.calibration is not None}
    unknown_set = unknown_samples(model, unknown) if unknown is not None else None  # refused before any work
    known = collect_outputs(model, samples, batch_size, workers)
    known_logits, known_labels = known.logits, known.labels
    if unknown_set is not None:
        unknown_outputs = collect_outputs(model, unknown_set, batch_size, workers)
        report["open_set"] = {"unknown": str(unknown), **open_set_report(model, known, unknown_outputs)}
        chosen = report["open_set"]["score"]
        report["_scores"] = (scores_of(model, known, chosen), scores_of(model, unknown_outputs, chosen))
    calibration = model.calibration
    if calibration is not None:
        from napari_intr.calibration import softmax
        report["coverage"] = {"nominal": 1 - calibration.alpha, "method": calibration.method,
                              "calibration_images": calibration.images,
                              **coverage_table(softmax(known_logits), known_labels, calibration.set_quantiles,
                                               model.class_names)}
        used = calibration.data is not None and Path(calibration.data).resolve() == Path(folder).resolve()
        report["coverage"]["same_as_calibration_data"] = used
    return report


def write_open_set_outputs(out: Path, model: INTR, report: dict) -> list[Path]:
    """coverage.csv (per class) and open_set.png: the coverage per class against the nominal level,
    the set sizes and, with unknown images, the score histograms and the ROC curve."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from napari_intr.csv_output import write_csv
    written = []
    coverage, open_set = report.get("coverage"), report.get("open_set")
    if coverage is not None:
        written.append(write_csv(out / "coverage.csv", ["class", "images", "coverage", "mean_set_size"],
                                 ([name, c["images"], c["coverage"], c["mean_set_size"]]
                                  for name, c in coverage["per_class"].items())))
    panels = [p for p in ("coverage", "open_set") if report.get(p) is not None]
    if not panels:
        return written
    figure, axes = plt.subplots(1, 2 * len(panels), figsize=(5 * 2 * len(panels), 4), squeeze=False)
    axes = list(axes[0])
    if coverage is not None:
        names = list(coverage["per_class"])
        axis = axes.pop(0)
        axis.barh(names, [coverage["per_class"][n]["coverage"] for n in names], color="tab:blue")
        axis.axvline(coverage["nominal"], color="black", linestyle="--", label=f"nominal {coverage['nominal']:.0%}")
        axis.set(xlim=(0, 1), xlabel="coverage", title=f"coverage {coverage['coverage']:.1%} overall")
        axis.legend(loc="lower left")
        axis = axes.pop(0)
        axis.barh(names, [coverage["per_class"][n]["mean_set_size"] for n in names], color="tab:orange")
        axis.set(xlabel="mean prediction-set size", title=f"mean set size {coverage['mean_set_size']:.2f}")
    if open_set is not None:
        known, unknown = report["_scores"]
        axis = axes.pop(0)
        bins = np.linspace(min(known.min(), unknown.min()), max(known.max(), unknown.max()), 40)
        axis.hist(known, bins, alpha=0.6, label="known species")
        axis.hist(unknown, bins, alpha=0.6, label="unknown")
        if "threshold" in open_set:
            axis.axvline(open_set["threshold"], color="black", linestyle="--", label="threshold")
        axis.set(xlabel=open_set["score"].replace("_", " "), ylabel="images", title="open-set score")
        axis.legend()
        axis = axes.pop(0)
        thresholds = np.sort(np.concatenate([known, unknown]))[::-1]
        axis.plot([(unknown >= t).mean() for t in thresholds], [(known >= t).mean() for t in thresholds])
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axis.set(xlabel="unknown kept (FPR)", ylabel="known kept (TPR)", title=f"ROC, AUROC {open_set['auroc']:.3f}")
    figure.tight_layout()
    figure.savefig(out / "open_set.png", dpi=100)
    plt.close(figure)
    return [*written, out / "open_set.png"]
