"""Explain with attention maps vs a plain forward, before and after "compute only the shown maps".

    python benchmarks/shown_maps.py [--device cpu|cuda] [--classes 200] [--repeats 3] [--quick]

One process, one model (resnet50 INTR, random weights, C = --classes, an 800x1200 photo); the
cases take turns within every repeat, so that they share the machine's load:
  plain          model(inputs, return_attention=False): logits only, fused attention everywhere
  explain_all    Explainer.explain with every decoder layer's maps (what explain did before:
                 all layers' maps of every class materialised and copied to the host)
  explain_shown  Explainer.explain(layers=[-1]): the one layer shown or saved (what `intr explain`
                 and the atlas ask for now)
and the decoder alone on the cached encoding (no maps / every layer / the last layer), which is
what a class or layer switch costs. Each time includes preprocessing and the copy to numpy.
GPU target (issue 14): explain with maps <= 1.2x a plain forward at C = 200.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

TARGET = 1.2
CASES = ("plain", "explain_all", "explain_shown", "decode_plain", "decode_all", "decode_shown")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--decode-repeats", type=int, default=5, help="decoder-only timings per repeat")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    p.add_argument("--json", help="also write the measurements here")
    return p


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def measure(args) -> dict:
    import numpy as np
    import torch

    from napari_intr.devices import resolve_device
    from napari_intr.explanation import Explainer
    from napari_intr.model import IntrConfig, build_model

    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = IntrConfig.tiny(args.classes) if args.quick else IntrConfig(num_classes=args.classes)
    model = build_model(config).to(device).eval()
    explainer = Explainer(model, "benchmark")
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    encoded = explainer.encode(image)

    def plain():
        with torch.inference_mode():
            return model(model.preprocess(image), return_attention=False).logits.cpu().numpy()

    def decode(layers):
        def run():
            with torch.inference_mode():
                output = model.decode(encoded.encoded, return_attention=layers != "none",
                                      attention_layers=None if layers in ("all", "none") else layers)
                return output.logits.cpu().numpy(), None if output.attention is None else output.attention.cpu().numpy()
        return run

    work = {"plain": plain, "explain_all": lambda: explainer.explain(image),
            "explain_shown": lambda: explainer.explain(image, layers=[-1]),
            "decode_plain": decode("none"), "decode_all": decode("all"), "decode_shown": decode([-1])}
    times: dict[str, list[float]] = {case: [] for case in CASES}
    loads = [load()]
    for case in CASES:  # warm-up
        work[case]()
    for _ in range(args.repeats):
        for case in CASES:
            count = args.decode_repeats if case.startswith("decode") else 1
            start = time.perf_counter()
            for _ in range(count):
                work[case]()
            times[case].append((time.perf_counter() - start) / count)
    loads.append(load())
    return {"median_seconds": {case: statistics.median(values) for case, values in times.items()},
            "seconds": times, "loads": loads, "threads": torch.get_num_threads(), "device": str(device),
            "classes": args.classes, "decoder_layers": model.config.dec_layers,
            "input": list(model.preprocess(image).shape[-2:]), "torch": torch.__version__}


def report(result: dict) -> str:
    t = result["median_seconds"]
    lines = [f"device {result['device']}, C = {result['classes']}, input {result['input']}, "
             f"{result['decoder_layers']} decoder layers, torch {result['torch']}, {result['threads']} thread(s), "
             f"load {result['loads'][0]} -> {result['loads'][-1]}",
             "| measurement | median | ratio |", "|---|---|---|"]
    for case, reference in (("plain", None), ("explain_all", "plain"), ("explain_shown", "plain"),
                            ("decode_plain", None), ("decode_all", "decode_plain"),
                            ("decode_shown", "decode_plain")):
        ratio = "" if reference is None else f"{t[case] / t[reference]:.2f}x {reference}"
        unit = (t[case] * 1000, "ms") if case.startswith("decode") else (t[case], "s")
        lines.append(f"| {case} | {unit[0]:.3g} {unit[1]} | {ratio} |")
    met = "met" if t["explain_shown"] / t["plain"] <= TARGET else "NOT met"
    lines.append(f"explain with the shown maps / plain forward: {t['explain_shown'] / t['plain']:.2f}x "
                 f"(target on the GPU <= {TARGET}x; on this device: {met})")
    return "\n".join(lines)


def main() -> None:
    args = parser().parse_args()
    if args.quick:
        args.height, args.width, args.repeats, args.decode_repeats = 96, 128, 1, 1
    result = measure(args)
    print(report(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
