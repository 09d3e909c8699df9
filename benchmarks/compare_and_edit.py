"""Mimic comparison and paint edits against a full explain, measured side by side.

    python benchmarks/compare_and_edit.py [--repeats 3] [--device cpu] [--only tiny]

full explain:       preprocess + backbone + encoder + decoder for all classes (a new image)
candidate switch:   decoder only, 2-5 classes in drop mode on the cached memory
compare:            `comparison.compare` with the all-classes explanation at hand (what the
                    widget calls when the candidate set changes)
<edit> apply:       the edit alone, on a disc of radius 1/20 of the short side
<edit> + explain:   the edit, a full explain of the edited image and `compare_explanations`
                    (what the widget does after each edit)

Ratios are time / full explain. Models have random weights: timing does not depend on them.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage.draw import disk

from napari_intr.comparison import compare
from napari_intr.devices import resolve_device
from napari_intr.editing import Blur, Erase, Recolour, Transplant, compare_explanations
from napari_intr.explanation import Explainer
from napari_intr.model import IntrConfig, build_model
from timed_training import median_seconds

CASES = [  # (label, config, image height, image width)
    ("tiny", IntrConfig.tiny(10), 128, 192),
    ("resnet50", IntrConfig(num_classes=200), 800, 1200),
]


def measure(config: IntrConfig, height: int, width: int, repeats: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    explainer = Explainer(build_model(config).to(device).eval(), "benchmark")
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), bool)
    mask[disk((height / 2, width / 3), min(height, width) / 20, shape=mask.shape)] = True
    encoded = explainer.encode(image)
    everything = explainer.decode(encoded)
    sets = iter([rng.choice(config.num_classes, size=rng.integers(2, 6), replace=False).tolist()
                 for _ in range(4 * (repeats + 1))])

    def switch():
        return explainer.decode(encoded, next(sets), "drop")

    def comparison():
        candidates = next(sets)
        return compare(explainer, encoded, candidates[0], candidates, all_classes=everything)

    def edited_and_explained(edit):
        after = explainer.explain(edit.apply(image, mask))
        return compare_explanations(everything, after, mask, everything.class_names[0])

    edits = {"recolour": Recolour((1, 1, 1)), "erase": Erase(), "blur": Blur(3.0), "transplant": Transplant(other)}
    functions = {"full explain": lambda: explainer.explain(image), "candidate switch": switch,
                 "compare": comparison}
    for name, edit in edits.items():
        functions[f"{name} apply"] = lambda edit=edit: edit.apply(image, mask)
        functions[f"{name} + explain"] = lambda edit=edit: edited_and_explained(edit)
    return median_seconds(functions, repeats, device), int(mask.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--only", choices=[label for label, *_ in CASES], help="run one model only")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, median of {args.repeats} "
          "interleaved repeats after one warm-up, random weights")
    header = f"{'model':<9} {'image':>9} {'C':>4} {'painted':>8}  {'operation':<22} {'ms':>9} {'/ full':>8}"
    print(header)
    print("-" * len(header))
    for label, config, height, width in CASES:
        if args.only and label != args.only:
            continue
        timings, painted = measure(config, height, width, args.repeats, device)
        full = timings["full explain"]
        for operation, seconds in timings.items():
            print(f"{label:<9} {f'{height}x{width}':>9} {config.num_classes:>4} {painted:>8}  "
                  f"{operation:<22} {seconds * 1e3:>9.1f} {seconds / full:>8.3f}")


if __name__ == "__main__":
    main()
