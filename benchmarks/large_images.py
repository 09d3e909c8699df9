"""Images too large to decode whole: a whole decode vs the reduced read, memory and time.

    python benchmarks/large_images.py [--height 9000] [--width 12000] [--budget-mib 256] [--quick]

Writes one RGB photo-like image (gradients, rings and noise) as a deflate-tiled TIFF, an
LZW-striped TIFF, a JPEG and a PNG, then reads each in a fresh process twice, side by side:
  whole    napari_intr.image_files.read_image with the default budget (the full-resolution array)
  reduced  napari_intr.large_images.read_within_budget with INTR_MAX_DECODE_BYTES = --budget-mib
Memory is the process's peak resident set above its size just before the read (VmHWM after
resetting it, Linux), so it counts Pillow's and the codecs' own buffers too. Prints a table and
the load average before and after; --json also writes the measurements.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

FORMATS = ("tiff-deflate-tiles", "tiff-lzw-strips", "jpeg", "png")

READ_SCRIPT = """
import json, sys, time
import numpy as np
import imagecodecs, tifffile, PIL.Image  # noqa: F401 - their code pages out of the measurement
from napari_intr import image_files, large_images
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
np.zeros(1)  # imports and the first allocation out of the measurement
open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident set (VmHWM)
before, start = rss("VmRSS:"), time.perf_counter()
if sys.argv[2] == "whole":
    pixels, factor = image_files.read_image(sys.argv[1]), 1
else:
    read = large_images.read_within_budget(sys.argv[1])
    pixels, factor = read.pixels, read.factor
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mib": (rss("VmHWM:") - before) / 2**20, "factor": factor,
                  "shape": list(pixels.shape)}))
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=9000)
    p.add_argument("--width", type=int, default=12000)
    p.add_argument("--budget-mib", type=float, default=256, help="INTR_MAX_DECODE_BYTES of the reduced reads")
    p.add_argument("--quick", action="store_true", help="a 600×800 image and a 2 MiB budget: checks that it runs")
    p.add_argument("--json", help="also write the measurements here")
    return p


def write_images(folder: Path, height: int, width: int) -> dict[str, Path]:
    import numpy as np
    import tifffile
    from PIL import Image
    rng = np.random.default_rng(0)
    pixels = np.empty((height, width, 3), np.uint8)
    x = np.arange(width, dtype=np.float32) / width
    for top in range(0, height, 512):  # in bands: the image itself is large
        y = (np.arange(top, min(top + 512, height), dtype=np.float32) / width)[:, None]
        rings = 0.5 + 0.5 * np.sin(25 * np.hypot(y - 0.4, x - 0.6))
        band = np.stack([np.broadcast_to(y, rings.shape), np.broadcast_to(x, rings.shape), rings], -1) * 230
        pixels[top:top + len(y)] = np.clip(band + rng.normal(0, 6, band.shape), 0, 255)
    paths = {name: folder / f"specimen-{name}.{'jpg' if name == 'jpeg' else name.split('-')[0]}" for name in FORMATS}
    tifffile.imwrite(paths["tiff-deflate-tiles"], pixels, compression="zlib", tile=(256, 256))
    tifffile.imwrite(paths["tiff-lzw-strips"], pixels, compression="lzw", predictor=True, rowsperstrip=16)
    Image.fromarray(pixels).save(paths["jpeg"], quality=90)
    Image.fromarray(pixels).save(paths["png"], compress_level=6)
    return paths


def measure(path: Path, how: str, budget: int | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if budget is not None:
        env["INTR_MAX_DECODE_BYTES"] = str(budget)
    done = subprocess.run([sys.executable, "-c", READ_SCRIPT, str(path), how], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    height, width, budget = (600, 800, 2 * 2**20) if args.quick else (args.height, args.width, int(args.budget_mib * 2**20))
    loads = [os.getloadavg()]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = write_images(Path(folder), height, width)
        for name, path in paths.items():
            results[name] = {"file_mib": path.stat().st_size / 2**20,
                             "whole": measure(path, "whole", None),
                             "reduced": measure(path, "reduced", budget)}
    loads.append(os.getloadavg())
    print(f"{height}×{width} RGB, reduced reads within {budget / 2**20:.0f} MiB; "
          f"load average before {loads[0][0]:.1f}, after {loads[1][0]:.1f} ({os.cpu_count()} cores, 1 thread)")
    print("| file | size | whole: time, peak | reduced: k, shape, time, peak | memory whole/reduced |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        whole, reduced = result["whole"], result["reduced"]
        if "error" in whole or "error" in reduced:
            print(f"| {name} | {result['file_mib']:.0f} MiB | {whole.get('error', '')} | {reduced.get('error', '')} | |")
            continue
        print(f"| {name} | {result['file_mib']:.0f} MiB | {whole['seconds']:.1f} s, {whole['peak_mib']:.0f} MiB | "
              f"{reduced['factor']}×, {reduced['shape'][0]}×{reduced['shape'][1]}, {reduced['seconds']:.1f} s, "
              f"{reduced['peak_mib']:.0f} MiB | {whole['peak_mib'] / max(reduced['peak_mib'], 1e-9):.1f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "loads": loads, "budget": budget,
                                               "size": [height, width]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
