"""bf16 against fp32 on the inference path: top-1 agreement and per-map Spearman correlation.

    python benchmarks/bf16_agreement.py --data DIR [DIR ...] [--model sample] [--limit N] [--json]
    python benchmarks/bf16_agreement.py --photograph SYNTH_DIR OUT_DIR   # make a shifted collection

Every image under each DIR (recursively) is explained twice by the same model, once with
`precision="fp32"` and once with `precision="bf16"` (both on the inference path: batch norm
folded, channels-last). Reported per folder: top-1 agreement over the images, and the Spearman
rank correlation between the fp32 and bf16 maps of every head of the fp32 top-1 class at the
last decoder layer (min, 1st percentile, median over all maps). Targets (issue 24): top-1
agreement >= 99.5 %, per-map Spearman >= 0.99.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def photograph(source: Path, out: Path, seed: int = 24) -> int:
    """A collection unlike the training data, from `intr synth` specimens: each upscaled to 384 px,
    rotated by up to 25 degrees on a random plain background, cropped to 75-100 % per side,
    relit (brightness and contrast 0.7-1.3), with Gaussian noise (sigma 2-12) and saved as JPEG
    of quality 40-90. Returns the number of images written."""
    from PIL import Image, ImageEnhance
    rng = np.random.default_rng(seed)
    count = 0
    for path in sorted(source.rglob("*.png")):
        if any(part.startswith(".") for part in path.relative_to(source).parts):
            continue  # intr synth's masks and bare specimens
        image = Image.open(path).convert("RGB").resize((384, 384), Image.BICUBIC)
        fill = tuple(int(v) for v in rng.integers(150, 255, 3))
        image = image.rotate(rng.uniform(-25, 25), resample=Image.BILINEAR, fillcolor=fill)
        width, height = image.size
        crop_width, crop_height = int(width * rng.uniform(0.75, 1.0)), int(height * rng.uniform(0.75, 1.0))
        x, y = rng.integers(0, width - crop_width + 1), rng.integers(0, height - crop_height + 1)
        image = image.crop((x, y, x + crop_width, y + crop_height))
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
        pixels = np.asarray(image).astype(np.float32) + rng.normal(0, rng.uniform(2, 12), (crop_height, crop_width, 3))
        target = out / path.parent.name / f"{path.stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(target, quality=int(rng.integers(40, 90)))
        count += 1
    return count


def agreement(model_source: str, folder: Path, limit: int | None = None) -> dict:
    from scipy.stats import spearmanr

    from napari_intr.explanation import Explainer
    from napari_intr.image_files import find_images, read_image
    from napari_intr.loading import load_model
    fp32 = Explainer(load_model(model_source, device="cpu", precision="fp32"))
    bf16 = Explainer(load_model(model_source, device="cpu", precision="bf16"))
    files = find_images([folder])[:limit]
    same, correlations, seconds = 0, [], {"fp32": 0.0, "bf16": 0.0}
    for path in files:
        image = read_image(path)
        start = time.perf_counter()
        a = fp32.explain(image, layers=[-1])
        seconds["fp32"] += time.perf_counter() - start
        start = time.perf_counter()
        b = bf16.explain(image, layers=[-1])
        seconds["bf16"] += time.perf_counter() - start
        same += a.top_class() == b.top_class()
        column = a.column(a.top_class())
        for head in range(a.num_heads):
            x, y = a.layer_maps(-1)[head, column].ravel(), b.layer_maps(-1)[head, column].ravel()
            correlations.append(float(spearmanr(x, y).statistic))
    correlations = np.array(correlations)
    return {"folder": str(folder), "images": len(files), "top1_agreement": same / len(files),
            "maps": len(correlations), "spearman_min": float(correlations.min()),
            "spearman_p1": float(np.percentile(correlations, 1)), "spearman_median": float(np.median(correlations)),
            "seconds_per_image": {k: v / len(files) for k, v in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=Path, help="image folders")
    parser.add_argument("--photograph", nargs=2, type=Path, metavar=("SYNTH_DIR", "OUT_DIR"),
                        help="write a shifted collection made from intr synth specimens, then stop")
    parser.add_argument("--model", default="sample")
    parser.add_argument("--limit", type=int, help="at most this many images per folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.photograph:
        print(f"wrote {photograph(*args.photograph)} images to {args.photograph[1]}")
        return
    if not args.data:
        parser.error("give --data DIR [DIR ...] (or --photograph SYNTH_DIR OUT_DIR)")
    import torch
    results = [agreement(args.model, folder, args.limit) for folder in args.data]
    if args.json:
        print(json.dumps(results))
        return
    print(f"model {args.model}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| images | top-1 agreement | Spearman min / p1 / median (maps) | s per image fp32 / bf16 |")
    print("|---|---:|---|---|")
    for r in results:
        t = r["seconds_per_image"]
        print(f"| {r['folder']} ({r['images']}) | {100 * r['top1_agreement']:.2f} % | {r['spearman_min']:.4f} / "
              f"{r['spearman_p1']:.4f} / {r['spearman_median']:.4f} ({r['maps']}) | {t['fp32']:.3f} / {t['bf16']:.3f} |")


if __name__ == "__main__":
    main()
