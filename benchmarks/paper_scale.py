"""Paper-scale training throughput: resnet50 INTR, C=200, batch 8, JPEG files through a DataLoader.

    python benchmarks/train_throughput.py --paper --device cuda            # the one-command run
    python benchmarks/paper_scale.py --variant ours --device cuda ...      # one variant (what it runs)

reference: the official INTR/DETR recipe's loop: PIL decoding and transforms (random flip, DETR's
    random resize, ToTensor, Normalize) in DataLoader workers, fp32, attention weights materialised
    (return_attention=True, as nn.MultiheadAttention does), plain AdamW, same batch and workers.
intr train: the product's own loop, as `intr train --init none` runs it: its dataset (napari_intr.image_files
    reading, DETR-style multi-scale transform or --augment flip's fixed variants), collate, DataLoader
    (pinned memory on CUDA), model (shortlist head), optimizer, step options (bf16 autocast and
    channels-last by step size: engine.options_for) and engine.train_one_epoch (clipping, the loss
    check every step). Its figure is what `intr train` gets; "ours" shows what the levers could add.
ours: the levers in LEVERS that are switched on (all by default; `--levers amp,sdpa` picks some).
    Each lever also runs alone switched off ("ours - lever"), so the table shows what each pays.

Images: --jpeg-dir, or --images JPEG files drawn once into a temporary folder (photo-sized,
1200x800 px, quality 90). --resize multiscale: DETR's short side 480-800 in steps of 32, long side
capped at 1333; fixed: every image at 800x1200. Peak memory: torch.cuda.max_memory_allocated on
CUDA; growth of the process's resident high-water mark on the CPU (a smoke run).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

from napari_intr.devices import DEVICES
from napari_intr.model.config import BACKBONES

LEVERS = ("amp", "sdpa", "channels_last", "fused_adamw", "compile", "loader", "gpu_jpeg")
LEVER_HELP = {
    "amp": "bf16 autocast", "sdpa": "scaled_dot_product_attention, no attention weights",
    "channels_last": "NHWC convolutions", "fused_adamw": "AdamW(fused=True)",
    "compile": "torch.compile of the transformer", "loader": "pinned memory + persistent workers",
    "gpu_jpeg": "JPEG decoding and resizing on the GPU (torchvision.io.decode_jpeg)",
}
DETR_SIZES = tuple(range(480, 801, 32))
MAX_SIDE = 1333


def write_jpegs(folder: Path, count: int, size: tuple[int, int] = (800, 1200)) -> list[Path]:
    """Photo-like JPEGs: smooth colour fields with blobs and noise (compress like photographs)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    h, w = size
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    for i in range(count):
        image = np.zeros((h, w, 3))
        for _ in range(6):
            cy, cx, r = rng.uniform(0, 1, 3) * [h / max(h, w), w / max(h, w), 0.3]
            image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2 + 1e-3))[..., None] * rng.uniform(0, 1, 3)
        image = image / image.max() * 200 + rng.normal(0, 8, image.shape)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def target_size(height: int, width: int, short: int, max_side: int, fixed: bool, scale: float = 1.0
                ) -> tuple[int, int]:
    if fixed:
        small, large = round(800 * scale), round(1200 * scale)
        return (small, large) if height <= width else (large, small)
    from napari_intr.preprocess import resized_shape
    return resized_shape(height, width, short, max_side)


class ReferenceDataset:
    """The official recipe's data path: PIL decode and PIL transforms in the worker."""

    def __init__(self, paths, classes, scale, fixed):
        self.paths, self.classes, self.scale, self.fixed = paths, classes, scale, fixed

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        import random

        import torchvision.transforms as T
        import torchvision.transforms.functional as F
        from PIL import Image

        from napari_intr.preprocess import IMAGENET_MEAN, IMAGENET_STD
        image = Image.open(self.paths[index]).convert("RGB")
        if random.random() < 0.5:
            image = F.hflip(image)
        short = int(random.choice(DETR_SIZES) * self.scale)
        size = target_size(image.height, image.width, short, int(MAX_SIDE * self.scale), self.fixed, self.scale)
        image = F.resize(image, list(size))
        tensor = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(image))
        return tensor, index % self.classes


class OursDataset(ReferenceDataset):
    """torchvision.io decoding on uint8 tensors; with gpu_jpeg only the file bytes (decoded later)."""

    def __init__(self, paths, classes, scale, fixed, gpu_jpeg):
        super().__init__(paths, classes, scale, fixed)
        self.gpu_jpeg = gpu_jpeg

    def __getitem__(self, index):
        import random

        import torch
        from torchvision.io import decode_jpeg, read_file
        data = read_file(str(self.paths[index]))
        flip = random.random() < 0.5
        short = int(random.choice(DETR_SIZES) * self.scale)
        if self.gpu_jpeg:
            return data, flip, short, index % self.classes
        image = decode_jpeg(data)
        return prepare(image, flip, short, self.scale, self.fixed), torch.tensor(index % self.classes)


