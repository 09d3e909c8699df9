"""The package as napari and pip see it: light imports, the npe2 manifest, the wheel's contents."""
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import napari_intr

ROOT = Path(__file__).resolve().parents[1]
QT_AND_NAPARI = ("PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy", "napari")
CORE_MODULES = ("napari_intr.model", "napari_intr.checkpoints", "napari_intr.loading", "napari_intr.official",
                "napari_intr.zoo", "napari_intr.preprocess", "napari_intr.class_names")


def modules_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running `code` in a fresh interpreter."""
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_the_package_loads_neither_torch_nor_qt_nor_napari():
    loaded = modules_after("import napari_intr; assert napari_intr.__version__")
    assert "napari_intr" in loaded
    assert loaded.isdisjoint({"torch", "torchvision", *QT_AND_NAPARI}), loaded & {"torch", *QT_AND_NAPARI}


def test_the_inference_core_loads_no_qt_and_no_napari():
    code = "import napari_intr, " + ", ".join(CORE_MODULES) + "\nnapari_intr.load_model, napari_intr.INTR"
    loaded = modules_after(code)
    assert "torch" in loaded  # the probe did import the core
    assert loaded.isdisjoint(QT_AND_NAPARI), loaded & set(QT_AND_NAPARI)


def test_lazy_public_names():
    from napari_intr import checkpoints, loading, model
    assert napari_intr.load_model is loading.load_model
    assert napari_intr.save_model is checkpoints.save_model
    assert napari_intr.INTR is model.INTR and napari_intr.build_model is model.build_model
    for name in napari_intr.__all__:
        assert getattr(napari_intr, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'load_modle'"):
        napari_intr.load_modle  # noqa: B018


def test_npe2_discovers_the_manifest():
    from npe2 import PluginManager
    manager = PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest("napari-intr")
    assert manifest.name == "napari-intr"
    # napari titles the Plugins and File ▸ Open Sample submenus with the display name: the docs' menu
    # paths must read as napari shows them
    docs = "".join((ROOT / name).read_text() for name in ("README.md", "docs/tutorial.md"))
    submenus = set(re.findall(r"(?:Plugins|Open Sample) ▸ ([^▸*]+?)(?: ▸|\*\*|$)", docs, flags=re.M))
    assert submenus == {manifest.display_name}


def test_wheel_holds_the_manifest_sample_data_and_entry_point(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "tests", ".venv"))
    # Offline with the environment's setuptools where it has one (a fresh venv on Python >= 3.12 does
    # not); otherwise pip fetches the build requirements, as it did for `pip install -e .`.
    local = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *local, "-q",
                             "-w", str(tmp_path / "dist"), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("napari_intr-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        manifest = archive.read("napari_intr/napari.yaml")
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points).decode()

    assert manifest == (ROOT / "napari.yaml").read_bytes()  # the file itself, not a link
    sample_files = {f"napari_intr/sample_data/{p.relative_to(ROOT / 'sample_data').as_posix()}"
                    for p in (ROOT / "sample_data").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    assert sample_files, "sample_data/ is empty"
    assert sample_files <= names, sorted(sample_files - names)
    class_lists = {f"napari_intr/class_lists/{p.name}" for p in (ROOT / "src/napari_intr/class_lists").iterdir()}
    assert {"napari_intr/class_lists/cub200.txt", "napari_intr/class_lists/README.md"} <= class_lists <= names
    packages = {p.parent.relative_to(root).as_posix() for root in (ROOT / "src", ROOT / "training")
                for p in root.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert {f"{package}/__init__.py" for package in packages} <= names, "a package is missing from pyproject"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    modules = {f"{package}/{path.relative_to(folder).as_posix()}"
               for package, folder in (("napari_intr", ROOT / "src" / "napari_intr"),
                                       ("intr_training", ROOT / "training" / "intr_training"))
               for path in folder.rglob("*.py") if "sample_data" not in path.parts}
    assert modules <= names, sorted(modules - names)  # every subpackage, found without a list
    assert "[napari.manifest]" in entry_points
    assert "napari-intr = napari_intr:napari.yaml" in entry_points
