"""Training data: datasets over a scanned collection (napari_intr.collection.scan), loading and
batching. Images that fail to decode or resize make the dataset return None (the reason goes to
stderr), and `collate` drops them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from napari_intr import image_files
from napari_intr.collection.scan import Sample, read_image
from napari_intr.preprocess import pad_batch


class ImageFolderDataset(Dataset):
    def __init__(self, samples: list[Sample], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            return self.transform(read_image(path)), label
        except Exception as error:  # a damaged, huge or extreme image must never end an epoch
            print(f"warning: {path} skipped: {image_files.reason(error)}", file=sys.stderr)
            return None


@dataclass
class Batch:
    images: torch.Tensor  # [B, 3, H, W], zero-padded (features: [B, C, h, w] backbone feature maps)
    mask: torch.Tensor    # [B, H, W], True on padding (features: [B, h, w])
    labels: torch.Tensor  # [B]
    skipped: int          # images of this batch that could not be decoded
    features: bool = False  # `images` holds cached backbone features (feature_cache)

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this
        return Batch(self.images.pin_memory(), self.mask.pin_memory(), self.labels.pin_memory(), self.skipped,
                     self.features)


def collate(items: list) -> Batch:
    """Pad a list of (image, label) to one batch; None items (unreadable images) are dropped, so a
    batch may be empty (images of shape [0, 3, 0, 0]): callers skip it."""
    kept = [item for item in items if item is not None]
    skipped = len(items) - len(kept)
    if not kept:
        return Batch(torch.zeros(0, 3, 0, 0), torch.zeros(0, 0, 0, dtype=torch.bool),
                     torch.zeros(0, dtype=torch.long), skipped)
    images, mask = pad_batch([image for image, _ in kept])
    return Batch(images, mask, torch.tensor([label for _, label in kept]), skipped)


class VariantDataset(Dataset):
    """Training images in fixed (short side, flip) variants, one per image and epoch by the seeded
    rule of `transforms.variant_index` (call `set_epoch` before each epoch). With `keep=True` each
    resized image stays in memory after its first use (for collections that fit: no decoding or
    resizing after the first epoch); the flip is applied on the way out."""

    def __init__(self, samples: list[Sample], variants: list, max_side: int, seed: int, keep: bool = False):
        self.samples, self.variants, self.max_side, self.seed, self.keep = samples, list(variants), max_side, seed, keep
        self.epoch = 0
        self._kept: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def variant_of(self, index: int) -> int:
        from .transforms import variant_index
        return variant_index(self.seed, self.epoch, index, len(self.variants))

    def resized(self, index: int, short_side: int) -> torch.Tensor:
        from .transforms import resize_normalise
        key = (index, short_side)
        if key in self._kept:
            return self._kept[key]
        tensor = resize_normalise(read_image(self.samples[index][0]), short_side, self.max_side)
        if self.keep:
            self._kept[key] = tensor
        return tensor

    def __getitem__(self, index: int):
        from .transforms import apply_variant
        variant = self.variants[self.variant_of(index)]
        try:
            resized = self.resized(index, variant.short_side)
        except Exception as error:  # noqa: BLE001 (a damaged file must never end an epoch)
            print(f"warning: {self.samples[index][0]} could not be decoded ({type(error).__name__}: {error}); "
                  "skipped", file=sys.stderr)
            return None
        return apply_variant(resized, variant), self.samples[index][1]
