"""Where a model runs: the choices people pick from (CLI and docks) and how "auto" resolves.
Imports torch only when a device is resolved, so command-line parsers stay quick. Also whether a
device computes in bf16 natively: training (intr_training.engine) and inference (inference.py)
both read `native_bf16`."""
from __future__ import annotations

import platform

DEVICES = ("auto", "cpu", "cuda", "mps")
# What inference computes in (napari_intr.inference): here so that parsers read it without torch.
PRECISIONS = ("auto", "fp32", "bf16")
PRECISION_HELP = ("auto (default): bf16 autocast on CPUs with native bf16 (AVX512-BF16, AMX) and on CUDA, "
                  "fp32 elsewhere; fp32: always float32 (exact); bf16: always bf16 autocast")


def training_precision_text(start: dict) -> str:
    """What a training run computes in, from its "start" progress event: "fp32", or "fp32
    (frozen backbone's features in bf16)" where the two differ."""
    features = start.get("feature_precision")
    if features and features != start["precision"]:
        return f"{start['precision']} (frozen backbone's features in {features})"
    return start["precision"]


def resolve_device(device=None):
    """"auto" (or None) picks CUDA, then Apple's MPS, then the CPU. Returns a torch.device."""
    import torch
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but Apple's MPS is not available; use 'cpu' or 'auto'")
    return device


def native_bf16(device) -> bool:
    """Whether `device` computes in bf16 natively (not emulated, which is slower than fp32). CUDA
    counts as native (training and inference GPUs since Ampere are)."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        return _cpu_bf16_instructions()
    return False


def _cpu_bf16_instructions() -> bool:
    """x86: AVX512-BF16 or AMX-BF16. oneDNN's own check (torch.ops.mkldnn._is_mkldnn_bf16_supported)
    also accepts AVX-512 CPUs without them (Skylake to Ice Lake), where it emulates bf16."""
    import torch
    if platform.machine().lower() in ("x86_64", "amd64"):
        capabilities = getattr(torch.cpu, "get_capabilities", None)
        if capabilities is not None:
            found = capabilities()
            return bool(found.get("avx512_bf16") or found.get("amx_bf16"))
        check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # torch before get_capabilities
        return bool(check is not None and check())
    try:  # ARM: oneDNN checks the bf16 extension itself
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
