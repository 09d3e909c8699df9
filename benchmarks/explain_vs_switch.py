"""Full explain vs. switches that reuse the cached encoder memory, measured side by side.

    python benchmarks/explain_vs_switch.py [--repeats 5] [--device cpu]

full explain:     preprocess + backbone + encoder + decoder with attention (a new image)
class switch:     decoder only, all C classes, cached memory (another class or layer to show)
candidate switch: decoder only, 2-5 classes in drop mode (a new candidate set)
show:             no model at all: another decoded class's normalised head maps and mean map
                  from the Explanation already at hand (what a widget does when C' were decoded)

The models have random weights: timing does not depend on what the weights learned.
Target: full / switch >= 20x for the resnet50 model.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from napari_intr.devices import resolve_device
from napari_intr.explanation import Explainer
from napari_intr.model import IntrConfig, build_model
from timed_training import median_seconds

CASES = [  # (label, config, image height, image width)
    ("resnet50", IntrConfig(num_classes=200), 800, 1200),
    ("tiny", IntrConfig.tiny(10), 128, 192),
]


def prepare(config: IntrConfig, height: int, width: int, repeats: int, device: torch.device) -> tuple:
    """The functions timed side by side ("full", "class", "candidates", "show"), and a dict with
    the Explainer, model, image and encoded image (for callers that time more functions)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(config).to(device).eval()
    explainer = Explainer(model, "benchmark")
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    encoded = explainer.encode(image)
    candidate_sets = [rng.choice(config.num_classes, size=rng.integers(2, 6), replace=False).tolist()
                      for _ in range(repeats + 1)]
    sets = iter(candidate_sets * 2)
    explanation = explainer.decode(encoded)
    names = iter(explanation.class_names * (repeats + 1))

    def show():
        name = next(names)
        return explanation.head_maps(name), explanation.mean_map(name)

    functions = {
        "full": lambda: explainer.explain(image),
        "class": lambda: explainer.decode(encoded),
        "candidates": lambda: explainer.decode(encoded, next(sets), "drop"),
        "show": show,
    }
    return functions, {"explainer": explainer, "model": model, "image": image, "encoded": encoded}


def measure(config: IntrConfig, height: int, width: int, repeats: int, device: torch.device) -> dict:
    functions, context = prepare(config, height, width, repeats, device)
    encoded = context["encoded"]
    timings = median_seconds(functions, repeats, device)
    return {**timings, "input": encoded.input_shape, "grid": tuple(encoded.encoded.grid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--only", choices=[label for label, *_ in CASES], help="run one model only")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, median of {args.repeats} "
          "interleaved repeats after one warm-up, random weights")
    header = (f"{'model':<9} {'image':>9} {'input':>9} {'grid':>6} {'C':>4} {'full ms':>9} "
              f"{'class ms':>9} {'full/class':>10} {'cand. ms':>9} {'full/cand.':>10} {'show ms':>8} {'full/show':>10}")
    print(header)
    print("-" * len(header))
    for label, config, height, width in CASES:
        if args.only and label != args.only:
            continue
        result = measure(config, height, width, args.repeats, device)
        full, by_class, by_candidates, show = (result[key] for key in ("full", "class", "candidates", "show"))
        print(f"{label:<9} {f'{height}x{width}':>9} {'x'.join(map(str, result['input'])):>9} "
              f"{'x'.join(map(str, result['grid'])):>6} {config.num_classes:>4} {full * 1e3:>9.1f} "
              f"{by_class * 1e3:>9.1f} {full / by_class:>9.1f}x {by_candidates * 1e3:>9.1f} "
              f"{full / by_candidates:>9.1f}x {show * 1e3:>8.2f} {full / show:>9.0f}x")


if __name__ == "__main__":
    main()
