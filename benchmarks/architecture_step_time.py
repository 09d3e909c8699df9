"""Training-step time of a new tiny model's shapes, side by side (issue 21's cost check).

    python benchmarks/architecture_step_time.py [--repeats 12]

One AdamW step (forward without maps, cross-entropy, backward) on a batch of 16 random 128 px
images for each shape: the default new tiny model (recipes.NEW_MODEL: hidden 128, two encoder
layers), one and no encoder layer, and four null keys. The shapes take turns, so machine load
hits them alike; the median of the steps after two warm-up rounds, and its ratio to the default.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from napari_intr.model import IntrConfig, build_model
from napari_intr.recipes import NEW_MODEL

SHAPES = {"default": {}, "--enc-layers 1": {"enc_layers": 1}, "--enc-layers 0": {"enc_layers": 0},
          "--null-keys 4": {"null_keys": 4}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {name: build_model(IntrConfig.tiny(4, dropout=0.0, shortlist_head=True, **NEW_MODEL["tiny"], **shape)).train()
              for name, shape in SHAPES.items()}
    optimizers = {name: torch.optim.AdamW(model.parameters(), 1e-4) for name, model in models.items()}
    images, labels = torch.randn(16, 3, 128, 128), torch.randint(0, 4, (16,))
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(images, return_attention=False).logits, labels)
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["default"][2:])
    for name, values in seconds.items():
        median = statistics.median(values[2:])
        print(f"{name}: {1000 * median:.1f} ms per step ({median / base:.2f}x the default)")


if __name__ == "__main__":
    main()
