"""Backbone features of a frozen backbone, computed once per image and variant and kept on disk.

With `--freeze backbone` (or encoder) the backbone's output for an image depends only on the
image, its (short side, flip) variant and the backbone's weights; recomputing it every epoch is
most of the work of a CPU fine-tune. The cache holds them in the run folder:

    OUT/feature_cache/<split>.f32    float32 feature maps, one slot per (image, variant), memory-mapped
    OUT/feature_cache/<split>.done   one byte per slot: 1 once the slot holds its features
    OUT/feature_cache/<split>.json   layout: fingerprint (weights, sizes, variants, precision), and per
                                     image its path, file size, modification time and slot shapes

A slot is filled the first time an epoch draws it (so the first epochs cost what an uncached
epoch costs, and an interrupted run keeps what it computed); `--resume` reuses the files. An
image whose file changed (size or modification time) is recomputed, and so is everything when
the backbone weights, image size, variants or precision (fp32, bf16 autocast) change. Images are
encoded one at a time (same-size images together), unpadded: features of a padded batch would
depend on the other images in it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_intr.atomic import atomic_write
from napari_intr.collection.scan import Sample, image_size
from napari_intr.preprocess import resized_shape
from napari_intr.provenance import Changes, fingerprint

from .data import Batch, VariantDataset
from .engine import StepOptions, autocast, device_images

CACHE_FOLDER = "feature_cache"
CACHE_FORMAT = 1
# How the features are computed, part of the fingerprint: a change recomputes every slot.
# 2: batch norm folded into the convolutions (napari_intr.model.backbone.folded_batch_norm).
FEATURE_COMPUTATION = 2
# float32, not float16: INTR's early gradients are small differences of near-equal logits, and
# float16 features changed them by ~10 % in our test; float32 makes the cache exact.
DTYPE, SUFFIX = np.float32, "f32"


def backbone_fingerprint(backbone: torch.nn.Module) -> str:
    """A hash of every weight and buffer of the backbone (batch-norm statistics included)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def feature_shape(height: int, width: int, short_side: int, max_side: int, stride: int) -> tuple[int, int]:
    """Feature-map size of an image resized to `short_side`: ceil(size / stride). A CNN's every
    stride-2 stage rounds up (and ceil(ceil(n / 2) / 2) = ceil(n / 4)); a ViT's last partial
    patch is a cell of its own (model/vit_backbone.py)."""
    h, w = resized_shape(height, width, short_side, max_side)
    return math.ceil(h / stride), math.ceil(w / stride)


def file_key(path: Path) -> list:
    """[path, size, mtime_ns, SHA-256 or None]: a slot is reused only for the same content
    (napari_intr.provenance; an image replaced under its name is recomputed)."""
    found = fingerprint(path)
    return [str(path), found["size"], found["mtime_ns"], found.get("sha256")]


@dataclass
class Layout:
    fingerprint: str
    images: list[list]        # per image: file_key
    shapes: list[list]        # per image and variant: [h, w]
    offsets: list[list[int]]  # per image and variant: first element of the slot
    channels: int
    total: int

    def to_json(self) -> dict:
        return {"format": CACHE_FORMAT, **self.__dict__}


