"""The house rules that keep the tree easy to change: no import cycles between the project's
modules (imports inside functions included), folder order is import order (the plugin package
never imports training), command-line parsing apart from the work. Read from the source with `ast`, so nothing here imports the project."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"napari_intr": ROOT / "src" / "napari_intr", "intr_training": ROOT / "training" / "intr_training"}
# official.py unpickles the paper's checkpoints, which hold an argparse.Namespace of their settings.
ARGPARSE_IN_CORE = {"napari_intr.official"}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def import_nodes(tree: ast.Module, top_level_only: bool):
    """Every node of the file, or those of the statements outside functions and classes (if/try
    blocks included)."""
    if not top_level_only:
        return ast.walk(tree)
    return [node for statement in tree.body if not isinstance(statement, (ast.FunctionDef, ast.ClassDef))
            for node in ast.walk(statement)]


def imports(name: str, path: Path, modules: dict[str, Path], top_level_only: bool = False) -> set[str]:
    """The project modules that `name` imports: anywhere in the file, or at module level only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in import_nodes(tree, top_level_only):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # `from package import module` imports the module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    found.update(lazy_modules(tree, package))
    return {module for module in found if module in modules or module.split(".")[0] in PACKAGES}


def lazy_modules(tree: ast.Module, package: str) -> set[str]:
    """The submodules a package's `_LAZY` table imports on first use (_lazy.lazy_getattr)."""
    found = set()
    for statement in tree.body:
        if (isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Dict)
                and any(isinstance(target, ast.Name) and target.id == "_LAZY" for target in statement.targets)):
            found.update(f"{package}.{value.value}" for value in statement.value.values
                         if isinstance(value, ast.Constant) and isinstance(value.value, str))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            return visiting[visiting.index(module):] + [module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text("def late():\n    from .a import thing\n")
    modules = {"napari_intr.a": tmp_path / "a.py", "napari_intr.b": tmp_path / "b.py"}
    graph = {name: imports(name, path, modules) - {name} for name, path in modules.items()}
    assert find_cycle(graph) == ["napari_intr.a", "napari_intr.b", "napari_intr.a"]


def test_the_cycle_finder_follows_a_packages_lazy_attributes(tmp_path):
    (tmp_path / "__init__.py").write_text('_LAZY = {"load": "loading"}\n')
    (tmp_path / "loading.py").write_text("from . import helpers\n")
    (tmp_path / "helpers.py").write_text("def late():\n    from . import load\n")
    modules = {"napari_intr": tmp_path / "__init__.py", "napari_intr.loading": tmp_path / "loading.py",
               "napari_intr.helpers": tmp_path / "helpers.py"}
    graph = {name: imports(name, path, modules) - {name} for name, path in modules.items()}
    assert find_cycle(graph) == ["napari_intr", "napari_intr.loading", "napari_intr.helpers", "napari_intr"]


def test_no_import_cycles_between_the_project_modules():
    modules = project_modules()
    assert "intr_training.training_run" in modules and "napari_intr.model.intr" in modules
    graph = {name: {m for m in imports(name, path, modules) if m in modules and m != name}
             for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_under_src_imports_training():
    """The plugin package never imports intr_training, not even inside a function: the Fine-tune
    dock trains through the `intr train` child process."""
    modules = project_modules()
    offenders = {name: sorted(m for m in imports(name, path, modules) if m.split(".")[0] == "intr_training")
                 for name, path in modules.items() if name.startswith("napari_intr")}
    assert not {name: found for name, found in offenders.items() if found}


# Folder order is import order (README: Architecture): a module imports only from its own floor and
# the floors below it, inside functions too. The model stands on preprocessing alone.
FLOORS = ("model", "core", "collection runs", "analyses", "widgets", "training", "the intr command")
# The `intr` command: cli.py dispatches, *_cli.py (and these) define and parse the arguments.
COMMAND_LINE = {"intr_training.cli", "intr_training.cli_values", "intr_training.faithfulness_options"}


def floor(module: str) -> str:
    """The floor of a module by its folder (src/napari_intr/<folder>/, training/intr_training/)."""
    package, _, rest = module.partition(".")
    top = rest.split(".")[0]
    if package == "intr_training":
        command = module in COMMAND_LINE | {"intr_training", "intr_training.__main__"} or module.endswith("_cli")
        return "the intr command" if command else "training"
    if top in ("model", "preprocess", "_lazy", "_version"):
        return "model"
    return {"collection": "collection runs", "atlas": "analyses", "faithfulness": "analyses",
            "widgets": "widgets"}.get(top, "core")


def imports_against_the_floors(modules: dict[str, Path]) -> dict[str, list[str]]:
    found = {}
    for name, path in modules.items():
        above = sorted(m for m in imports(name, path, modules)
                       if m in modules and FLOORS.index(floor(m)) > FLOORS.index(floor(name)))
        if above:
            found[name] = [f"{m} ({floor(m)}, above {floor(name)})" for m in above]
    return found


def test_the_floor_rule_finds_an_upward_import_inside_a_function(tmp_path):
    (tmp_path / "explanation.py").write_text("def late():\n    from .atlas import report\n")
    (tmp_path / "report.py").write_text("from .. import explanation\n")
    modules = {"napari_intr.explanation": tmp_path / "explanation.py",
               "napari_intr.atlas.report": tmp_path / "report.py"}
    assert imports_against_the_floors(modules) == {
        "napari_intr.explanation": ["napari_intr.atlas.report (analyses, above core)"]}


def test_folder_order_is_import_order():
    """model/ < the core (src/napari_intr/*.py) < collection/ < atlas/, faithfulness/ < widgets/ <
    training/intr_training/ < the `intr` command (cli.py, *_cli.py)."""
    assert not imports_against_the_floors(project_modules())


GUI_PACKAGES = {"napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy"}
# `intr demo` opens napari: its command calls the demo in the widgets (inside its run()).
OPENS_NAPARI = {"intr_training.demo_cli"}


def test_only_the_widgets_import_napari_and_qt():
    """Data flows one way: the model, the core and training never import the widgets, napari or Qt
    (not even inside functions), except the command that opens napari; the widgets import them."""
    modules = project_modules()
    offenders = {}
    for name, path in modules.items():
        if name.startswith("napari_intr.widgets") or name in OPENS_NAPARI:
            continue
        found = {m for m in imports(name, path, modules) if m.startswith("napari_intr.widgets")}
        found |= third_party_imports(path, top_level_only=False) & GUI_PACKAGES
        if found:
            offenders[name] = sorted(found)
    assert not offenders


def test_the_model_imports_only_itself_and_preprocessing():
    """model/ maps onto the paper's Fig. 2 and stands on its own (README: Architecture)."""
    modules = project_modules()
    allowed = ("napari_intr.model", "napari_intr.preprocess", "napari_intr._lazy")
    offenders = {name: sorted(m for m in imports(name, path, modules) if not m.startswith(allowed))
                 for name, path in modules.items() if name.startswith("napari_intr.model")}
    assert not {name: found for name, found in offenders.items() if found}




def test_command_line_parsing_stays_out_of_the_core():
    """The core and the work the commands call never define or parse arguments, nor take an
    argparse.Namespace (the synth.py / synth_cli.py split everywhere; a training run takes
    train_settings.TrainSettings)."""
    offenders = set()
    for name, path in project_modules().items():
        if name in COMMAND_LINE or name.endswith("_cli") or name in ARGPARSE_IN_CORE:
            continue
        text = path.read_text(encoding="utf-8")
        parses = "ArgumentParser" in text or "add_argument" in text or "parse_args" in text
        if parses or "import argparse" in text:
            offenders.add(name)
    assert not offenders


def test_ruff_is_clean():
    """`ruff check .` with the rules in pyproject.toml (pyflakes, isort, bugbear, complexity)."""
    import importlib.util
    import subprocess
    if importlib.util.find_spec("ruff") is None:
        import pytest
        pytest.skip("ruff is not installed (it comes with the testing extra)")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def declared_dependencies() -> tuple[set[str], set[str]]:
    """(the core dependencies, those of the user-facing extras) named in pyproject.toml."""
    import re

    import pytest
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(requirements):
        return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-") for r in requirements}
    extras = project["optional-dependencies"]
    return names(project["dependencies"]), names(r for extra, rs in extras.items() if extra != "testing" for r in rs)


def third_party_imports(path: Path, top_level_only: bool) -> set[str]:
    found = set()
    for node in import_nodes(ast.parse(path.read_text(encoding="utf-8")), top_level_only):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in PACKAGES}


def test_every_imported_package_is_declared():
    """A package the code imports is a dependency (or, imported only where its feature needs it,
    an extra's: napari and Qt for the app, captum for the faithfulness evaluation); outside the
    widgets, what is imported at module level is a core dependency."""
    from importlib.metadata import packages_distributions
    core, extras = declared_dependencies()
    distributions = packages_distributions()

    def distribution(module):
        return {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
    undeclared, module_level_extras = {}, {}
    for name, path in project_modules().items():
        for module in third_party_imports(path, top_level_only=False):
            if not distribution(module) & (core | extras):
                undeclared.setdefault(module, []).append(name)
        if not name.startswith("napari_intr.widgets"):
            for module in third_party_imports(path, top_level_only=True):
                if not distribution(module) & core:
                    module_level_extras.setdefault(module, []).append(name)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    assert not module_level_extras, f"an extra's package imported at module level: {module_level_extras}"
