"""Issue 24: the inference path against today's default path, side by side in one run, quiet
and under one competing busy process per core.

    python benchmarks/inference_speed.py [--images 6] [--repeats 3] [--device cpu|cuda] [--event-loop 10] [--json]

today: the model as it was (batch norm unfolded, NCHW, fp32), images read one after the other,
       torch's default threads and OpenMP waiting (no OMP_WAIT_POLICY / KMP_BLOCKTIME);
new:   load_model's inference path (folded, channels-last, bf16 where native), the next image
       read while one is explained, threads from napari_intr.threads and passive OpenMP waiting.

Each measurement runs in its own child process (the OpenMP policy is fixed when torch loads),
the two paths one after the other within each condition:
(1) `intr explain` on a folder (explain_folder, as the command runs it): images/s, resnet50
    INTR with C = 200 and the tiny bundled model, on JPEGs of 800×1200 px (800 px short side);
(2) the Explorer: a full explain (encode + all-class decode) against the all-class re-decode
    of the cached encoding, resnet50 C = 200 at 800×1200, torch threads as in napari (a core
    left for the GUI thread; all cores for `today`, as before).
"loaded": one `while True: pass` process per available core runs beside the child. Random
weights (timing does not depend on them). The machine's load average is recorded: on a shared
machine "quiet" means "without our competitors", not idle.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATHS = ("today", "new")
TARGETS = {"folder speed-up": 2.5, "re-decode under load": 15.0, "loaded/quiet": 2.0}


def make_folder(folder: Path, count: int, height: int = 800, width: int = 1200) -> None:
    """Smooth synthetic specimens (blobs on a gradient) as JPEGs: decoding them costs what a photo's does."""
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    for index in range(count):
        image = np.stack([rows / height * 120 + 60 * c for c in range(3)], axis=-1)
        for _ in range(6):
            y, x, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(40, 200)
            image[(rows - y) ** 2 + (cols - x) ** 2 < r ** 2] = rng.uniform(0, 255, 3)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"specimen_{index:03d}.jpg", quality=90)


# ---------------------------------------------------------------- child: one measurement

def child(args) -> dict:
    import napari_intr  # noqa: F401  (sets passive OpenMP waiting, as the plugin and `intr` do)
    if args.path == "today":
        from napari_intr.threads import OPENMP_WAITING
        for name in OPENMP_WAITING:
            os.environ.pop(name, None)
    import torch

    from napari_intr.collection import explain as batch
    from napari_intr.devices import resolve_device
    from napari_intr.loading import load_model
    from napari_intr.model import IntrConfig, build_model
    from napari_intr.threads import use_inference_threads
    device = resolve_device(args.device)
    if args.path == "new":
        use_inference_threads(leave_for_gui=args.task == "explorer")
    else:
        batch.ReadAhead = lambda paths, read: read  # today's reader: one image after the other
    if args.model == "tiny":
        model = load_model("sample", device=device)
    else:
        torch.manual_seed(0)
        from napari_intr.inference import prepare_for_inference
        model = prepare_for_inference(build_model(IntrConfig(num_classes=200)).to(device))
    if args.path == "today":
        model.inference = None
    result = {"path": args.path, "model": args.model, "task": args.task, "threads": torch.get_num_threads(),
              "precision": "fp32 (unfolded)" if model.inference is None else model.inference.precision,
              "wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}
    if args.task == "folder":
        files = sorted(Path(args.folder).glob("*.jpg"))
        with tempfile.TemporaryDirectory() as out:
            batch.explain_folder(model, files[:1], Path(out) / "warm")  # warm-up (and the first fold)
            start = time.perf_counter()
            summary = batch.explain_folder(model, files, Path(out) / "run")
            seconds = time.perf_counter() - start
        return {**result, "images": summary["done"], "images_per_second": summary["done"] / seconds}
    import numpy as np

    from napari_intr.explanation import Explainer
    explainer = Explainer(model, "benchmark")
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(sorted(Path(args.folder).glob("*.jpg"))[0]))
    # the Explorer's decode (widgets/workers/jobs.py explain_job) computes the maps and measures the
    # heads' evidence of the layer it shows; today's did both at every decoder layer (`decode`'s default)
    shown = None if args.path == "today" else [-1]
    encoded = explainer.encode(image)
    explainer.decode(encoded, layers=shown, evidence_layers=shown)
    full, switch, every_maps, every = [], [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        explainer.decode(explainer.encode(image), layers=shown, evidence_layers=shown)
        full.append(time.perf_counter() - start)
        start = time.perf_counter()
        explainer.decode(encoded, layers=shown, evidence_layers=shown)
        switch.append(time.perf_counter() - start)
        if shown is not None:  # the same decode as in issue 24 session 8's first part (every layer's maps)
            start = time.perf_counter()
            explainer.decode(encoded, evidence_layers=shown)
            every_maps.append(time.perf_counter() - start)
            start = time.perf_counter()  # and as before session 8 (every layer's maps and evidence)
            explainer.decode(encoded)
            every.append(time.perf_counter() - start)
    return {**result, "full_seconds": statistics.median(full), "decode_seconds": statistics.median(switch),
            "layers": "every layer" if shown is None else "the layer shown",
            **({"decode_every_layer_maps_seconds": statistics.median(every_maps),
                "decode_every_layer_seconds": statistics.median(every)} if every else {})}


# ---------------------------------------------------------------- parent: the side-by-side run

def run_child(argv: list[str], timeout: float) -> dict:
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *argv],
                               capture_output=True, text=True, timeout=timeout, env=_child_environment())
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"child {' '.join(argv)} failed ({completed.returncode}):\n{completed.stderr[-1500:]}")
    return json.loads(lines[-1])


