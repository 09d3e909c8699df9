"""Where a model runs: the choices people pick from (CLI and docks) and how "auto" resolves.
Imports torch only when a device is resolved, so command-line parsers stay quick."""
from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda", "mps")


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
