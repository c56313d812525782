"""The package's imports run one way: no cycle, and no module imports one above it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

SRC = ROOT / "src"

#: Who may import whom: a module of a layer imports from its own layer or lower ones only.
#: errors is below all; nn is pure PyTorch; targets lists nn's encoders; data and tasks sit
#: side by side on them; the config checks read data, tasks and nn; the run helpers (loggers,
#: checkpoint I/O, the trainer's profiler, reporting, resolvers, the run folder's lock) serve
#: callbacks and pipeline; trained loads a trained run through pipeline for the entry points,
#: which come last; resume (the checkpoint a run goes on from) reads checkpoints through
#: trained, beside it.
LAYERS = [
    {"seqlab.errors"},
    {"seqlab.nn"},
    {"seqlab.targets"},
    {"seqlab.data", "seqlab.tasks"},
    {
        "seqlab.config_checks",
        "seqlab.checkpoint_io",
        "seqlab.cuda_check",
        "seqlab.loggers",
        "seqlab.profilers",
        "seqlab.reporting",
        "seqlab.resolvers",
        "seqlab.run_folder",
    },
    {"seqlab.callbacks"},
    {"seqlab.pipeline"},
    {"seqlab.trained", "seqlab.resume"},
    {"seqlab", "seqlab.train", "seqlab.evaluate", "seqlab.predict", "seqlab.export"},
    {"seqlab.generate", "seqlab.search"},
]

#: Known upward imports: none since utils/ was dissolved (issue 18), and nothing may join.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module of src/seqlab and the seqlab modules it imports (at any depth of its code)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found |= {c for c in candidates if c in modules and c != name}
        graph[name] = found
    return graph


def layer_of(module: str) -> int:
    """The layer of ``module``: that of its longest listed prefix. The package itself
    (``seqlab``, its ``__init__``) is listed but prefixes nothing: a new top-level module must be
    placed in a layer by name."""
    best, level = -1, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            below = prefix != "seqlab" and module.startswith(prefix + ".")
            if (module == prefix or below) and len(prefix) > best:
                best, level = len(prefix), i
    assert level >= 0, f"{module} is in no layer of LAYERS; add it"
    return level


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_the_package() -> None:
    graph = imports()
    assert "seqlab.tasks.language_model" in graph
    assert "seqlab.data.text" in graph["seqlab.tasks.language_model"]


def test_no_import_cycle() -> None:
    assert cycles(imports()) == []


def test_a_cycle_is_found_where_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_imports_a_module_above_it() -> None:
    upward = {
        (module, imported)
        for module, targets in imports().items()
        for imported in targets
        if layer_of(imported) > layer_of(module)
    }
    assert upward - KNOWN_UPWARD == set()
    assert upward >= KNOWN_UPWARD, "a known upward import is gone: take it off KNOWN_UPWARD"