def prepare(image, flip: bool, short: int, scale: float, fixed: bool):
    """uint8 [3, H, W] (any device) -> normalised float [3, h, w]."""
    import torch
    import torchvision.transforms.v2.functional as F

    from napari_intr.preprocess import IMAGENET_MEAN, IMAGENET_STD
    if flip:
        image = image.flip(-1)
    size = target_size(image.shape[-2], image.shape[-1], short, int(MAX_SIDE * scale), fixed, scale)
    image = F.resize(image, list(size), antialias=True)
    return F.normalize(image.to(torch.float32) / 255, IMAGENET_MEAN, IMAGENET_STD)


def collate_images(items):
    import torch

    from napari_intr.preprocess import pad_batch
    images, mask = pad_batch([image for image, _ in items])
    return images, mask, torch.tensor([int(label) for _, label in items])


def collate_bytes(items):
    return items


def make_loader(args, levers: set, gpu_jpeg: bool, on_cuda: bool):
    """The variant's DataLoader over the JPEG files of --jpeg-dir."""
    from torch.utils.data import DataLoader
    paths = sorted(Path(args.jpeg_dir).glob("*.jpg"))
    if args.variant == "reference":
        dataset = ReferenceDataset(paths, args.classes, args.scale, args.resize == "fixed")
    else:
        dataset = OursDataset(paths, args.classes, args.scale, args.resize == "fixed", gpu_jpeg)
    loader_options = {"batch_size": args.batch_size, "shuffle": True, "num_workers": args.workers, "drop_last": True,
                      "collate_fn": collate_bytes if gpu_jpeg else collate_images}
    if "loader" in levers and args.workers > 0:
        loader_options.update(pin_memory=on_cuda, persistent_workers=True, prefetch_factor=4)
    loader = DataLoader(dataset, **loader_options)
    return loader


class Batches:
    """The first `count` batches of a DataLoader, as one epoch (train_one_epoch takes its len)."""

    def __init__(self, loader, count: int):
        self.loader, self.count = loader, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):  # the loader's epochs one after another, cut at `count` batches
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.loader)), self.count)


def measure_intr_train(args) -> dict:
    """The product's training loop (intr train), timed over --steps batches after --warmup."""
    import torch
    from torch.utils.data import DataLoader

    from intr_training import engine
    from intr_training.data import ImageFolderDataset, VariantDataset, collate
    from intr_training.initialization import initial_model
    from intr_training.training_run import optimizer_for
    from intr_training.transforms import fixed_variants, train_transform
    from napari_intr.devices import resolve_device
    from napari_intr.recipes import CLIP_MAX_NORM, RECIPES

    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    torch.manual_seed(0)
    class_names = [f"class {i}" for i in range(args.classes)]
    short_side = round(800 * args.scale)
    recipe = RECIPES[args.backbone]
    model = initial_model("none", class_names, args.backbone, short_side, torch.Generator().manual_seed(0),
                          recipe["dropout"]).model  # the recipe's dropout, as intr train sets it
    samples = [(path, i % args.classes) for i, path in enumerate(sorted(Path(args.jpeg_dir).glob("*.jpg")))]
    if args.resize == "fixed":
        dataset = VariantDataset(samples, fixed_variants(model.config, model.feature_stride, "flip"),
                                 model.config.max_side, seed=0)
    else:
        dataset = ImageFolderDataset(samples, train_transform(model.config, model.feature_stride))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        collate_fn=collate, pin_memory=on_cuda, drop_last=True)
    options = engine.options_for(device, args.batch_size * short_side ** 2)
    model.to(device).train()
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = optimizer_for(model, recipe["lr"], recipe["lr_backbone"])

    def epoch(steps: int) -> None:
        engine.train_one_epoch(model, Batches(loader, steps), optimizer, options, epoch=1, max_norm=CLIP_MAX_NORM)

    return {**timed(args, device, epoch), "levers": [], "precision": "bf16" if options.amp else "fp32"}


def timed(args, device, run) -> dict:
    """run(args.warmup) untimed, then run(args.steps) timed: images/s and peak memory (CUDA's
    allocator peak of the timed steps; on the CPU the growth of the resident high-water mark)."""
    import torch

    from peak_memory import peak_rss_kib
    on_cuda = device.type == "cuda"
    rss_before = peak_rss_kib()
    run(args.warmup)
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run(args.steps)
    if on_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else (peak_rss_kib() - rss_before) / 1024
    return {"images_per_second": args.steps * args.batch_size / seconds, "peak_mib": peak, "device": str(device)}


