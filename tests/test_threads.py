"""Thread policy (napari_intr.threads): cores from the affinity and the cgroup quota, a core left
for napari's GUI thread, the user's thread count kept, passive OpenMP waiting set before torch."""
import os
import subprocess
import sys

import pytest

from napari_intr import threads


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A mocked machine: `machine(affinity, cpu_max=None, v1=None)`; cpu_max is cgroup v2's
    cpu.max text, v1 a (quota, period) pair of cgroup v1."""
    def make(affinity: int, cpu_max: str | None = None, v1: tuple[int, int] | None = None):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
        v2_file = tmp_path / "cpu.max"
        if cpu_max is not None:
            v2_file.write_text(cpu_max + "\n")
        v1_files = (tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us")
        if v1 is not None:
            for path, value in zip(v1_files, v1):
                path.write_text(f"{value}\n")
        monkeypatch.setattr(threads, "CGROUP_V2", v2_file)
        monkeypatch.setattr(threads, "CGROUP_V1", v1_files)
    return make


@pytest.mark.parametrize(("affinity", "cpu_max", "v1", "cores"), [
    (8, None, None, 8),                  # no cgroup limit: the affinity
    (8, "max 100000", None, 8),          # cgroup v2, unlimited
    (8, "150000 100000", None, 2),       # 1.5 cores of quota: 2 threads, not 8
    (2, "400000 100000", None, 2),       # the affinity is the tighter bound
    (16, None, (300000, 100000), 3),     # cgroup v1
    (16, None, (-1, 100000), 16),        # cgroup v1, unlimited
    (4, "garbage", None, 4),             # unreadable: ignored
])
def test_available_cores_read_affinity_and_quota(machine, affinity, cpu_max, v1, cores):
    machine(affinity, cpu_max, v1)
    assert threads.available_cores() == cores


@pytest.mark.parametrize(("affinity", "cpu_max", "gui", "children"), [(2, None, 1, 1), (8, "300000 100000", 2, 2),
                                                                    (1, None, 1, 1)])
def test_napari_and_children_leave_a_core(machine, affinity, cpu_max, gui, children):
    machine(affinity, cpu_max)
    assert threads.inference_threads(leave_for_gui=True) == gui
    assert threads.child_threads() == children
    assert threads.inference_threads() == threads.available_cores()


def test_torch_gets_the_count_unless_the_user_set_one(machine, monkeypatch):
    import torch
    machine(2)
    before = torch.get_num_threads()
    try:
        assert threads.use_inference_threads(leave_for_gui=True, environment={}) == 1
        assert torch.get_num_threads() == 1
        assert threads.use_inference_threads(environment={}) == 2
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert threads.use_inference_threads(environment={"OMP_NUM_THREADS": "1"}) is None
        assert threads.use_inference_threads(environment={"MKL_NUM_THREADS": "3"}) is None
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_training_children_get_cores_minus_one(machine):
    from napari_intr.widgets.workers.training_process import training_threads
    machine(4, "200000 100000")
    assert training_threads() == 1


def test_passive_waiting_keeps_what_the_user_set():
    environment = {"KMP_BLOCKTIME": "200"}
    threads.passive_openmp_waiting(environment)
    assert environment == {"KMP_BLOCKTIME": "200", "OMP_WAIT_POLICY": "PASSIVE"}


def test_importing_napari_intr_sets_passive_waiting_before_torch():
    """The OpenMP runtime reads the policy when torch loads it: importing napari_intr (as napari
    and `intr` do before any model code) sets it, and torch is not loaded yet."""
    environment = {key: value for key, value in os.environ.items() if key not in threads.OPENMP_WAITING}
    code = ("import os, sys, napari_intr; "
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['KMP_BLOCKTIME'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=environment, timeout=120).stdout.split()
    assert out == ["PASSIVE", "0", "False"]
