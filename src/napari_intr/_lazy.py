"""Package attributes imported on first use (PEP 562), so that importing a package stays light."""
from __future__ import annotations

import sys
from importlib import import_module


def lazy_getattr(package: str, where: dict[str, str]):
    """A module `__getattr__` for `package`: `name` comes from submodule `where[name]` when first asked for."""
    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{where[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value
    return __getattr__
