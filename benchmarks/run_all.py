"""The benchmark suite: every ratio of issue 7 measured side by side in one run, one table.

    python benchmarks/run_all.py [--quick] [--device cpu|cuda] [--skip-napari] [--skip-inference] [--output PATH]

(a) full explain vs decoder-only re-runs (class switch, candidate set), resnet50 at 800x1200
    with C=200 and the tiny model at 128x192 with C=10 (explain_vs_switch.py);
(b) explaining all C classes: INTR (one forward with attention) vs a plain forward without
    attention weights vs Grad-CAM (captum LayerGradCam on model.backbone[0].body, one forward +
    backward per class) vs RISE (N random masks, batched), same model and image as (a);
(c) our training step vs the plain fp32 reference step (train_throughput.py, subprocesses);
(e) past the class limit: resnet50 explain at C = 10 000 with shortlist=64 and the full C = 10 000
    decode vs the full C = 200 explain; the training step at C = 10 000 with --sampled-queries 256
    vs C = 200 (many_classes.py, subprocesses);
(f) the inference path (folded batch norm, channels-last, bf16 where native, read-ahead, thread
    policy) against today's path, quiet and under one busy process per core (inference_speed.py);
(d) napari event-loop stalls (longest gap of a 10 ms QTimer) while the Explorer explains the
    bundled specimen (explain_event_loop.py) and while the Fine-tune widget trains
    (finetune_event_loop.py), each in a subprocess under $DISPLAY, else under `xvfb-run -a`.

Prints one table and writes it, with a description of the machine and its load, into
benchmarks/RESULTS.md (one block per device: a cuda run keeps the cpu block and vice versa).
Models have random weights: timing does not depend on what they learned. Rows that measure a
few classes, masks or batches and scale up say "extrapolated" in their notes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RESULTS = HERE / "RESULTS.md"
TARGET_SWITCH = 20.0  # full explain / class switch, resnet50
TARGET_STALL_MS = 100.0
RISE_MASKS = 500
COLUMNS = ("section", "measurement", "value(s)", "ratio", "target / notes")


# ---------------------------------------------------------------- table and record (no torch)

def row(section: str, measurement: str, value: str, ratio: str = "", notes: str = "") -> dict:
    return dict(zip(COLUMNS, (section, measurement, value, ratio, notes)))


def format_table(rows: list[dict]) -> str:
    """A Markdown table, padded so that it also reads as plain text."""
    cells = [list(COLUMNS)] + [[str(r.get(c, "")).replace("|", "/") for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def block(machine: dict, rows: list[dict], notes: list[str], label: str) -> str:
    lines = [f"<!-- run:{label} -->", f"## {label} run", "", "### Machine", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    lines += ["", "### Results", "", format_table(rows), ""]
    if notes:
        lines += ["### Notes", ""] + [f"- {note}" for note in notes] + [""]
    lines.append(f"<!-- end:{label} -->")
    return "\n".join(lines)


HEADER = """# Benchmark results

