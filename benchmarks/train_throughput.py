"""Training-step throughput and peak memory: our step vs a plain fp32 reference, side by side.

ours:      intr_training.engine.train_step: attention through scaled_dot_product_attention
           (return_attention=False); on CUDA also bf16 autocast and channels-last.
reference: the same model in fp32 with the attention weights materialised, as the official
           INTR code does (return_attention=True takes the explicit-softmax path).
Both run the full step: forward, cross-entropy, backward, gradient clipping, AdamW update.
On the CPU the two differ only in the attention path (no AMP or channels-last there).

Each variant runs in a fresh subprocess, alternating for --rounds rounds; the table shows each
variant's best throughput (least disturbed by other load) and its largest peak memory.
Peak memory on CUDA: torch.cuda.max_memory_allocated
(tensors only). On the CPU: growth of the process's resident-set high-water mark
(VmHWM in /proc/self/status; getrusage ru_maxrss where there is no /proc) from just before the
first step to the end — activations, gradients, optimizer state and allocator caches, as the
OS sees them. (Not ru_maxrss on Linux: a child inherits its parent's high-water mark through
fork and exec, so under a large parent such as run_all.py the growth would read 0.)

    python benchmarks/train_throughput.py --backbone tiny --image-size 128 --batch-size 16
    python benchmarks/train_throughput.py --backbone resnet50 --image-size 384 --batch-size 2 --steps 3

Paper scale (resnet50, C=200, batch 8, JPEG files decoded by the DataLoader, DETR multi-scale or
fixed 800x1200; the official recipe's loop as reference, each speed lever measured on and off):

    python benchmarks/train_throughput.py --paper --device cuda [paper_scale.py options]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from napari_intr.devices import DEVICES
from napari_intr.model.config import BACKBONES
from peak_memory import peak_rss_kib

VARIANTS = ("ours", "reference")


def measure(args) -> dict:
    import torch

    from intr_training.data import Batch
    from intr_training.engine import StepOptions, options_for, train_step
    from napari_intr.devices import resolve_device
    from napari_intr.model import IntrConfig, build_model

    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = IntrConfig.for_backbone(args.backbone, args.classes)
    model = build_model(config).to(device).train()
    options = options_for(device) if args.variant == "ours" else StepOptions(device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    size = args.image_size
    batch = Batch(torch.randn(args.batch_size, 3, size, size),
                  torch.zeros(args.batch_size, size, size, dtype=torch.bool),
                  torch.randint(args.classes, (args.batch_size,)), 0)

    def step():
        if args.variant == "ours":
            loss, _ = train_step(model, batch, options)
        else:  # the official path: fp32, attention weights built explicitly
            images, mask, labels = (t.to(device) for t in (batch.images, batch.mask, batch.labels))
            logits = model(images, mask, return_attention=True).logits
            loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = peak_rss_kib()
    for _ in range(args.warmup):
        step()
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize()
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = (peak_rss_kib() - rss_before) / 1024
    return {"images_per_second": args.steps * args.batch_size / seconds, "peak_mib": peak_mib,
            "device": str(device)}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="tiny", choices=BACKBONES)
    parser.add_argument("--image-size", type=int, default=128, help="square input side in px")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per variant")
    parser.add_argument("--classes", type=int, default=200, help="class queries (CUB has 200)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # set in the subprocesses
    return parser


def compare(argv: list[str]) -> dict:
    """Run both variants in fresh subprocesses, alternating for --rounds rounds (options as on the
    command line, e.g. ["--backbone", "tiny"]); each variant's best throughput and largest peak
    memory: {"ours": {...}, "reference": {...}, "args": Namespace}."""
    args = parser().parse_args(argv)
    runs = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            command = [sys.executable, __file__, *argv, "--variant", variant]
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0:
                raise RuntimeError(f"{variant} failed:\n{completed.stderr[-2000:]}")
            runs[variant].append(json.loads(completed.stdout.strip().splitlines()[-1]))
    best = {v: {"images_per_second": max(r["images_per_second"] for r in runs[v]),
                "peak_mib": max(r["peak_mib"] for r in runs[v]), "device": runs[v][0]["device"]}
            for v in VARIANTS}
    return {**best, "args": args}


def main() -> None:
    if "--paper" in sys.argv[1:]:
        import paper_scale
        sys.argv.remove("--paper")
        paper_scale.main()
        return
    args = parser().parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return
    try:
        result = compare(sys.argv[1:])
    except RuntimeError as error:
        sys.exit(str(error))
    ours, reference = result["ours"], result["reference"]
    memory = "peak CUDA memory (MiB)" if ours["device"].startswith("cuda") else "peak RSS growth (MiB)"
    print(f"{args.backbone}, {args.image_size}x{args.image_size} px, batch {args.batch_size}, {args.classes} classes, "
          f"{args.steps} timed steps, best of {args.rounds} rounds, device {ours['device']}")
    print(f"| {'':22} | {'ours':>9} | {'reference':>9} | {'ours / ref':>10} |")
    print(f"|{'-' * 24}|{'-' * 11}|{'-' * 11}|{'-' * 12}|")
    for label, key in (("images / s", "images_per_second"), (memory, "peak_mib")):
        ratio = ours[key] / reference[key] if reference[key] else float("nan")
        print(f"| {label:22} | {ours[key]:9.1f} | {reference[key]:9.1f} | {ratio:10.2f} |")


if __name__ == "__main__":
    main()