def measure(args) -> dict:
    import torch
    if args.variant == "intr-train":
        return measure_intr_train(args)

    from napari_intr.devices import resolve_device
    from napari_intr.model import IntrConfig, build_model
    from napari_intr.preprocess import pad_batch

    levers = set() if args.variant == "reference" else set(args.levers)
    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    torch.manual_seed(0)
    config = IntrConfig.for_backbone(args.backbone, args.classes)
    model = build_model(config).to(device).train()
    if "channels_last" in levers:
        model.to(memory_format=torch.channels_last)
    if "compile" in levers and on_cuda:  # inductor's CPU code generation is not what this measures
        model.transformer.compile()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=1e-4,
                                  **({"fused": True} if "fused_adamw" in levers and on_cuda else {}))
    gpu_jpeg = "gpu_jpeg" in levers and on_cuda
    loader = make_loader(args, levers, gpu_jpeg, on_cuda)

    def batches():
        while True:
            for batch in loader:
                if gpu_jpeg:
                    from torchvision.io import decode_jpeg
                    decoded = decode_jpeg([data for data, _, _, _ in batch], device=device)
                    images = [prepare(image, flip, short, args.scale, args.resize == "fixed")
                              for image, (_, flip, short, _) in zip(decoded, batch)]
                    images, mask = pad_batch(images)
                    labels = torch.tensor([label for *_, label in batch], device=device)
                else:
                    images, mask, labels = batch
                yield images, mask, labels

    def step(images, mask, labels):
        images = images.to(device, non_blocking=True)
        if "channels_last" in levers:
            images = images.contiguous(memory_format=torch.channels_last)
        mask, labels = mask.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="amp" in levers and on_cuda)
        with autocast:
            logits = model(images, mask, return_attention="sdpa" not in levers).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    stream = batches()

    def steps(count: int) -> None:
        for _ in range(count):
            step(*next(stream))

    return {**timed(args, device, steps), "levers": sorted(levers)}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50", choices=BACKBONES)
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (per GPU)")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--resize", choices=("multiscale", "fixed"), default="multiscale",
                        help="DETR's random 480-800 px short side, or every image at 800x1200")
    parser.add_argument("--scale", type=float, default=1.0, help="scale all sizes (a CPU smoke run: 0.1)")
    parser.add_argument("--images", type=int, default=64, help="JPEG files to draw without --jpeg-dir")
    parser.add_argument("--jpeg-dir", help="a folder of .jpg files (drawn into a temporary one if not given)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers (both variants)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compile, cudnn autotuning)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per variant")
    parser.add_argument("--levers", default=",".join(LEVERS), help="comma-separated: " + ", ".join(
        f"{name} ({text})" for name, text in LEVER_HELP.items()))
    parser.add_argument("--no-ablation", action="store_true", help="only reference and ours, not ours - each lever")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    args = parser().parse_args(argv)
    args.levers = [lever for lever in args.levers.split(",") if lever]
    unknown = set(args.levers) - set(LEVERS)
    if unknown:
        raise SystemExit(f"unknown levers {sorted(unknown)}; choose from {', '.join(LEVERS)}")
    return args


def compare(argv: list[str]) -> dict:
    """reference, ours and (unless --no-ablation) ours without each lever, each in a fresh
    subprocess; returns {variant: best result} and the parsed args."""
    import subprocess
    args = parse(argv)
    with tempfile.TemporaryDirectory() as temporary:
        if not args.jpeg_dir:
            size = (max(64, round(800 * args.scale)), max(64, round(1200 * args.scale)))
            write_jpegs(Path(temporary), args.images, size)
            argv = [*argv, "--jpeg-dir", temporary]
        variants = {"reference": [], "intr train": [], "ours": []}
        if not args.no_ablation:
            variants.update({f"ours - {lever}": [] for lever in args.levers})
        for _ in range(args.rounds):
            for variant in list(variants):
                extra = ["--variant", {"reference": "reference", "intr train": "intr-train"}.get(variant, "ours")]
                if variant.startswith("ours - "):
                    extra += ["--levers", ",".join(lever for lever in args.levers if lever != variant[7:])]
                command = [sys.executable, __file__, *argv, *extra]
                completed = subprocess.run(command, capture_output=True, text=True, check=False)
                if completed.returncode != 0:
                    raise RuntimeError(f"{variant} failed:\n{completed.stderr[-2000:]}")
                variants[variant].append(json.loads(completed.stdout.strip().splitlines()[-1]))
    best = {v: {"images_per_second": max(r["images_per_second"] for r in runs),
                "peak_mib": max(r["peak_mib"] for r in runs), "device": runs[0]["device"]}
            for v, runs in variants.items()}
    return {"results": best, "args": args}


def table(result: dict) -> str:
    results, args = result["results"], result["args"]
    reference = results["reference"]
    memory = "peak CUDA MiB" if reference["device"].startswith("cuda") else "peak RSS growth MiB"
    lines = [f"{args.backbone}, batch {args.batch_size}, C={args.classes}, {args.resize} resize x{args.scale}, "
             f"JPEG files via DataLoader ({args.workers} workers), {args.steps} timed steps, device "
             f"{reference['device']}",
             f"| variant | images/s | vs reference | {memory} | vs reference |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        memory_ratio = r["peak_mib"] / reference["peak_mib"] if reference["peak_mib"] > 0 else float("nan")
        lines.append(f"| {name} | {r['images_per_second']:.1f} | {r['images_per_second'] / reference['images_per_second']:.2f}x"
                     f" | {r['peak_mib']:.0f} | {memory_ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    args = parse(sys.argv[1:])
    if args.variant:
        print(json.dumps(measure(args)))
        return
    try:
        print(table(compare(sys.argv[1:])))
    except RuntimeError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