Written by `python benchmarks/run_all.py` (see benchmarks/README.md); one block per device, each
replaced by the next run on that device. Every number was measured in the run named in its block;
rows marked "extrapolated" scale a few measured classes, masks or batches up linearly.
"""


def write_results(path: Path, machine: dict, rows: list[dict], notes: list[str], label: str) -> str:
    """Write (or replace) this label's block in `path`, keeping other labels' blocks."""
    path = Path(path)
    new = block(machine, rows, notes, label)
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    start, end = f"<!-- run:{label} -->", f"<!-- end:{label} -->"
    if start in text and end in text:
        text = text[:text.index(start)] + new + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    path.write_text(text, encoding="utf-8")
    return text


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine_description(device: str, argv: list[str]) -> dict:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")))
        ram = f"{kib / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    description = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join(["python benchmarks/run_all.py", *argv]),
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "RAM": ram,
        "OS": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "torch": f"{torch.__version__}, {torch.get_num_threads()} intra-op threads "
                 "(torch.get_num_threads())",
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        description["GPU"] = torch.cuda.get_device_name()
    return description


# ---------------------------------------------------------------- (a) and (b)

def synchronize(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(function, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def rise_batch_function(model, inputs, num_classes: int, batch: int, device, cells: int = 7, p: float = 0.5):
    """One batch of RISE (Petsiuk et al. 2018): `batch` random cells x cells masks, upsampled
    with a random shift, the masked images through a plain forward, the class scores accumulated
    into all C saliency maps at input resolution."""
    import torch
    height, width = inputs.shape[-2:]
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    saliency = torch.zeros(num_classes, height * width, device=device)

    def one_batch():
        grid = (torch.rand(batch, 1, cells, cells, device=device) < p).float()
        up = torch.nn.functional.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w),
                                             mode="bilinear", align_corners=False)
        dy, dx = int(torch.randint(0, cell_h, ())), int(torch.randint(0, cell_w, ()))
        masks = up[:, :, dy:dy + height, dx:dx + width]
        with torch.inference_mode():
            scores = model(inputs * masks, return_attention=False).logits.softmax(-1)  # [b, C]
            saliency.add_(scores.T @ masks.reshape(batch, -1))
        return saliency

    return one_batch


def explain_and_alternatives(label, config, height, width, args, device, quick) -> tuple[list, list]:
    """(a) and (b) for one model: rows and notes."""
    import torch
    from captum.attr import LayerGradCam

    from explain_vs_switch import median_seconds, prepare

    repeats = (1 if quick else args.repeats) if label != "tiny" else (3 if quick else max(args.repeats, 10))
    functions, context = prepare(config, height, width, repeats, device)
    model, image = context["model"], context["image"]
    inputs = model.preprocess(image)

    def plain():
        with torch.inference_mode():
            return model(model.preprocess(image), return_attention=False).logits.float().cpu().numpy()

    functions["plain"] = plain
    t = median_seconds(functions, repeats, device)
    C = config.num_classes
    size = f"{height}x{width}, C={C}"
    input_size = "x".join(map(str, context["encoded"].input_shape))
    grid = "x".join(map(str, context["encoded"].encoded.grid))
    full = t["full"]
    ms = lambda s: f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.1f} s"  # noqa: E731
    med = f"median of {repeats} interleaved repeats"
    def target(switch: float) -> str:
        if label != "resnet50":
            return "no target for the tiny model"
        return f"target >= {TARGET_SWITCH:.0f}x: {'met' if full / switch >= TARGET_SWITCH else 'NOT met'}"

    rows = [
        row("(a) explain", f"{label} {size}: full explain", ms(full), "1.0x (reference)",
            f"preprocess + backbone + encoder + decoder with attention; input {input_size}, grid {grid}; {med}"),
        row("(a) explain", f"{label}: class switch (decoder only, all C)", ms(t["class"]),
            f"full/switch {full / t['class']:.1f}x", target(t["class"])),
        row("(a) explain", f"{label}: candidate switch (2-5 classes, drop)", ms(t["candidates"]),
            f"full/switch {full / t['candidates']:.1f}x", target(t["candidates"])),
        row("(a) explain", f"{label}: show another decoded class (no model)", ms(t["show"]),
            f"full/show {full / t['show']:.0f}x", "head maps + mean map from the Explanation at hand"),
        row("(b) all C classes", f"{label} {size}: INTR, one forward with attention", ms(full),
            "1.0x (reference)", "= the full explain of (a): logits and attention maps of all C classes"),
        row("(b) all C classes", f"{label}: plain forward, return_attention=False", ms(t["plain"]),
            f"INTR/plain {full / t['plain']:.2f}x", "logits only, no attention weights; " + med),
    ]

    # Grad-CAM: captum LayerGradCam, one forward + backward per target class
    gradcam = LayerGradCam(lambda x: model(x, return_attention=False).logits, model.backbone[0].body)
    measured_classes = C if label == "tiny" else (1 if quick else args.gradcam_classes)
    measured_classes = min(measured_classes, C)
    warm = not (quick and label != "tiny")
    if warm:
        gradcam.attribute(inputs, target=0)
    times = [timed(lambda c=c: gradcam.attribute(inputs, target=c).cpu(), device) for c in range(measured_classes)]
    per_class = statistics.median(times)
    total = sum(times) if measured_classes == C else per_class * C
    how = (f"all {C} classes measured" if measured_classes == C else
           f"EXTRAPOLATED: median of {measured_classes} class(es) ({ms(per_class)} each) x {C}")
    rows.append(row("(b) all C classes", f"{label}: Grad-CAM, all {C} classes", ms(total),
                    f"GradCAM/INTR {total / full:.0f}x",
                    f"captum LayerGradCam on backbone[0].body, 1 forward + backward per class; {how}"))

    # RISE: N random masks, batched; every forward scores all C classes at once
    batch = 50 if label == "tiny" else (16 if device.type == "cuda" else 4)
    batches = math.ceil(RISE_MASKS / batch)
    measured_batches = batches if label == "tiny" else (1 if quick else args.rise_batches)
    measured_batches = min(measured_batches, batches)
    one_batch = rise_batch_function(model, inputs, C, batch, device)
    if warm:
        one_batch()
    times = [timed(one_batch, device) for _ in range(measured_batches)]
    total = sum(times) if measured_batches == batches else statistics.median(times) * batches
    how = (f"all {batches} batches measured" if measured_batches == batches else
           f"EXTRAPOLATED: median of {measured_batches} batch(es) ({ms(statistics.median(times))} each) "
           f"x {batches}")
    rows.append(row("(b) all C classes", f"{label}: RISE, {RISE_MASKS} masks, all {C} classes", ms(total),
                    f"RISE/INTR {total / full:.0f}x",
                    f"7x7 masks p=0.5, batches of {batch}, plain forward, saliency at input size; {how}"))
    return rows, []


# ---------------------------------------------------------------- (c)

def training_rows(args, quick) -> list[dict]:
    from train_throughput import compare
    device = args.device
    cases = [("tiny", ["--backbone", "tiny", "--image-size", "128", "--batch-size", "16", "--classes", "200",
                       "--steps", "3" if quick else "10", "--warmup", "1" if quick else "2",
                       "--rounds", "1" if quick else "2"])]
    if not quick:
        cases.append(("resnet50", ["--backbone", "resnet50", "--image-size", "384", "--batch-size", "2",
                                   "--classes", "200", "--steps", "2", "--warmup", "1", "--rounds", "1"]))
    rows = []
    if device == "cuda":
        rows += paper_scale_rows(quick)
    for label, argv in cases:
        options = compare([*argv, "--device", device])
        ours, reference, a = options["ours"], options["reference"], options["args"]
        setting = (f"{a.image_size}x{a.image_size}, batch {a.batch_size}, C={a.classes}, {a.steps} timed steps, "
                   f"best of {a.rounds} round(s), fresh subprocess each")
        memory = "peak CUDA memory" if ours["device"].startswith("cuda") else "peak RSS growth"
        rows.append(row("(c) training", f"{label}: images/s, ours vs fp32 reference",
                        f"{ours['images_per_second']:.1f} vs {reference['images_per_second']:.1f}",
                        f"ours/ref {ours['images_per_second'] / reference['images_per_second']:.2f}x",
                        f"forward + CE + backward + clip + AdamW; {setting}"))
        ratio = (f"ours/ref {ours['peak_mib'] / reference['peak_mib']:.2f}x" if reference["peak_mib"] > 0
                 else "n/a (no growth over the start-up peak)")
        rows.append(row("(c) training", f"{label}: {memory} (MiB), ours vs reference",
                        f"{ours['peak_mib']:.0f} vs {reference['peak_mib']:.0f}", ratio,
                        "reference materialises the attention weights (return_attention=True)"))
    return rows


def paper_scale_rows(quick: bool) -> list[dict]:
    """(c) at paper scale on CUDA: resnet50, C=200, batch 8, JPEGs via the DataLoader; the official
    recipe's loop vs intr train's own loop, ours with every lever, and ours without each lever
    (paper_scale.py). The target is the issue's for intr train; "ours" shows what the levers could add."""
    import paper_scale
    argv = ["--device", "cuda", "--images", "48" if quick else "96", "--steps", "5" if quick else "20",
            "--warmup", "3" if quick else "5"]
    rows = []
    for resize in ("multiscale", "fixed"):
        result = paper_scale.compare([*argv, "--resize", resize])
        results, a = result["results"], result["args"]
        reference = results["reference"]
        setting = (f"resnet50, batch {a.batch_size}, C={a.classes}, {resize} resize, JPEG files via DataLoader "
                   f"({a.workers} workers), {a.steps} timed steps")
        for name, r in results.items():
            speed = r["images_per_second"] / reference["images_per_second"]
            memory = r["peak_mib"] / reference["peak_mib"] if reference["peak_mib"] else float("nan")
            target = ""
            if name in ("intr train", "ours"):
                met = speed >= 2 and memory <= 0.5
                target = f"; target >= 2x images/s at <= 0.5x memory: {'met' if met else 'NOT met'}"
            rows.append(row("(c) training, paper scale", f"{resize}: {name}",
                            f"{r['images_per_second']:.1f} img/s, {r['peak_mib']:.0f} MiB",
                            f"{speed:.2f}x speed, {memory:.2f}x memory", setting + target))
    return rows


