"""How long napari's event loop stalls while the INTR Explorer explains, against the same time
without explaining, side by side.

    xvfb-run -a python benchmarks/explain_event_loop.py [--seconds 15] [--json]

A QTimer ticks every 10 ms in a real napari viewer with the bundled specimen (heliconia-alba) and
the Explorer dock widget, which loads the bundled sample model itself. "idle" measures the viewer
with the model loaded; "explaining" measures while the Explorer's Explain runs again and again
(the encode + decode in a napari thread worker, then the results table and one attention layer
per head published on the GUI thread). The gaps between ticks are the stalls the user feels.
Target: the longest stall while explaining < 100 ms.
"""
from __future__ import annotations

import argparse
import json
import time

from finetune_event_loop import TICK_MS, measure_gaps, row, summary


def run(seconds: float) -> dict:
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-intr", "heliconia-alba")
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    app = napari.qt.get_qapp()
    deadline = time.perf_counter() + 120
    while widget.state.model is None or widget.model_source.task.busy:  # loading: not measured
        if time.perf_counter() > deadline:
            raise RuntimeError("the Explorer did not load the bundled model within 120 s")
        app.processEvents()
        time.sleep(0.005)
    panel = widget.explain_box
    done, state = [], {"running": False}

    def again(busy: bool) -> None:
        if not busy:
            done.append(time.perf_counter())
            if state["running"]:
                QTimer.singleShot(0, widget.explain)  # the next Explain, as a click would

    panel.task.busy_changed.connect(again)
    widget.explain()  # warm-up explain: first calls allocate and pick kernels; not measured
    while panel.task.busy:
        app.processEvents()
        time.sleep(0.005)
    if widget.state.explanation is None:
        raise RuntimeError("the warm-up Explain produced no explanation")
    idle = measure_gaps(app, seconds)
    done.clear()
    state["running"] = True
    widget.explain()
    explaining = measure_gaps(app, seconds)
    state["running"] = False
    while panel.task.busy:
        app.processEvents()
        time.sleep(0.005)
    explanation = widget.state.explanation
    result = {"idle": idle, "explaining": explaining, "explains": len(done),
              "model": widget.state.model_name, "device": str(widget.state.model.device),
              "input": list(explanation.input_shape), "classes": len(explanation.class_names)}
    viewer.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", action="store_true", help="print one JSON line of summaries instead")
    args = parser.parse_args()
    result = run(args.seconds)
    idle, explaining = result.pop("idle"), result.pop("explaining")
    if args.json:
        print(json.dumps({"idle": summary(idle), "explaining": summary(explaining),
                          "seconds": args.seconds, **result}))
        return
    print(f"napari event loop, {TICK_MS} ms timer, {args.seconds:.0f} s each; model {result['model']} "
          f"on {result['device']}, input {result['input']}, {result['classes']} classes")
    print(f"{'':<10} {'ticks':>6} {'median':>8} {'p99':>8} {'max':>8}  (gaps in ms)")
    print(row("idle", idle))
    print(row("explaining", explaining, f"{result['explains']} explains finished"))
    print(f"target: max while explaining < 100 ms -> {'met' if max(explaining) < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
