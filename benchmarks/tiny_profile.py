"""Where a tiny `intr train` epoch spends its time: data, the step's parts, validation, threads.

    python benchmarks/tiny_profile.py --data DIR [--threads 1,2] [--profile]

On DIR's first 64 training images (tiny model, 128 px, batch 16), one process per thread count:
per image, decoding and decoding + resizing (what a loader worker does every epoch); per batch,
the training step with the old recipe's settings (dropout 0.1: attention on the unfused path)
and the new one's (dropout 0: fused scaled_dot_product_attention), and an evaluation forward.
--profile prints torch.profiler's top operators of the old step. Load averages are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(data: str, threads: int, profile: bool) -> dict:
    import torch

    from intr_training.data import collate
    from intr_training.transforms import resize_normalise
    from napari_intr.collection.scan import read_image, scan_collection
    from napari_intr.model import IntrConfig, build_model
    torch.set_num_threads(threads)
    collection = scan_collection(data, 0.2, 0)
    samples = collection.train[:64]
    result = {"threads": threads, "load_before": os.getloadavg()}
    started = time.perf_counter()
    images = [read_image(path) for path, _ in samples]
    result["decode_ms_per_image"] = (time.perf_counter() - started) / len(samples) * 1e3
    started = time.perf_counter()
    tensors = [resize_normalise(read_image(path), 128, 224) for path, _ in samples]
    result["decode_resize_ms_per_image"] = (time.perf_counter() - started) / len(samples) * 1e3
    del images
    batch = collate([(tensor, label) for tensor, (_, label) in zip(tensors[:16], samples[:16])])

    def step_ms(model, repeats=3):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step():
            logits = model(batch.images, batch.mask, return_attention=False).logits
            torch.nn.functional.cross_entropy(logits, batch.labels).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            optimizer.zero_grad()
        model.train()
        step()
        begin = time.perf_counter()
        for _ in range(repeats):
            step()
        return (time.perf_counter() - begin) / repeats * 1e3, step

    classes = len(collection.class_names)
    torch.manual_seed(0)
    old = build_model(IntrConfig.tiny(classes, dropout=0.1))
    result["train_step_ms_dropout_0.1"], old_step = step_ms(old)
    new = build_model(IntrConfig.tiny(classes, dropout=0.0))
    result["train_step_ms_dropout_0"], _ = step_ms(new)
    new.eval()
    with torch.no_grad():
        new(batch.images, batch.mask, return_attention=False)
        begin = time.perf_counter()
        for _ in range(3):
            new(batch.images, batch.mask, return_attention=False)
        result["eval_forward_ms"] = (time.perf_counter() - begin) / 3 * 1e3
    result["batch"] = list(batch.images.shape)
    result["load_after"] = os.getloadavg()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            old_step()
        result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.data, args.child, args.profile)))
        return
    for threads in (int(t) for t in args.threads.split(",")):
        command = [sys.executable, __file__, "--data", args.data, "--child", str(threads)]
        completed = subprocess.run(command + (["--profile"] if args.profile else []), capture_output=True,
                                   text=True, check=True)
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        table = result.pop("profile", None)
        print(json.dumps(result))
        if table:
            print(table)


if __name__ == "__main__":
    main()
