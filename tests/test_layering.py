"""cnnlab's modules import downwards only, and never in a circle.

The layers, lowest first (a module may import its own layer and any below it):

0. foundation: `errors`, `config`, `file_names`, `signals`, `trust`, `lightning_internals`,
   `assignment`, `renamed`, `commands` (and the package itself): imported by everything,
   import nothing above them;
1. `data`, `speed`: datasets and loaders; the runtime switches the models read;
2. `models`: the nets and the LightningModule;
3. `results`: torch-free records, run files and the sweep report;
4. `scale`: sweeps, launchers, DDP, parallel jobs;
5. `training`, `study`, `process_setup`: the run itself and what starts it.

The graph is read from the source with `ast`, so a module that cannot be imported here is
still checked. Imports inside functions and under `TYPE_CHECKING` count. An import inside a
function may close a circle only when its line says why it waits, `# deferred: <reason>`; it
must still point downwards.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "cnnlab"

LAYERS: list[tuple[str, ...]] = [
    (
        "cnnlab",
        "cnnlab.errors",
        "cnnlab.config",
        "cnnlab.file_names",
        "cnnlab.signals",
        "cnnlab.trust",
        "cnnlab.lightning_internals",
        "cnnlab.assignment",
        "cnnlab.seed",
        "cnnlab.renamed",
        "cnnlab.console",
        "cnnlab.commands",
    ),
    ("cnnlab.data", "cnnlab.speed"),
    ("cnnlab.models",),
    ("cnnlab.results",),
    ("cnnlab.scale",),
    ("cnnlab.training", "cnnlab.study", "cnnlab.process_setup"),
]
DEFERRED = "# deferred:"


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    deferred: bool  # inside a function and marked `# deferred: <reason>`


def module_files(root: Path = SRC) -> dict[str, Path]:
    files = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def _inside_function(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a function body."""
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inner |= {id(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    return inner


def imports_of(name: str, path: Path, modules: set[str]) -> list[Import]:
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inner = _inside_function(tree)
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from pkg import mod` depends on the module pkg.mod; `from mod import name`, on mod.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for target in targets:
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]  # `import a.b.c` of a name, not a module
            if target in modules and target != name:
                marked = DEFERRED in lines[node.lineno - 1]
                found.append(Import(name, target, node.lineno, id(node) in inner and marked))
    return found


def import_graph(root: Path = SRC) -> list[Import]:
    files = module_files(root)
    return [imp for name, path in files.items() for imp in imports_of(name, path, set(files))]


def layer_of(module: str) -> int | None:
    """The layer of the longest entry of LAYERS that is `module` or a package holding it (the
    package's own entry is its `__init__` alone); None when none is."""
    best: tuple[int, int] | None = None  # (length of the matching entry, layer)
    for layer, entries in enumerate(LAYERS):
        for entry in entries:
            holds = entry != PACKAGE and module.startswith(entry + ".")
            if (module == entry or holds) and (best is None or len(entry) > best[0]):
                best = (len(entry), layer)
    return None if best is None else best[1]


def cycles(edges: list[tuple[str, str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in module_files() if layer_of(name) is None]
    assert not unplaced, f"give these modules a layer in tests/test_layering.py: {unplaced}"


def test_no_import_runs_back_up_a_layer() -> None:
    upward = {
        f"{imp.source} (line {imp.line}, layer {source}) imports {imp.target} (layer {target})"
        for imp in import_graph()
        if None not in (source := layer_of(imp.source), target := layer_of(imp.target))
        and source < target  # type: ignore[operator]
    }
    assert not upward, "imports running back up:\n" + "\n".join(sorted(upward))


def test_no_modules_import_each_other_in_a_circle() -> None:
    edges = [(imp.source, imp.target) for imp in import_graph() if not imp.deferred]
    assert not cycles(edges), f"modules in a circle: {cycles(edges)}"


# -- the checks themselves catch what they are for ----------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / PACKAGE / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_circle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "results/__init__.py": "",
            "results/markdown.py": "def f():\n    from cnnlab.results.report import Run\n",
            "results/report.py": "from .markdown import f\n",
        },
    )
    edges = [(imp.source, imp.target) for imp in import_graph(root) if not imp.deferred]
    assert cycles(edges) == [["cnnlab.results.markdown", "cnnlab.results.report"]]


def test_an_import_marked_deferred_with_a_reason_closes_no_circle(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def f():\n    import cnnlab.b  # deferred: b is slow to import\n",
            "b.py": "from cnnlab import a\n",
        },
    )
    graph = import_graph(root)
    assert [(imp.source, imp.target, imp.deferred) for imp in graph] == [
        ("cnnlab.a", "cnnlab.b", True),
        ("cnnlab.b", "cnnlab.a", False),
    ]
    assert cycles([(imp.source, imp.target) for imp in graph if not imp.deferred]) == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("cnnlab", 0),
        ("cnnlab.file_names", 0),
        ("cnnlab.data.datamodule", 1),
        ("cnnlab.results.report", 3),
        ("cnnlab.scale.parallel_stop", 4),
        ("cnnlab.training.interruption", 5),
        ("cnnlab.elsewhere", None),  # a new top-level module must be placed
    ],
)
def test_a_module_takes_the_layer_of_its_longest_entry(module: str, layer: int | None) -> None:
    assert layer_of(module) == layer
