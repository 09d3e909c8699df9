"""The napari side of napari-intr: dock widgets, sample data and the shared state.

Importing this package is normally the plugin's first contact with torch inside napari, so it
keeps triton out first: in napari the viewer's OpenGL context (Mesa's LLVM) is loaded before
torch, and torchvision's import then loads triton's own LLVM and the process segfaults. The
plugin never compiles kernels, so triton is blocked unless something already imported it.
"""
import sys

if "triton" not in sys.modules:
    sys.modules["triton"] = None