class FeatureCache:
    """One split's cache (e.g. "train" with its variants, "val" with one)."""

    def __init__(self, folder: Path, split: str, layout: Layout):
        self.folder, self.split, self.layout = Path(folder), split, layout
        self._data = self._done = None
        self.changes = Changes()  # images whose content changed since the cache was filled

    # -- creation (main process; rank 0 under torchrun, the others open what it wrote) ----------

    @classmethod
    def prepare(cls, out: Path, split: str, samples: list[Sample], variants: list, max_side: int,
                backbone: torch.nn.Module, stride: int, channels: int, precision: str = "fp32",
                fingerprint: str | None = None, create: bool = True) -> tuple[FeatureCache, int]:
        """The cache for these samples and variants, keeping every still-valid slot of an earlier
        cache in `out`; returns it and the number of slots reused. precision: what the backbone
        computes in ("fp32", "bf16"): features of another precision are recomputed."""
        folder = Path(out) / CACHE_FOLDER
        fingerprint = fingerprint or backbone_fingerprint(backbone)
        fingerprint = hashlib.blake2b(json.dumps(
            [fingerprint, max_side, stride, channels, [[v.short_side, v.flip] for v in variants], precision,
             FEATURE_COMPUTATION]).encode(),
            digest_size=16).hexdigest()
        images, shapes, offsets, total = [], [], [], 0
        for path, _ in samples:
            height, width = image_size(Path(path))
            images.append(file_key(Path(path)))
            shapes.append([list(feature_shape(height, width, v.short_side, max_side, stride)) for v in variants])
            offsets.append([])
            for h, w in shapes[-1]:
                offsets[-1].append(total)
                total += channels * h * w
        layout = Layout(fingerprint, images, shapes, offsets, channels, total)
        cache = cls(folder, split, layout)
        if not create:
            return cache, 0
        cache._check_space()
        return cache, cache._build_from(cls._previous(folder, split))

    def _check_space(self) -> None:
        """Refuse, before any file is written, a cache the disk cannot hold (the split's earlier
        cache file, which this one replaces, counts as free)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        needed = np.dtype(DTYPE).itemsize * self.layout.total
        free = shutil.disk_usage(self.folder).free
        replaced = self.data_path.stat().st_size if self.data_path.exists() else 0
        if needed > free + replaced:
            raise ValueError(f"the feature cache needs {needed / 2**30:.1f} GiB in {self.folder} and "
                             f"only {free / 2**30:.1f} GiB are free: free some space, lower --image-size, or "
                             "train with --no-cache-features")

    @staticmethod
    def _previous(folder: Path, split: str) -> FeatureCache | None:
        try:
            saved = json.loads((folder / f"{split}.json").read_text())
            if saved.pop("format") != CACHE_FORMAT:
                return None
            previous = FeatureCache(folder, split, Layout(**saved))
            return previous if previous.intact() else None
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def intact(self) -> bool:
        """Whether the layout is self-consistent and both files have the sizes it gives (a
        truncated or edited cache is rebuilt rather than read out of bounds)."""
        layout = self.layout
        if not (len(layout.images) == len(layout.shapes) == len(layout.offsets)) or layout.channels < 1:
            return False
        for shapes, offsets in zip(layout.shapes, layout.offsets):
            if len(shapes) != len(offsets) or len(shapes) != self.variants_per_image:
                return False
            for (h, w), start in zip(shapes, offsets):
                if not 0 <= start <= start + layout.channels * h * w <= layout.total:
                    return False
        return (self.data_path.stat().st_size == np.dtype(DTYPE).itemsize * max(layout.total, 1)
                and self.done_path.stat().st_size == max(self.slot_count, 1))

    def _build_from(self, previous: FeatureCache | None) -> int:
        """Write this layout's files, copying the slots of `previous` that are still valid."""
        self.folder.mkdir(parents=True, exist_ok=True)
        same = previous is not None and previous.layout.to_json() == self.layout.to_json()
        if same:
            return int(previous.done.sum())
        (self.folder / f"{self.split}.json").unlink(missing_ok=True)  # no layout: nothing is trusted
        reusable = {}
        if previous is not None and previous.layout.fingerprint == self.layout.fingerprint:
            reusable = {tuple(key): i for i, key in enumerate(previous.layout.images)}
            earlier = {key[0] for key in previous.layout.images}  # (vanished ones: --resume says so)
            self.changes = Changes(changed=[key[0] for key in self.layout.images
                                            if key[0] in earlier and tuple(key) not in reusable])
        temporary = {name: self.folder / f".{self.split}.{name}.tmp" for name in (SUFFIX, "done")}
        data = np.memmap(temporary[SUFFIX], DTYPE, "w+", shape=(max(self.layout.total, 1),))
        done = np.memmap(temporary["done"], np.uint8, "w+", shape=(max(self.slot_count, 1),))
        reused = 0
        for image, key in enumerate(self.layout.images):
            old = reusable.get(tuple(key))
            if old is None or previous.layout.shapes[old] != self.layout.shapes[image]:
                continue
            for variant, (h, w) in enumerate(self.layout.shapes[image]):
                if previous.done[previous.slot(old, variant)]:
                    size = self.layout.channels * h * w
                    start, old_start = self.layout.offsets[image][variant], previous.layout.offsets[old][variant]
                    data[start:start + size] = previous.data[old_start:old_start + size]
                    done[self.slot(image, variant)] = 1
                    reused += 1
        data.flush()
        done.flush()
        del data, done
        if previous is not None:
            previous.close()
        os.replace(temporary[SUFFIX], self.data_path)
        os.replace(temporary["done"], self.done_path)
        atomic_write(self.folder / f"{self.split}.json",
                     lambda path: Path(path).write_text(json.dumps(self.layout.to_json())))
        return reused

    # -- access (any process) ------------------------------------------------------------------

    @property
    def data_path(self) -> Path:
        return self.folder / f"{self.split}.{SUFFIX}"

    @property
    def done_path(self) -> Path:
        return self.folder / f"{self.split}.done"

    @property
    def slot_count(self) -> int:
        return sum(len(shapes) for shapes in self.layout.shapes)

    @property
    def variants_per_image(self) -> int:
        return len(self.layout.shapes[0]) if self.layout.shapes else 1

    def slot(self, image: int, variant: int) -> int:
        return image * self.variants_per_image + variant

    @property
    def data(self) -> np.memmap:
        if self._data is None:
            self._data = np.memmap(self.data_path, DTYPE, "r+")
        return self._data

    @property
    def done(self) -> np.memmap:
        if self._done is None:
            self._done = np.memmap(self.done_path, np.uint8, "r+")
        return self._done

    def close(self) -> None:
        for array in (self._data, self._done):
            if array is not None:
                array.flush()
        self._data = self._done = None

    def __getstate__(self):  # DataLoader workers open their own maps
        return {**self.__dict__, "_data": None, "_done": None}

    def has(self, image: int, variant: int) -> bool:
        return bool(self.done[self.slot(image, variant)])

    def read(self, image: int, variant: int) -> torch.Tensor | None:
        """A slot's features; None (and the slot marked to compute again) when they are not all
        finite: the cache file was damaged, and the features are recomputed from the image
        rather than reach training (where they would look like a diverged learning rate)."""
        h, w = self.layout.shapes[image][variant]
        start = self.layout.offsets[image][variant]
        values = np.array(self.data[start:start + self.layout.channels * h * w])
        if not np.isfinite(values).all():
            self.done[self.slot(image, variant)] = 0
            print(f"warning: feature cache {self.data_path}: the features of {self.layout.images[image][0]} are "
                  "damaged (NaN or infinite values); recomputed from the image", file=sys.stderr)
            return None
        return torch.from_numpy(values).view(self.layout.channels, h, w)

    def write(self, image: int, variant: int, features: torch.Tensor) -> None:
        h, w = self.layout.shapes[image][variant]
        if tuple(features.shape) != (self.layout.channels, h, w):
            raise RuntimeError(f"feature cache: expected features of shape {(self.layout.channels, h, w)} for "
                               f"{self.layout.images[image][0]}, got {tuple(features.shape)}")
        start = self.layout.offsets[image][variant]
        self.data[start:start + features.numel()] = features.detach().cpu().reshape(-1).float().numpy()
        self.done[self.slot(image, variant)] = 1

    def filled(self) -> int:
        return int(np.asarray(self.done[:self.slot_count]).sum())