def _child_environment() -> dict:
    """The parent's environment without thread settings: each path chooses its own."""
    from napari_intr.threads import OPENMP_WAITING, THREAD_VARIABLES
    return {k: v for k, v in os.environ.items() if k not in (*THREAD_VARIABLES, *OPENMP_WAITING)}


class Competitors:
    """One busy process per available core, for the "loaded" condition."""

    def __init__(self, count: int):
        self.count, self.processes = count, []

    def __enter__(self):
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.terminate()
            process.wait()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def measure(args) -> dict:
    from napari_intr.threads import available_cores
    cores = available_cores()
    results = {"cores": cores, "device": args.device, "loads": [], "runs": []}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        make_folder(folder, args.images)
        common = ["--folder", str(folder), "--device", args.device, "--repeats", str(args.repeats)]
        for condition in args.conditions:
            with Competitors(cores if condition == "loaded" else 0):
                results["loads"].append(f"{condition} start {load()}")
                for task, model in (("folder", "resnet50"), ("folder", "tiny"), ("explorer", "resnet50")):
                    if (args.only and model != args.only) or task not in args.tasks:
                        continue
                    for path in PATHS:
                        run = run_child([*common, "--task", task, "--model", model, "--path", path],
                                        timeout=args.timeout)
                        run["condition"] = condition
                        results["runs"].append(run)
                        print(json.dumps(run), flush=True)
                if args.event_loop:
                    results.setdefault("event_loop", {})[condition] = event_loop(args.event_loop)
                results["loads"].append(f"{condition} end {load()}")
    return results


def event_loop(seconds: float) -> dict:
    """explain_event_loop.py (the Explorer explaining the bundled specimen in napari) in a child
    that loads its model as the plugin does (threads: a core left for the GUI thread)."""
    from run_all import display_prefix, run_json
    prefix, how = display_prefix()
    if prefix is None:
        return {"skipped": how}
    result = run_json([*prefix, sys.executable, str(HERE / "explain_event_loop.py"), "--seconds", str(seconds),
                       "--json"], timeout=600)
    return {"max_ms": result["explaining"]["max"], "p99_ms": result["explaining"]["p99"],
            "idle_max_ms": result["idle"]["max"], "explains": result["explains"]}


