"""Rules written once and used everywhere: min-max scaling of maps, running out of memory, head numbers."""
import numpy as np
import pytest

from napari_intr.explanation import head_number, min_max
from napari_intr.image_files import is_out_of_gpu_memory, is_out_of_memory, reason


def test_min_max_scales_each_map_and_leaves_flat_ones_at_zero():
    maps = np.stack([np.array([[1.0, 3.0], [2.0, 5.0]]), np.full((2, 2), 7.0)]).astype(np.float32)
    scaled = min_max(maps, axis=(1, 2))
    assert scaled.dtype == np.float32 and scaled[0].min() == 0 and scaled[0].max() == 1
    assert scaled[0, 0, 1] == pytest.approx(0.5) and not scaled[1].any()
    assert min_max(maps).max() == 1 and min_max(maps)[1].min() == 1  # over everything: the flat map is the top


@pytest.mark.parametrize("error, gpu", [(MemoryError(), False), (RuntimeError("CUDA out of memory. Tried 2 GiB"), True),
                                        (RuntimeError("MPS backend out of memory"), True),
                                        (RuntimeError("DefaultCPUAllocator: can't allocate memory"), False)])
def test_out_of_memory_is_recognised_in_every_wording(error, gpu):
    assert is_out_of_memory(error) and is_out_of_gpu_memory(error) is gpu
    assert reason(error).startswith("out of memory")


def test_other_errors_are_not_out_of_memory():
    assert not is_out_of_memory(ValueError("image is 10 px")) and not is_out_of_memory(RuntimeError("shape mismatch"))


def test_the_docks_word_a_cpu_allocator_failure_as_memory_not_gpu_memory():
    from napari_intr.widgets.workers.messages import describe_error
    assert "ran out of memory" in describe_error(RuntimeError("DefaultCPUAllocator: can't allocate memory"), "Explain")
    assert "ran out of GPU memory" in describe_error(RuntimeError("CUDA out of memory"), "Explain")


def test_heads_are_numbered_from_one_for_people():
    assert [head_number(head) for head in range(3)] == [1, 2, 3]
