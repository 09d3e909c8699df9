"""Would a finer attention grid help the tiny model point at the attribute that names the species?

The tiny backbone already has stride 8 (a 16x16 grid at 128 px). Variants, each trained here the
same way (today's tiny recipe as sample_data/build_default_model.sh runs it, `--epochs`, seed 0,
on `--train`):

- "stride8": the tiny backbone as it is;
- "stride4": the same CNN with its last stride-2 convolution at stride 1 (a 32x32 grid at 128 px,
  4x the tokens);
- "upscale": a given stride-8 model (`--stride8`, e.g. the bundled one) explained at 2x the input
  (short side 256 px: a 32x32 grid from images drawn at 128 px), not retrained.

For each: top-1 on fresh specimens (`--test`), the faithfulness table of `intr eval
--explanations` on `--faith` (the README's seed-7 set) and the seconds per forward with every
attention map (one image, median of 20). To keep it cheap the table skips the randomisation check
(`--sanity` keeps it), RISE uses 100 masks (`--rise-masks`) and `--limit` images; the INTR and
Grad-CAM rows depend on none of these but the images.

    intr synth --out G/train --per-class 60 --size 128 --seed 0
    intr synth --out G/test --per-class 30 --size 128 --seed 1
    intr synth --out G/faith --per-class 10 --seed 7
    python benchmarks/tiny_grid.py --train G/train --test G/test --faith G/faith --out G/out \
        [--variants stride8,stride4] [--epochs 12] [--limit 45] [--stride8 MODEL --variants upscale]

The stride-4 model exists only inside this process (the product's tiny backbone is unchanged):
its checkpoint has the same tensors as a stride-8 one, so do not load it elsewhere.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np

from timed_training import load, median_seconds


@contextlib.contextmanager
def stride_4_tiny():
    """The tiny backbone with stride 4: its third stage keeps the resolution."""
    from napari_intr.model import backbone, config

    class TinyBodyStride4(backbone.TinyBody):
        def __init__(self):
            super().__init__()
            self[4][0].stride = (1, 1)  # the third stage's first convolution (a 3x3, padding 1)

    saved_body, saved_features = backbone.TinyBody, config.BACKBONE_FEATURES["tiny"]
    backbone.TinyBody, config.BACKBONE_FEATURES["tiny"] = TinyBodyStride4, (saved_features[0], 4)
    try:
        yield
    finally:
        backbone.TinyBody, config.BACKBONE_FEATURES["tiny"] = saved_body, saved_features


def intr(*arguments: str) -> None:
    from intr_training.cli import main
    code = main(list(arguments))
    if code:
        raise RuntimeError(f"intr {' '.join(arguments)} exited with {code}")


def seconds_per_explain(model_path: Path, test: Path) -> tuple[float, tuple[int, int]]:
    """Median seconds of one forward with all attention maps, and the attention grid."""
    import torch

    from napari_intr import load_model
    from napari_intr.image_files import read_image
    model = load_model(model_path, device="cpu")
    image = read_image(min(test.rglob("*.png")))
    inputs = model.preprocess(image)
    with torch.inference_mode():
        grid = tuple(model(inputs).attention.shape[-2:])  # and, with median_seconds' own, two warm-ups
        seconds = median_seconds({"explain": lambda: model(inputs)}, 20)["explain"]
    return seconds, grid


def measure(name: str, model_path: Path, args: argparse.Namespace) -> dict:
    out = args.out / name
    before = load()
    intr("eval", "--model", str(model_path), "--data", str(args.test), "--workers", "0", "--device", "cpu",
         "--out", str(out / "accuracy"))
    accuracy = json.loads((out / "accuracy" / "metrics.json").read_text())
    started = time.perf_counter()
    from napari_intr.faithfulness import run
    limit = ["--limit", str(args.limit)] if args.limit else []
    check = run.sanity_check
    if not args.sanity:
        run.sanity_check = lambda *_: None
    try:
        intr("eval", "--model", str(model_path), "--data", str(args.faith), "--workers", "0", "--device", "cpu",
             "--explanations", "--rise-masks", str(args.rise_masks), *limit, "--out", str(out / "faithfulness"))
    finally:
        run.sanity_check = check
    faithfulness_seconds = time.perf_counter() - started
    explain, grid = seconds_per_explain(model_path, args.test)
    return {"variant": name, "top1": accuracy["top1"], "per_class": accuracy.get("per_class_accuracy"),
            "explain_s": explain, "grid": grid, "faithfulness_s": faithfulness_seconds,
            "faithfulness": (out / "faithfulness" / "faithfulness.md").read_text(), "load": f"{before} -> {load()}"}


def trained(name: str, args: argparse.Namespace) -> dict:
    run = args.out / f"{name}-run"
    started, before = time.perf_counter(), load()
    intr("train", "--data", str(args.train), "--out", str(run), "--backbone", "tiny", "--epochs",
         str(args.epochs), "--seed", "0", "--progress", "none", "--device", "cpu")
    training = {"train_s": time.perf_counter() - started, "train_load": f"{before} -> {load()}",
                "epochs": [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]}
    return {**measure(name, run / "model.safetensors", args), **training}


def stride4(args: argparse.Namespace) -> dict:
    with stride_4_tiny():
        return trained("stride4", args)


def upscale(args: argparse.Namespace) -> dict:
    if args.stride8 is None:
        raise SystemExit("the upscale variant explains a given model: name it with --stride8 MODEL")
    from napari_intr import load_model, save_model
    model = load_model(args.stride8, device="cpu")
    model.config = model.config.replace(short_side=2 * model.config.short_side, max_side=2 * model.config.max_side)
    path = args.out / "upscale.safetensors"
    save_model(model, path, derived_from=str(args.stride8), note="explained at 2x the input")
    return measure("upscale", path, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("train", "test", "faith", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--stride8", type=Path, help="a trained stride-8 tiny model, for the upscale variant")
    parser.add_argument("--variants", default="stride8,stride4")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--limit", type=int, help="faithfulness on at most this many images")
    parser.add_argument("--rise-masks", type=int, default=100)
    parser.add_argument("--sanity", action="store_true", help="also the cascading randomisation check (4x the time)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch
    print(f"torch threads {torch.get_num_threads()}, load {load()}", flush=True)
    variants = {"stride8": lambda a: trained("stride8", a), "stride4": stride4, "upscale": upscale}
    for variant in args.variants.split(","):
        result = variants[variant](args)
        (args.out / f"{variant}.json").write_text(json.dumps(result, indent=1, default=float))
        summary = {k: v for k, v in result.items() if k not in ("faithfulness", "per_class", "epochs")}
        print(json.dumps(summary, default=float), flush=True)
        print("per class", np.round(list((result["per_class"] or {}).values()), 3).tolist(),
              "val_acc per epoch", [round(e["val_acc"], 3) for e in result.get("epochs", [])], flush=True)


if __name__ == "__main__":
    main()