def rows(results: dict) -> list[tuple[str, str, str, str, str]]:
    """(section, measurement, value(s), ratio, target / notes), as run_all.py's table has them."""
    runs = {(r["condition"], r["task"], r["model"], r["path"]): r for r in results["runs"]}
    section, out = "(f) inference path", []
    for condition in ("quiet", "loaded"):
        for model in ("resnet50", "tiny"):
            today, new = runs.get((condition, "folder", model, "today")), runs.get((condition, "folder", model, "new"))
            if today and new:
                gain = new["images_per_second"] / today["images_per_second"]
                target = ("target >= 2.5x: " + ("met" if gain >= 2.5 else "NOT met")) if model == "resnet50" else ""
                out.append((section, f"intr explain folder, {model}, {condition}: images/s today -> new",
                            f"{today['images_per_second']:.3f} -> {new['images_per_second']:.3f}", f"{gain:.2f}x",
                            f"{new['images']} images, {new['precision']}; {target}"))
        for path in PATHS:
            r = runs.get((condition, "explorer", "resnet50", path))
            if r:
                ratio = r["full_seconds"] / r["decode_seconds"]
                target = ("target >= 15x: " + ("met" if ratio >= 15 else "NOT met")
                          if condition == "loaded" and path == "new" else "")
                out.append((section, f"Explorer resnet50 C=200, {path}, {condition}: full explain / all-class "
                            "re-decode", f"{r['full_seconds']:.2f} s / {r['decode_seconds']:.3f} s", f"{ratio:.1f}x",
                            f"{r['threads']} threads, {r['precision']}"
                            + (f", maps and evidence of {r['layers']}" if "layers" in r else "") + f"; {target}"))
                for key, what in (("decode_every_layer_maps_seconds", "every layer's maps, the shown layer's "
                                   "evidence (session 8, first part)"),
                                  ("decode_every_layer_seconds", "every layer's maps and evidence (before session 8)")):
                    if key in r:
                        out.append((section, f"Explorer resnet50 C=200, {path}, {condition}: the re-decode with {what}",
                                    f"{r[key]:.3f} s", f"{r[key] / r['decode_seconds']:.2f}x slower", "same child process"))
    for condition, stalls in results.get("event_loop", {}).items():
        if "skipped" in stalls:
            out.append((section, f"napari event loop while the Explorer explains, {condition}", "skipped", "-",
                        stalls["skipped"]))
            continue
        out.append((section, f"napari event loop while the Explorer explains, {condition}",
                    f"max {stalls['max_ms']:.0f} ms (p99 {stalls['p99_ms']:.0f}); idle max {stalls['idle_max_ms']:.0f} ms",
                    "", f"{stalls['explains']} explains of the bundled specimen; target max < 100 ms: "
                    + ("met" if stalls["max_ms"] < 100 else "NOT met")))
    for model in ("resnet50", "tiny"):
        quiet, loaded = runs.get(("quiet", "folder", model, "new")), runs.get(("loaded", "folder", model, "new"))
        if quiet and loaded:
            loss = quiet["images_per_second"] / loaded["images_per_second"]
            out.append((section, f"intr explain folder, {model}, new: quiet / loaded images/s",
                        f"{quiet['images_per_second']:.3f} / {loaded['images_per_second']:.3f}", f"{loss:.2f}x",
                        "target <= 2x: " + ("met" if loss <= 2 else "NOT met")))
    return out


def notes(results: dict) -> list[str]:
    settings = sorted({f"{r['path']}: {r['threads']} threads ({r['task']}), OMP_WAIT_POLICY {r['wait_policy']}"
                       for r in results["runs"]})
    return [f"(f) {results['cores']} available cores, device {results['device']}, 800x1200 px JPEGs; "
            "loads (1/5/15 min): " + "; ".join(results["loads"]), "(f) settings: " + "; ".join(settings)]


def table(results: dict) -> str:
    lines = ["| measurement | value(s) | ratio | target / notes |", "|---|---|---:|---|"]
    lines += [f"| {m} | {v} | {r} | {n} |" for _, m, v, r, n in rows(results)]
    return "\n".join([*lines, "", *notes(results)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="images in the folder (the issue's is 200)")
    parser.add_argument("--repeats", type=int, default=3, help="Explorer repeats (median)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--only", choices=("resnet50", "tiny"), help="one model only")
    parser.add_argument("--tasks", nargs="+", choices=("folder", "explorer"), default=["folder", "explorer"])
    parser.add_argument("--conditions", nargs="+", choices=("quiet", "loaded"), default=["quiet", "loaded"])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child")
    parser.add_argument("--event-loop", type=float, default=0, metavar="SECONDS",
                        help="also measure napari's event loop while the Explorer explains, quiet and loaded, "
                             "for this many seconds each (explain_event_loop.py; needs a display or xvfb-run)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=("folder", "explorer"), help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=("resnet50", "tiny"), help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("GPU: not measured (no CUDA device here)")
            return
    results = measure(args)
    print(json.dumps(results) if args.json else table(results))


if __name__ == "__main__":
    main()
