"""Issue 27: is a stall the backbone's or the decoder's? Train the tiny INTR backbone ALONE as a
plain classifier (its feature map pooled, mean and max over the cells, then one linear layer) on
a collection, and optionally write an INTR model that starts from that backbone.

    python benchmarks/backbone_alone.py --data DRAW [--lr 1e-3] [--epochs 12] [--seed 0]
        [--save-init INIT.safetensors]
    intr train --data DRAW --backbone tiny --init INIT.safetensors ...   # INTR on top of it

The same data as `intr train --backbone tiny --image-size 128` sees (the images resized to
128 px, random horizontal flips, ImageNet normalisation, batch 16), AdamW (weight decay 1e-4)
with a one-cycle schedule (10 % warm-up, cosine decay), one torch thread. If the backbone alone
finds the trait where `intr train` stalls, and INTR started from that backbone learns it, the
stall is in how the backbone learns inside INTR, not in what the decoder can read
(benchmarks/RESULTS.md, issue 27, session 9).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from napari_intr.image_files import IMAGE_SUFFIXES
from napari_intr.model import IntrConfig, build_model
from napari_intr.model.backbone import TinyBody
from napari_intr.preprocess import IMAGENET_MEAN, IMAGENET_STD
from napari_intr.recipes import NEW_MODEL

BATCH = 16


def load_split(folder: Path, classes: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(path) as image:
                    images.append(np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR)))
                labels.append(label)
    if not images:
        raise SystemExit(f"no images in {folder}: expected {folder}/<species>/<image>")
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (pixels - mean) / std, torch.tensor(labels)


class PooledClassifier(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.body = TinyBody()
        self.head = nn.Linear(2 * 128, classes)  # TinyBody's last width, mean and max pooled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cells = self.body(images).flatten(2)
        return self.head(torch.cat((cells.mean(-1), cells.amax(-1)), 1))


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(images[i:i + 64]).argmax(1) for i in range(0, len(images), 64)])
    return float((predicted == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a collection with train/ and val/ (lookalike_draws.py)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-init", type=Path, help="write an INTR model (tiny, hidden 128) with this backbone")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    classes = sorted(p.name for p in (args.data / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    train_images, train_labels = load_split(args.data / "train", classes, args.image_size)
    val_images, val_labels = load_split(args.data / "val", classes, args.image_size)
    model = PooledClassifier(len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * -(-len(train_images) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.1)
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order, correct = torch.randperm(len(train_images)), 0
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            images = train_images[batch].clone()
            flip = torch.rand(len(batch)) < 0.5
            images[flip] = images[flip].flip(-1)
            logits = model(images)
            loss = F.cross_entropy(logits, train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((logits.argmax(1) == train_labels[batch]).sum())
        print(f"epoch {epoch}: train acc {correct / len(order):.3f}, val acc "
              f"{accuracy(model, val_images, val_labels):.3f}, {time.perf_counter() - started:.0f} s", flush=True)
    if args.save_init:
        intr = build_model(IntrConfig.tiny(len(classes), **NEW_MODEL["tiny"]), classes)
        intr.backbone[0].body.load_state_dict(model.body.state_dict())
        from napari_intr.checkpoints import save_model
        save_model(intr, args.save_init)
        print(f"INTR model with this backbone: {args.save_init}")


if __name__ == "__main__":
    main()
