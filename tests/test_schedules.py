"""Learning-rate schedules: warm-up, then a decay that reaches its end exactly at the run's end."""
from itertools import pairwise

import pytest
import torch

from intr_training.schedules import (
    MIN_FACTOR,
    STEP_GAMMA,
    plan,
    scheduler,
    updates_per_epoch,
)


@pytest.mark.parametrize("epochs", [1, 2, 3, 7, 12, 40, 140])
@pytest.mark.parametrize("per_epoch", [1, 5, 57])
def test_cosine_warms_up_then_decays_monotonically_to_the_end_of_any_run(epochs, per_epoch):
    schedule = plan("cosine", epochs, per_epoch, warmup_epochs=1)
    factors = [schedule(update) for update in range(epochs * per_epoch)]
    peak = factors.index(max(factors))
    assert peak == schedule.warmup_updates
    assert all(a < b for a, b in pairwise(factors[:peak + 1]))  # warm-up rises
    assert all(a >= b for a, b in pairwise(factors[peak:]))  # then never rises again
    assert max(factors) == pytest.approx(1.0)
    if len(factors) > 1:
        assert factors[-1] == pytest.approx(MIN_FACTOR)  # fully decayed at the last update, not before
        assert factors[-2] > MIN_FACTOR
    assert schedule.warmup_updates <= 0.2 * epochs * per_epoch  # a short run is not all warm-up


def test_step_schedule_drops_tenfold_after_lr_drop_epochs():
    schedule = plan("step", 10, 4, lr_drop=6)
    factors = [schedule(update) for update in range(40)]
    assert factors[:24] == [1.0] * 24 and factors[24:] == [STEP_GAMMA] * 16
    with pytest.raises(ValueError, match="--lr-drop"):
        plan("step", 10, 4)
    with pytest.raises(ValueError, match="--schedule"):
        plan("linear", 10, 4)


def test_updates_per_epoch_counts_the_last_partial_accumulation():
    assert updates_per_epoch(10, 1) == 10 and updates_per_epoch(10, 3) == 4 and updates_per_epoch(9, 3) == 3


def test_scheduler_state_round_trips_through_a_weights_only_load(tmp_path):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=1e-3)
    lr_scheduler = scheduler(optimizer, plan("cosine", 3, 10, warmup_epochs=1))
    for _ in range(13):
        optimizer.step()
        lr_scheduler.step()
    torch.save(lr_scheduler.state_dict(), tmp_path / "s.pt")
    fresh_optimizer = torch.optim.AdamW([parameter], lr=1e-3)
    fresh = scheduler(fresh_optimizer, plan("cosine", 3, 10, warmup_epochs=1))
    fresh.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    fresh_optimizer.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]  # as optimizer state restores it
    for _ in range(5):
        optimizer.step()
        lr_scheduler.step()
        fresh_optimizer.step()
        fresh.step()
        assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_small_steps_train_in_fp32_on_cuda_large_ones_in_bf16():
    from intr_training.engine import AMP_MIN_PIXELS, options_for
    cuda = torch.device("cuda")  # options only: no GPU needed
    assert not options_for(cuda, 16 * 128 * 128).amp and not options_for(cuda, 2 * 384 * 384).amp
    assert options_for(cuda, 8 * 800 * 800).amp and options_for(cuda, AMP_MIN_PIXELS).amp
    assert options_for(cuda).amp  # size unknown (evaluation): as before
    assert options_for(cuda, 8 * 800 * 800).channels_last and options_for(cuda, 16 * 128 * 128).channels_last


@pytest.mark.parametrize("native", [True, False])
def test_cpu_steps_use_bf16_only_when_large_and_native(monkeypatch, native):
    from intr_training import engine
    monkeypatch.setattr(engine, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    large = engine.options_for(cpu, engine.AMP_MIN_PIXELS)
    assert large.amp is native and large.channels_last is native  # NHWC paid on the CPU only in bf16
    assert not engine.options_for(cpu, 32 * 128 * 128).amp  # the tiny recipe stays in the fp32 it was tuned in
    assert not engine.options_for(cpu).amp  # size unknown (evaluation): fp32 on a CPU
    assert not engine.options_for(cpu, engine.AMP_MIN_PIXELS, "fp32").amp
    assert engine.options_for(cpu, 16, "bf16").amp


@pytest.mark.parametrize("native", [True, False])
def test_a_frozen_backbone_computes_its_features_as_explain_does(monkeypatch, native):
    """The frozen forward is inference: "auto" is bf16 wherever native, whatever the step's size;
    a forced precision holds for the features too."""
    from intr_training import engine
    from napari_intr import inference
    monkeypatch.setattr(inference, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    small = engine.options_for(cpu, 32 * 224 * 224)  # the ViT recipe's step: trained in fp32
    assert not small.amp
    features = engine.feature_options(small)
    assert features.amp is native and features.channels_last is native
    assert engine.precision_name(features) == ("bf16" if native else "fp32")
    assert not engine.feature_options(engine.options_for(cpu, 16, "fp32"), "fp32").amp
    assert engine.feature_options(engine.options_for(cpu, 16, "bf16"), "bf16").amp


def test_an_unknown_precision_is_refused():
    from intr_training.engine import options_for
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        options_for(torch.device("cpu"), 1, "fp16")


@pytest.mark.parametrize(("instructions", "native"), [({}, False), ({"avx512_bf16": True}, True),
                                                       ({"amx_bf16": True}, True)])
def test_an_avx512_cpu_without_bf16_instructions_is_not_native(monkeypatch, instructions, native):
    """oneDNN's check accepts any AVX-512 CPU (bf16 emulated there, slower than fp32): auto keeps fp32."""
    import platform

    from intr_training import engine
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {
        "architecture": "x86_64", "avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True,
        **instructions}, raising=False)
    assert engine.native_bf16(torch.device("cpu")) is native
    assert engine.options_for(torch.device("cpu"), engine.AMP_MIN_PIXELS).amp is native
