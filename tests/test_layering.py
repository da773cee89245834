"""The package's layering (README "Layout", CONTRIBUTING.md), read from the source with ast:
every relative import, at module level or inside a function, counts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unetkit"


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports() -> dict[str, set[str]]:
    """module -> the unetkit modules it imports (relative and absolute imports)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # ``from X import a``: the module X.a where it is one, else X itself
                subs = [f"{target}.{a.name}" for a in node.names]
                candidates = [c for c in subs if c in modules] or [target]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            deps.update(c for c in candidates if c in modules and c != name)
        graph[name] = deps
    return graph


def _layer(module: str) -> str:
    """``unetkit.train.fit`` -> ``train``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = _imports()

# Every subpackage and top-level module, bottom first: each imports only the layers before it
# (CONTRIBUTING.md "Layering"). train/ sits above infer/: validation goes through the very
# Predictor users predict with, and infer/ never imports train/. A new subpackage or module
# must be given its place here (test_every_module_has_a_layer).
ORDER = [
    "errors",
    "config",
    "palette",
    "progress",
    "files",
    "distributed",
    "viz",
    "plots",
    "device",
    "card",
    "models",
    "data",
    "objects",
    "metrics",
    "checkpoint",
    "infer",
    "train",
    "export",
    "quantize",
    "summary",
    "bioimageio",
    "demo",
    "cli",
    "__main__",
    "__init__",  # the package: its public names, some loaded lazily from the layers above
]
# each layer's row: the layers it must not import (every layer after it)
ROWS = {layer: set(ORDER[i + 1 :]) for i, layer in enumerate(ORDER)}


@pytest.mark.parametrize(("layer", "forbidden"), sorted(ROWS.items()))
def test_layer_does_not_import(layer, forbidden):
    bad = sorted(
        f"{module} -> {dep}"
        for module, deps in GRAPH.items()
        if _layer(module) == layer
        for dep in deps
        # the package's ``__version__``, read inside functions, is no layer
        if _layer(dep) in forbidden and dep != "unetkit"
    )
    assert not bad, bad


# The first row: errors, files, config and progress import nothing of unetkit beyond each
# other (config is a package: unetkit.config.base, .model, ... are all layer "config").
FIRST_ROW = {"errors", "files", "config", "progress"}


@pytest.mark.parametrize("layer", sorted(FIRST_ROW))
def test_first_row_imports_only_the_first_row(layer):
    modules = [m for m in GRAPH if _layer(m) == layer]
    assert modules, f"no module in layer {layer}"
    bad = sorted(f"{m} -> {d}" for m in modules for d in GRAPH[m] if _layer(d) not in FIRST_ROW)
    assert not bad, bad


def test_every_module_has_a_layer():
    """Every subpackage and top-level module has its row, and every row its modules."""
    layers = {_layer(module) for module in GRAPH}
    assert sorted(layers - set(ORDER)) == [], "not in ORDER"
    assert sorted(set(ORDER) - layers) == [], "in ORDER but gone"
    assert len(ORDER) == len(set(ORDER))


def test_the_rows_hold_the_rules_the_layers_were_made_for():
    """The rules the layers were made for, each implied by ORDER."""
    assert {"train", "export"} <= ROWS["infer"]
    assert {"data", "checkpoint", "train", "infer", "objects", "export"} <= ROWS["models"]
    assert {"data", "train", "infer", "objects", "models"} <= ROWS["viz"]
    assert {"data", "viz", "train", "infer", "objects", "models"} <= ROWS["palette"]
    assert {"train", "infer", "objects", "checkpoint", "export"} <= ROWS["data"]
    assert {"train", "infer", "checkpoint", "export"} <= ROWS["objects"]
    assert {"train", "infer"} <= ROWS["checkpoint"]
    assert {"export", "cli", "demo"} <= ROWS["train"]


# Inside data/: each room below the ones that use it (reading under normalisation and labelme,
# pairing under layout, the checks under verify). A module's row lists the data/ modules it may
# import; anything else from data/ fails, and so does a row whose module is gone.
DATA_ROWS = {
    "decoders": set(),
    "imageio": {"decoders"},
    "writers": {"largeimage"},  # PixelSize, for a type hint
    "normalize": {"imageio"},
    "labelme": {"imageio"},
    "rasterize": {"labelme"},
    "pairing": set(),
    "layout": {"imageio", "instances", "pairing"},
    "findings": set(),
    "pairchecks": {"findings", "imageio"},
    "instancechecks": {"findings", "instances", "pairchecks", "pairing"},
    "verify": {"findings", "instancechecks", "layout", "pairchecks", "pairing"},
}


@pytest.mark.parametrize(("module", "allowed"), sorted(DATA_ROWS.items()))
def test_data_module_imports_only_below_it(module, allowed):
    name = f"unetkit.data.{module}"
    assert name in GRAPH, f"{name} is not a module"
    inside = {d.removeprefix("unetkit.data.") for d in GRAPH[name] if d.startswith("unetkit.data.")}
    assert inside <= allowed, sorted(inside - allowed)


# Inside export/: the input contract and the parity check stand alone; the file formats use both.
EXPORT_ROWS = {
    "contract": set(),
    "parity": set(),
    "formats": {"contract", "parity"},
}


@pytest.mark.parametrize(("module", "allowed"), sorted(EXPORT_ROWS.items()))
def test_export_module_imports_only_below_it(module, allowed):
    name = f"unetkit.export.{module}"
    assert name in GRAPH, f"{name} is not a module"
    inside = {
        d.removeprefix("unetkit.export.") for d in GRAPH[name] if d.startswith("unetkit.export.")
    }
    assert inside <= allowed, sorted(inside - allowed)


# Inside cli/: the commands by group over the shared options, the help defaults and the exit
# codes; no command module imports another, and only cli/__init__.py (the app) imports them.
CLI_ROWS = {
    "help": set(),
    "errors": set(),
    "options": {"help"},
    "models": set(),
    "data": {"options"},
    "train": {"help", "options"},
    "predict": {"help", "options"},
    "demo": {"options"},
}


@pytest.mark.parametrize(("module", "allowed"), sorted(CLI_ROWS.items()))
def test_cli_module_imports_only_below_it(module, allowed):
    name = f"unetkit.cli.{module}"
    assert name in GRAPH, f"{name} is not a module"
    inside = {d.removeprefix("unetkit.cli.") for d in GRAPH[name] if d.startswith("unetkit.cli.")}
    assert inside <= allowed, sorted(inside - allowed)


def test_nothing_below_the_cli_imports_it():
    """The command line is the top: only ``python -m unetkit`` and cli/ itself import it."""
    bad = sorted(
        f"{module} -> {dep}"
        for module, deps in GRAPH.items()
        if _layer(module) != "cli" and module != "unetkit.__main__"
        for dep in deps
        if _layer(dep) == "cli"
    )
    assert not bad, bad
    assert "unetkit.cli.options" in GRAPH["unetkit.cli.predict"]  # the reader sees cli/


def test_no_import_cycle_between_modules():
    """Depth-first search for a cycle in the module graph (lazy imports included)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH.get(node, ())):
            if dep == "unetkit" or node == "unetkit":
                continue  # the package's lazy __getattr__ and __version__ are not layers
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (cycle := visit(module)):
            pytest.fail(" -> ".join(cycle))


def test_the_graph_sees_imports():
    """The reader works: known edges are found (a broken parser would pass every test)."""
    assert "unetkit.infer.predict" in GRAPH["unetkit.infer.outputs"]
    assert "unetkit.data.instances" in GRAPH["unetkit.data.dataset"]
    assert "unetkit.palette" in GRAPH["unetkit.viz"]
    assert "unetkit.data.decoders" in GRAPH["unetkit.data.imageio"]
    assert "unetkit.data.pairchecks" in GRAPH["unetkit.data.instancechecks"]
    assert "unetkit.config.model" in GRAPH["unetkit.config.train"]
    assert "unetkit.errors" in GRAPH["unetkit.files"]
    assert "unetkit.export.contract" in GRAPH["unetkit.export.formats"]
    assert "unetkit.infer.predict" in GRAPH["unetkit.train.validate"]  # lazily, in a function


def test_every_module_stays_a_room_of_one_job():
    """No module over 450 lines (CONTRIBUTING): a longer one holds several jobs to split."""
    long = {
        str(path.relative_to(SRC)): n
        for path in SRC.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 450
    }
    assert long == {}