# ---------------------------------------------------------------- (e)

def many_classes_rows(args) -> list[dict]:
    """Shortlist explain and sampled-query training at C = 10 000 vs C = 200 (many_classes.py)."""
    import many_classes
    argv = ["--device", args.device, "--repeats", "1" if args.quick else "2"]
    if args.quick:
        argv = many_classes.quick_arguments(argv)
    result = many_classes.measure_all(argv)
    return [row(*cells) for cells in many_classes.rows(result)]


# ---------------------------------------------------------------- (f)

def inference_rows(args) -> tuple[list[dict], list[str]]:
    """Issue 24: the inference path against today's, quiet and under one busy process per core
    (inference_speed.py, subprocesses)."""
    import inference_speed
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            return [row("(f) inference path", "cuda", "not measured", "-", "no CUDA device")], []
    options = argparse.Namespace(images=2 if args.quick else 6, repeats=1 if args.quick else 3, device=args.device,
                                 only=None, timeout=1800, conditions=["quiet", "loaded"],
                                 event_loop=0 if args.skip_napari else (5 if args.quick else 10))
    results = inference_speed.measure(options)
    return [row(*cells) for cells in inference_speed.rows(results)], inference_speed.notes(results)


# ---------------------------------------------------------------- (d)

def display_prefix() -> tuple[list[str] | None, str]:
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return [], f"display {os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')}"
    if shutil.which("xvfb-run"):
        return ["xvfb-run", "-a"], "no display: under xvfb-run -a"
    return None, "no display and no xvfb-run"


