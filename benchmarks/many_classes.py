"""Past INTR's class limit: shortlist explain and sampled-query training at C = 10 000, side by side
with the C = 200 model they must keep up with.

    python benchmarks/many_classes.py [--device cpu|cuda] [--repeats 3] [--quick]

explain (resnet50 INTR at 800x1200, random weights; preprocess + backbone + encoder + decoder
with attention maps, i.e. Explainer.explain):
  full C=200          every class decoded (the CUB-sized model)
  shortlist C=10000   first pass over 10 000 classes, decoder on the top --shortlist (64)
  full C=10000        every one of the 10 000 classes decoded (what shortlisting avoids)
training step (forward, loss, backward, clip, AdamW; intr_training.engine.train_step):
  full C=200          all 200 queries decoded
  sampled C=10000     --sampled-queries 256 of 10 000 (true + hard + random negatives)

Each case runs in a fresh subprocess (so that its peak memory is its own), and the cases take
turns for --rounds rounds; the table shows each case's best median time (least disturbed by other
load) and its largest peak-RSS growth over the process's state after building the model (CPU; on
CUDA torch.cuda.max_memory_allocated). Targets: shortlist C=10000 explain <= 2x the time and
peak memory of full C=200; sampled C=10000 step <= 1.5x the full C=200 step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peak_memory import peak_rss_kib

EXPLAIN_CASES = ("full200", "shortlist10000", "full10000")
TRAIN_CASES = ("train_full200", "train_sampled10000")
TARGET_EXPLAIN = 2.0
TARGET_TRAIN = 1.5


def _explain_case(case: str, args) -> dict:
    import numpy as np
    import torch

    from napari_intr.devices import resolve_device
    from napari_intr.explanation import Explainer
    from napari_intr.model import IntrConfig, build_model

    device = resolve_device(args.device)
    classes = 200 if case == "full200" else args.classes
    torch.manual_seed(0)
    model = build_model(IntrConfig(num_classes=classes, shortlist_head=True)).to(device).eval()
    explainer = Explainer(model, "benchmark")
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    shortlist = args.shortlist if case.startswith("shortlist") else None
    repeats = 1 if case == "full10000" else args.repeats

    def run():
        return explainer.explain(image, shortlist=shortlist)  # numpy out: waits for the device

    rss_before = peak_rss_kib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats + (0 if case == "full10000" else 1)):  # the first is a warm-up
        start = time.perf_counter()
        explanation = run()
        times.append(time.perf_counter() - start)
    times = times[1:] if len(times) > 1 else times
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else (peak_rss_kib() - rss_before) / 1024)
    return {"seconds": statistics.median(times), "peak_mib": peak, "decoded": len(explanation.class_names),
            "classes": classes, "device": str(device), "input": list(explanation.input_shape),
            "warm_up": case != "full10000"}


def _train_case(case: str, args) -> dict:
    import torch

    from intr_training.data import Batch
    from intr_training.engine import options_for, train_step
    from intr_training.query_sampling import QuerySampler
    from napari_intr.devices import resolve_device
    from napari_intr.model import IntrConfig, build_model

    device = resolve_device(args.device)
    classes = 200 if case == "train_full200" else args.classes
    torch.manual_seed(0)
    model = build_model(IntrConfig(num_classes=classes, shortlist_head=True)).to(device).train()
    options = options_for(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size, batch_size = args.train_size, args.train_batch
    batch = Batch(torch.randn(batch_size, 3, size, size), torch.zeros(batch_size, size, size, dtype=torch.bool),
                  torch.randint(classes, (batch_size,), generator=torch.Generator().manual_seed(1)), 0)
    sampler = None if case == "train_full200" else QuerySampler(args.sampled_queries, classes,
                                                                 torch.Generator().manual_seed(0))

    def step():
        loss, _ = train_step(model, batch, options, sampler)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = peak_rss_kib()
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.train_steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else (peak_rss_kib() - rss_before) / 1024)
    return {"seconds": statistics.median(times), "peak_mib": peak, "classes": classes, "device": str(device),
            "decoded": classes if sampler is None else len(sampler.chosen.classes)}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--shortlist", type=int, default=64)
    parser.add_argument("--sampled-queries", type=int, default=256)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3, help="timed explains per case and round")
    parser.add_argument("--rounds", type=int, default=1, help="turns of every case")
    parser.add_argument("--train-size", type=int, default=384, help="square training input side")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--skip-full10000", action="store_true", help="leave out the full C=10000 explain")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, not the targets)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # set in the subprocesses
    return parser


def quick_arguments(argv: list[str]) -> list[str]:
    return [*argv, "--classes", "2000", "--height", "256", "--width", "384", "--repeats", "1",
            "--train-size", "128", "--train-steps", "1", "--shortlist", "16", "--sampled-queries", "32"]


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def measure_all(argv: list[str]) -> dict:
    """Every case in fresh subprocesses, taking turns; best median time and largest peak per case."""
    args = parser().parse_args(argv)
    cases = [c for c in EXPLAIN_CASES if not (args.skip_full10000 and c == "full10000")] + list(TRAIN_CASES)
    runs = {case: [] for case in cases}
    loads = [f"start {load()}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent / "src"), str(HERE.parent / "training"), os.environ.get("PYTHONPATH", "")])}
    for round_ in range(args.rounds):
        for case in cases:
            if case == "full10000" and round_:
                continue  # one measurement is enough for the case shortlisting avoids
            completed = subprocess.run([sys.executable, __file__, *argv, "--case", case], capture_output=True,
                                       text=True, env=env, check=False)
            if completed.returncode != 0:
                runs[case].append({"error": completed.stderr.strip().splitlines()[-1][:300]})
            else:
                runs[case].append(json.loads(completed.stdout.strip().splitlines()[-1]))
            loads.append(f"after {case} {load()}")
    best = {}
    for case, results in runs.items():
        good = [r for r in results if "error" not in r]
        best[case] = ({**good[0], "seconds": min(r["seconds"] for r in good),
                       "peak_mib": max(r["peak_mib"] for r in good)} if good else results[0])
    return {"cases": best, "loads": loads, "args": vars(args)}


def rows(result: dict) -> list[tuple[str, str, str, str, str]]:
    """(section, measurement, value, ratio, notes) rows, as run_all.py's table."""
    cases, args = result["cases"], result["args"]
    out = []

    def value(case):
        c = cases[case]
        return "failed" if "error" in c else f"{c['seconds'] * 1e3:.0f} ms, peak +{c['peak_mib']:.0f} MiB"

    base = cases["full200"]
    for case in ("shortlist10000", "full10000"):
        if case not in cases:
            continue
        c = cases[case]
        if "error" in c or "error" in base:
            out.append(("(e) many classes", f"explain {case}", "failed", "-", c.get("error", base.get("error", ""))))
            continue
        time_ratio, memory_ratio = c["seconds"] / base["seconds"], c["peak_mib"] / max(base["peak_mib"], 1e-9)
        met = ""
        if case == "shortlist10000":
            met = ("; target <= 2x time and memory: "
                   + ("met" if time_ratio <= TARGET_EXPLAIN and memory_ratio <= TARGET_EXPLAIN else "NOT met"))
        out.append(("(e) many classes",
                    f"resnet50 {args['height']}x{args['width']} explain, C={c['classes']}"
                    + (f" shortlist={args['shortlist']}" if case.startswith("shortlist") else " full")
                    + " vs full C=200",
                    f"{value(case)} vs {value('full200')}",
                    f"time {time_ratio:.2f}x, memory {memory_ratio:.2f}x",
                    f"{c['decoded']} classes decoded with maps{met}"
                    + ("" if c.get("warm_up", True) else "; one run, no warm-up")))
    train_base, sampled = cases["train_full200"], cases["train_sampled10000"]
    if "error" in train_base or "error" in sampled:
        out.append(("(e) many classes", "training step", "failed", "-",
                    sampled.get("error", train_base.get("error", ""))))
    else:
        ratio = sampled["seconds"] / train_base["seconds"]
        out.append(("(e) many classes",
                    (f"resnet50 training step {args['train_size']}x{args['train_size']} batch {args['train_batch']}, "
                     f"C={sampled['classes']} --sampled-queries {args['sampled_queries']} vs full C=200"),
                    f"{value('train_sampled10000')} vs {value('train_full200')}",
                    f"time {ratio:.2f}x, memory {sampled['peak_mib'] / max(train_base['peak_mib'], 1e-9):.2f}x",
                    (f"forward + loss + backward + clip + AdamW, median of {args['train_steps']} after a warm-up; "
                     f"target <= {TARGET_TRAIN}x time: {'met' if ratio <= TARGET_TRAIN else 'NOT met'}")))
    return out


def main() -> None:
    args = parser().parse_args()
    if args.case:
        runner = _explain_case if args.case in EXPLAIN_CASES else _train_case
        print(json.dumps(runner(args.case, args)))
        return
    argv = quick_arguments(sys.argv[1:]) if args.quick else sys.argv[1:]
    result = measure_all(argv)
    for _section, measurement, value, ratio, notes in rows(result):
        print(f"{measurement}: {value} | {ratio} | {notes}")
    print("load average (1/5/15 min): " + "; ".join(result["loads"]))


if __name__ == "__main__":
    main()