@dataclass
class Pending:
    """A dataset item: cached features, or the image whose features are still to compute."""
    tensor: torch.Tensor  # features [C, h, w], or the image [3, H, W]
    label: int
    image: int
    variant: int
    cached: bool


class CachedVariants(Dataset):
    """A VariantDataset whose items come from the cache where it has them."""

    def __init__(self, images: VariantDataset, cache: FeatureCache):
        self.images, self.cache = images, cache

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.images.set_epoch(epoch)

    def __getitem__(self, index: int):
        variant = self.images.variant_of(index)
        label = self.images.samples[index][1]
        if self.cache.has(index, variant):
            features = self.cache.read(index, variant)
            if features is not None:
                return Pending(features, label, index, variant, True)
        item = self.images[index]
        return None if item is None else Pending(item[0], label, index, variant, False)


def collate_pending(items: list) -> list:
    return items  # completed in the main process by FeatureLoader


def pad_features(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[C, h_i, w_i] maps -> [B, C, h, w] zero-padded, and the mask [B, h, w] (True on padding)."""
    height, width = max(f.shape[-2] for f in features), max(f.shape[-1] for f in features)
    batch = features[0].new_zeros(len(features), features[0].shape[0], height, width)
    mask = torch.ones(len(features), height, width, dtype=torch.bool)
    for i, f in enumerate(features):
        batch[i, :, :f.shape[-2], :f.shape[-1]] = f
        mask[i, :f.shape[-2], :f.shape[-1]] = False
    return batch, mask


def backbone_features(backbone: torch.nn.Module, images: torch.Tensor, mask: torch.Tensor,
                      options: StepOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """A frozen backbone's float32 features [B, C, h, w] and mask [B, h, w] of images [B, 3, H, W],
    in the step's precision and memory format. backbone: `folded_batch_norm` of the model's.
    On the CPU one image at a time: resnet50 at 512 px in bf16 took 0.118 s per image so, 0.139 s
    in batches of 4 and 0.141 s in batches of 8 (benchmarks/RESULTS.md); a GPU wants batches."""
    images, mask = device_images(images, options), mask.to(options.device)
    was_training = backbone.training
    backbone.eval()
    size = 1 if options.device.type == "cpu" else len(images)
    with torch.no_grad(), autocast(options):
        parts = [backbone(images[i:i + size], mask[i:i + size]) for i in range(0, len(images), size)]
    backbone.train(was_training)
    return torch.cat([features for features, _ in parts]).float(), torch.cat([masks for _, masks in parts])


class BackboneFeatures:
    """Iterates a DataLoader of image batches and yields their features (a frozen backbone
    without the cache: computed as the cache computes them)."""

    def __init__(self, loader, backbone: torch.nn.Module, options: StepOptions):
        self.loader, self.backbone, self.options = loader, backbone, options

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if len(batch.labels):
                features, mask = backbone_features(self.backbone, batch.images, batch.mask, self.options)
                batch = Batch(features, mask, batch.labels, batch.skipped, features=True)
            yield batch


class FeatureLoader:
    """Iterates a DataLoader of CachedVariants and yields feature batches: missing slots are
    computed with the frozen backbone (`backbone_features`), written to the cache, then used."""

    def __init__(self, loader, cache: FeatureCache, backbone: torch.nn.Module, options: StepOptions):
        self.loader, self.cache, self.backbone, self.options = loader, cache, backbone, options
        self.computed = 0

    def __len__(self) -> int:
        return len(self.loader)

    def complete(self, items: list) -> Batch:
        kept = [item for item in items if item is not None]
        skipped = len(items) - len(kept)
        if not kept:
            return Batch(torch.zeros(0, self.cache.layout.channels, 0, 0), torch.zeros(0, 0, 0, dtype=torch.bool),
                         torch.zeros(0, dtype=torch.long), skipped, features=True)
        missing = [item for item in kept if not item.cached]
        by_shape: dict[tuple, list[Pending]] = {}
        for item in missing:
            by_shape.setdefault(tuple(item.tensor.shape), []).append(item)
        for group in by_shape.values():
            images = torch.stack([item.tensor for item in group])
            mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool)
            features, _ = backbone_features(self.backbone, images, mask, self.options)
            for item, feature in zip(group, features.cpu()):
                self.cache.write(item.image, item.variant, feature)
                item.tensor, item.cached = feature, True
                self.computed += 1
        features, mask = pad_features([item.tensor for item in kept])
        return Batch(features, mask, torch.tensor([item.label for item in kept]), skipped, features=True)

    def __iter__(self):
        for items in self.loader:
            yield self.complete(items)
        self.cache.data.flush()
        self.cache.done.flush()
