"""`intr atlas` vs `intr explain` on the same folder, side by side in one run.

    python benchmarks/atlas_vs_explain.py [--per-class 20] [--size 128] [--repeats 3] [--resnet50]

Both run in this process, one after the other within every repeat (so load from other processes
hits them alike), on a fresh output folder each time (the atlas summarises every image again):

explain:        batch explain (napari_intr.collection.explain.explain_folder): encode + decode of all classes,
                predictions.csv and one TIFF of head maps per image.
atlas:          build_atlas with default pairs: encode once, decode all classes (true and predicted
                class's maps), one more decoder call for the 2 pair decodes and 2 × heads masked
                decodes per image, then the statistics, atlas.html, CSVs and montages.
atlas --pairs:  the same with the synthetic look-alike pairs named (images of classes outside
                the pairs get no pair decodes).

The bundled tiny model is the smallest case (a cheap encoder makes the atlas's extra decodes and
files weigh most); --resnet50 adds a randomly initialised resnet50 INTR (C=9) at 512×768 px,
one image per class.
Target: atlas / explain <= 1.3. Besides the wall-clock seconds, the CPU seconds of this process
(all its threads: the atlas writes its montage PNGs on a worker thread while it assembles the page).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from napari_intr import synth
from napari_intr.atlas import AtlasOptions, build_atlas
from napari_intr.collection.explain import explain_folder
from napari_intr.image_files import find_images
from napari_intr.loading import load_model
from napari_intr.model import IntrConfig, build_model


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def measure(model, name: str, data: Path, work: Path, repeats: int, pairs) -> dict:
    runs = {
        "explain": lambda r: explain_folder(model, [data], fresh(work / f"explain{r}"), model_name=name),
        "atlas": lambda r: build_atlas(model, name, data, fresh(work / f"atlas{r}"), AtlasOptions()),
        "atlas --pairs": lambda r: build_atlas(model, name, data, fresh(work / f"pairs{r}"),
                                               AtlasOptions(pairs=pairs)),
    }
    for run in runs.values():
        run("warm")  # first calls allocate and pick kernels
    times = {label: [] for label in runs}
    cpu = {label: [] for label in runs}
    for repeat in range(repeats):
        order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
        for label in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[label](repeat)
            times[label].append(time.perf_counter() - start)
            cpu[label].append(time.process_time() - start_cpu)  # all threads of this process
    return {label: (statistics.median(times[label]), statistics.median(cpu[label])) for label in runs}


def resize_collection(source: Path, target: Path, height: int, width: int) -> Path:
    for path in sorted(source.rglob("*.png")):
        relative = path.relative_to(source)
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.resize((width, height), Image.BILINEAR).save(destination)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fair on a shared CPU)")
    parser.add_argument("--resnet50", action="store_true", help="also a random-weight resnet50 INTR at 512×768")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="atlas-bench-"))
    try:
        data = work / "synth"
        synth.write_collection(data, per_class=args.per_class, size=args.size, seed=1)
        pairs = [tuple(pair) for pair in synth.look_alike_pairs()]
        images = args.per_class * len(synth.SPECIES)
        cases = [("bundled tiny", load_model("sample", device="cpu"), "sample", data,
                  f"{args.size}×{args.size}")]
        if args.resnet50:
            torch.manual_seed(0)
            names = [s.name for s in synth.SPECIES]
            model = build_model(IntrConfig(num_classes=len(names), short_side=512, max_side=768), names).eval()
            subset = work / "synth-r50"
            for name in names:  # 1 image per class keeps a CPU run short
                for path in sorted((data / name).glob("*.png"))[:1]:
                    (subset / name).mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, subset / name / path.name)
            cases.append(("resnet50 (random)", model, "resnet50-random",
                          resize_collection(subset, work / "r50", 512, 768), "512×768"))
        rows = []
        for label, model, name, folder, size in cases:
            count = len(find_images(folder))  # hidden .masks and .specimens are not images to explain
            times = measure(model, name, folder, work / label.replace(" ", "_"), args.repeats, pairs)
            for run, (seconds, cpu_seconds) in times.items():
                rows.append((label, size, count, run, seconds, seconds / times["explain"][0], cpu_seconds,
                             cpu_seconds / times["explain"][1]))
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
          f"torch {torch.__version__}, {args.threads} torch thread(s); {images} synthetic images")
    print(f"load average (1/5/15 min) before: {' / '.join(f'{v:.2f}' for v in load_before)}, "
          f"after: {' / '.join(f'{v:.2f}' for v in load_after)}")
    print("| model | image size | images | run | seconds (median of "
          f"{args.repeats}) | ms / image | ratio to explain | CPU seconds | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, size, count, run, seconds, ratio, cpu_seconds, cpu_ratio in rows:
        print(f"| {label} | {size} | {count} | {run} | {seconds:.2f} | {1000 * seconds / count:.1f} | {ratio:.2f} "
              f"| {cpu_seconds:.2f} | {cpu_ratio:.2f} |")


if __name__ == "__main__":
    main()
