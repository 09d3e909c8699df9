"""The napari side of napari-intr: dock widgets, sample data and the shared state.

One module or folder per dock (`explorer/`, `compare.py`, `edit/`, `finetune/`, `traits/`), its boxes
inside it; what several docks use beside them: `state.py` (the evented state they share),
`model_source.py` (choosing a model), `layers.py` (the layers that show explanations, and the
pickers of the viewer's layers), `qt_helpers.py` (small Qt pieces), and `workers/` (every
background job, the TaskBar that runs them and reports their errors, the training process).
Jobs never touch widgets: they yield plain messages, and the dock that started them updates.

Importing this package is normally the plugin's first contact with torch inside napari, so it
keeps triton out first: in napari the viewer's OpenGL context (Mesa's LLVM) is loaded before
torch, and torchvision's import then loads triton's own LLVM and the process segfaults. The
plugin never compiles kernels, so triton is blocked unless something already imported it.
"""
import sys

if "triton" not in sys.modules:
    sys.modules["triton"] = None