def run_json(command: list[str], timeout: float) -> dict:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr[-1500:]}")
    return json.loads(lines[-1])


def stall_row(measurement: str, idle: dict, busy: dict, busy_name: str, extra: str) -> dict:
    met = "met" if busy["max"] < TARGET_STALL_MS else "NOT met"
    return row("(d) napari event loop", measurement,
               f"max {busy['max']:.0f} ms (p99 {busy['p99']:.0f}, median {busy['median']:.1f}); "
               f"idle max {idle['max']:.0f} ms",
               f"{busy_name}/idle max {busy['max'] / idle['max']:.1f}x",
               f"target max < {TARGET_STALL_MS:.0f} ms: {met}; {extra}")


def napari_rows(quick) -> tuple[list[dict], list[str]]:
    prefix, how = display_prefix()
    if prefix is None:
        return [row("(d) napari event loop", "skipped", "-", "-", how)], [f"(d) skipped: {how}"]
    seconds = 5 if quick else 15
    rows, notes = [], [f"(d) napari subprocesses: {how}; 10 ms QTimer, {seconds} s idle then {seconds} s busy"]
    python = [*prefix, sys.executable]
    try:
        e = run_json([*python, str(HERE / "explain_event_loop.py"), "--seconds", str(seconds), "--json"],
                     timeout=300)
        rows.append(stall_row("during Explorer Explain (thread worker)", e["idle"], e["explaining"], "explain",
                              f"{e['explains']} explains of the bundled specimen in {seconds} s, model "
                              f"'{e['model']}' on {e['device']}, input {'x'.join(map(str, e['input']))}, "
                              f"C={e['classes']}"))
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        rows.append(row("(d) napari event loop", "during Explorer Explain", "failed", "-", str(error)[:200]))
    try:
        f = run_json([*python, str(HERE / "finetune_event_loop.py"), "--seconds", str(seconds), "--json"],
                     timeout=300)
        rows.append(stall_row("during Fine-tune (training subprocess)", f["idle"], f["training"], "train",
                              f"{f['steps']} step / {f['epochs']} epoch events in {seconds} s, "
                              f"synthetic 64 px collection, batch 8, cpu child"))
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        rows.append(row("(d) napari event loop", "during Fine-tune", "failed", "-", str(error)[:200]))
    return rows, notes


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, classes and batches")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--skip-napari", action="store_true", help="leave out (d)")
    parser.add_argument("--skip-many-classes", action="store_true", help="leave out (e)")
    parser.add_argument("--skip-inference", action="store_true", help="leave out (f)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats in (a)/(b)")
    parser.add_argument("--gradcam-classes", type=int, default=2, help="classes timed for resnet50 Grad-CAM")
    parser.add_argument("--rise-batches", type=int, default=2, help="batches timed for resnet50 RISE")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    from napari_intr.devices import resolve_device
    from napari_intr.model import IntrConfig
    device = resolve_device(args.device)
    started = time.perf_counter()
    machine = machine_description(str(device), argv)
    loads = [f"start {load()}"]
    print(f"{machine['CPU']}; torch {torch.__version__}, {torch.get_num_threads()} threads; device {device}; "
          f"load {load()}", flush=True)

    rows, notes = [], []
    for label, config, height, width in (("resnet50", IntrConfig(num_classes=200), 800, 1200),
                                         ("tiny", IntrConfig.tiny(10), 128, 192)):
        print(f"(a)+(b) {label} ...", flush=True)
        new_rows, new_notes = explain_and_alternatives(label, config, height, width, args, device, args.quick)
        rows += new_rows
        notes += new_notes
        loads.append(f"after (a)+(b) {label} {load()}")
    print("(c) training ...", flush=True)
    try:
        rows += training_rows(args, args.quick)
    except RuntimeError as error:
        rows.append(row("(c) training", "failed", "-", "-", str(error)[:200]))
    loads.append(f"after (c) {load()}")
    if args.skip_many_classes:
        rows.append(row("(e) many classes", "skipped", "-", "-", "--skip-many-classes"))
    else:
        print("(e) many classes ...", flush=True)
        rows += many_classes_rows(args)
        loads.append(f"after (e) {load()}")
    if args.skip_inference:
        rows.append(row("(f) inference path", "skipped", "-", "-", "--skip-inference"))
    else:
        print("(f) inference path ...", flush=True)
        new_rows, new_notes = inference_rows(args)
        rows += new_rows
        notes += new_notes
        loads.append(f"after (f) {load()}")
    if args.skip_napari:
        rows.append(row("(d) napari event loop", "skipped", "-", "-", "--skip-napari"))
    else:
        print("(d) napari ...", flush=True)
        new_rows, new_notes = napari_rows(args.quick)
        rows += new_rows
        notes += new_notes
        loads.append(f"after (d) {load()}")

    machine["load average (1/5/15 min)"] = "; ".join(loads)
    machine["wall time"] = f"{time.perf_counter() - started:.0f} s" + (" (--quick)" if args.quick else "")
    notes += [
        "Random weights throughout: timing does not depend on what a model learned.",
        "(a)/(b): full explain, class switch, candidate switch, show and plain forward run in turn within "
        "every repeat after one warm-up each, so other load affects them alike; Grad-CAM and RISE are "
        "timed right after on the same model and image.",
        "On a 2-core CPU torch's OpenMP threads slow down sharply when another process competes: "
        "read the ratios together with the load averages above.",
    ]
    label = device.type + (" quick" if args.quick else "")
    print()
    print(format_table(rows))
    write_results(args.output, machine, rows, notes, label)
    print(f"\nrecorded in {args.output} (block '{label}'), {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
