"""napari's event loop stays free while the Explorer works (issue 24): structural checks, not
timings (benchmarks/explain_event_loop.py measures the stalls).

- a new set of attention layers is added one layer per turn of the event loop, never several in
  one GUI-thread callback, with its contrast limits given (napari does not scan the maps);
- a task ends only once its result is shown;
- jobs compute on a thread below the GUI thread's priority (Linux)."""
import os
import sys

import pytest

TIMEOUT_MS = 30_000


@pytest.fixture
def explorer(make_napari_viewer, qtbot, messages):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-intr", "heliconia-alba")
    from napari_intr.widgets.state import shared_state
    shared_state(viewer).model = None
    _, widget = viewer.window.add_plugin_dock_widget("napari-intr", "INTR Explorer")
    qtbot.waitUntil(lambda: widget.state.model is not None and not widget.model_source.task.busy,
                    timeout=TIMEOUT_MS)
    return viewer, widget


def test_new_attention_layers_are_added_one_per_turn_with_their_contrast_limits(explorer, qtbot, monkeypatch):
    viewer, widget = explorer
    from napari.layers import Image

    from napari_intr.widgets.gui_turns import turns
    from napari_intr.widgets.layers import LAYERS_PER_TURN
    queue = turns()
    steps, current = [], {"step": None}
    queue_step = queue.queue

    def counted_queue(step):  # each queued step, with the layers it inserts
        def counted():
            current["step"] = []
            steps.append(current["step"])
            try:
                step()
            finally:
                current["step"] = None
        queue_step(counted)

    monkeypatch.setattr(queue, "queue", counted_queue)
    outside = []
    viewer.layers.events.inserted.connect(
        lambda event: (current["step"] if current["step"] is not None else outside).append(event.value.name))
    scans = []
    calc_data_range = Image._calc_data_range
    monkeypatch.setattr(Image, "_calc_data_range",
                        lambda self, *args, **kwargs: scans.append(self.name) or calc_data_range(self, *args, **kwargs))
    for explains in range(2):  # the first makes the set, the Keep between them makes the second anew
        widget.explain()
        qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)
        heads = widget.state.model.config.nheads
        live = widget.attention.layers.live_layers(widget.state.source.name)
        assert len(live) == heads + 1  # the task ended once every layer was in
        assert not widget.attention.layers.building()
        if explains == 0:
            widget.attention.keep()
    added = [names for names in steps if names]
    assert outside == []  # no layer was added in the publishing callback itself
    assert len(added) == 2 * (heads + 1)
    assert max(map(len, added)) <= LAYERS_PER_TURN == 1
    assert scans == []  # contrast limits were given, not computed from the maps
    # the mean (the visible layer) comes first and stays on top, heads under it strongest first
    mean, *head_layers = reversed([layer for layer in viewer.layers if layer in live])
    assert mean.metadata["head"] == "mean" and mean.visible
    assert [layer.metadata["head_rank"] for layer in head_layers] == list(range(1, heads + 1))


def test_a_switch_while_the_set_is_being_added_shows_the_newest_maps(explorer, qtbot):
    viewer, widget = explorer
    import numpy as np
    widget.explain()
    qtbot.waitUntil(lambda: not widget.explain_box.task.busy, timeout=TIMEOUT_MS)
    widget.attention.keep()
    widget.results.select_class(widget.results.rows()[1][1])
    assert widget.attention.layers.building()
    widget.attention.decoder_layer.value = 1  # switched before every layer is in (L1 is decoded on a worker)
    qtbot.waitUntil(lambda: not widget.attention.layers.building() and not widget.attention.task.busy,
                    timeout=TIMEOUT_MS)
    live = widget.attention.layers.live_layers(widget.state.source.name)
    explanation = widget.state.explanation.every_layer()
    from napari_intr.explanation import layer_from_number
    from napari_intr.widgets.layers import layer_views
    layer = layer_from_number(1, explanation.num_layers)
    views = layer_views(explanation, widget.state.source, widget.attention.class_name, layer, widget.attention.options())
    assert [layer.name for layer in live] == [view.name for view in views]
    assert all(np.array_equal(layer.data, view.data) for layer, view in zip(live, views))


def test_queued_steps_run_in_order_and_release_their_waiters(qtbot):
    from napari_intr.widgets.gui_turns import GuiTurns
    queue, ran, released = GuiTurns(), [], []
    queue.after_steps(lambda: released.append("at once"))  # nothing queued: called now
    assert released == ["at once"]

    def failing():
        ran.append("fails")
        raise ValueError("a step that fails")

    queue.queue(lambda: ran.append(1))
    queue.queue(failing)
    queue.queue(lambda: ran.append(2))
    queue.after_steps(lambda: released.append("after"))
    assert ran == [] and queue.pending == 3  # nothing runs in the caller's turn
    with qtbot.capture_exceptions() as errors:
        qtbot.waitUntil(lambda: released == ["at once", "after"], timeout=5000)
    assert ran == [1, "fails", 2]  # a failing step does not stop the others
    assert len(errors) == 1
    queue.queue(lambda: ran.append(3))
    queue.run_all()
    assert ran[-1] == 3 and queue.pending == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_jobs_run_below_the_gui_thread(qtbot):
    import threading

    from napari_intr import threads
    from napari_intr.widgets.workers.jobs import Result
    from napari_intr.widgets.workers.task_bar import TaskBar
    bar, seen = TaskBar(), []

    def job():
        yield Result(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    for _ in range(2):  # a reused pool thread is lowered once, not twice
        bar.start(job, doing="Checking", on_result=seen.append)
        qtbot.waitUntil(lambda: not bar.busy, timeout=5000)
    process = os.getpriority(os.PRIO_PROCESS, os.getpid())
    assert seen == [min(19, process + threads.WORKER_NICE)] * 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == process  # the GUI thread as it was


def test_lowering_a_thread_says_when_it_cannot(monkeypatch):
    from napari_intr import threads
    monkeypatch.setattr(sys, "platform", "darwin")
    assert threads.lower_thread_priority() is False
    monkeypatch.setattr(sys, "platform", "linux")
    assert threads.lower_thread_priority(0) is False

    def refused(*args):
        raise PermissionError("not permitted")

    monkeypatch.setattr(os, "setpriority", refused)
    monkeypatch.setattr(os, "getpriority", lambda *args: 0 if args[1] == os.getpid() else -1)
    assert threads.lower_thread_priority(3) is False
