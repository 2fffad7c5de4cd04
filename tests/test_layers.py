"""The package's shape: imports only run downwards, no cycles, small modules and classes.

The layers are written once, here (bottom to top); the README's architecture picture is drawn from them.
Every import counts: module level, inside functions, under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import functools
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "orchestrator"

# (layer name, module-name prefixes) bottom to top; the most specific prefix decides a module's layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("orchestrator", "orchestrator.errors", "orchestrator.version", "orchestrator.clock",
                     "orchestrator.secrets", "orchestrator.faultpoints", "orchestrator.wire",
                     "orchestrator.snapshot")),
    ("drs and pure cores", ("orchestrator.drs", "orchestrator.lifecycle", "orchestrator.planning",
                            "orchestrator.selection", "orchestrator.engine.decide",
                            "orchestrator.engine.tuning")),
    ("store and settings", ("orchestrator.store", "orchestrator.config", "orchestrator.migrations")),
    ("engine", ("orchestrator.engine",)),
    ("use cases and report", ("orchestrator.usecases", "orchestrator.api", "orchestrator.report")),
    ("cli", ("orchestrator.cli", "orchestrator.__main__")),
]
# Beside the engine: the simulator imports only the foundations, drs/codes and drs/signing (and itself), and
# nothing but the CLI imports it.
SIMULATOR = "orchestrator.simulator"
SIMULATOR_MAY_IMPORT = LAYERS[0][1] + ("orchestrator.drs.codes", "orchestrator.drs.signing", SIMULATOR)
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()

_PARSE_ALL = """
import ast, pickle, sys
paths = sys.stdin.read().split("\\n")
sys.stdout.buffer.write(pickle.dumps({p: ast.parse(open(p, encoding="utf-8").read()) for p in paths}))
"""


@functools.cache
def _trees() -> dict[str, ast.Module]:
    """Every module's syntax tree, parsed in a fresh interpreter: in this one, CPython 3.11 can raise
    "SystemError: AST constructor recursion depth mismatch" when another thread (a test's leftover server,
    an import being rewritten) builds a tree at the same time (python/cpython#106905)."""
    paths = [str(p) for p in MODULES.values()]
    done = subprocess.run([sys.executable, "-c", _PARSE_ALL], input="\n".join(paths).encode(),
                          capture_output=True, check=True, timeout=120)
    return pickle.loads(done.stdout)  # our own child's output


def tree_of(path: Path) -> ast.Module:
    return _trees()[str(path)]


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if _matches(module, prefix) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if _matches(module, SIMULATOR):
        return LAYERS.index(next(layer for layer in LAYERS if layer[0] == "engine"))
    assert best >= 0, f"{module} is in no layer: add it to LAYERS in tests/test_layers.py"
    return best


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *(node.module.split(".") if node.module else [])])


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """(imported orchestrator module, line) for every import anywhere in the module."""
    path = MODULES[module]
    for node in ast.walk(tree_of(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _matches(alias.name, "orchestrator"):
                    yield _known(alias.name), node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            if not _matches(target, "orchestrator"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else _known(target)), node.lineno


def _known(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in imports_of(m) if t != m} for m in MODULES}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_imports_only_run_downwards() -> None:
    problems = []
    for module in MODULES:
        mine = layer_of(module)
        for target, line in imports_of(module):
            own_face = _matches(module, target) and MODULES[target].name == "__init__.py" and target != "orchestrator"
            if target == module or own_face:
                continue  # a package's own face
            allowed = _matches(module, SIMULATOR) or _matches(module, "orchestrator.cli")
            if _matches(target, SIMULATOR) and not allowed:
                problems.append(f"{module}:{line} imports the simulator ({target}); only the CLI may")
            elif _matches(module, SIMULATOR) and not any(_matches(target, p) for p in SIMULATOR_MAY_IMPORT):
                problems.append(f"{module}:{line} (simulator) imports {target}")
            elif layer_of(target) > mine:
                problems.append(f"{module}:{line} ({LAYERS[mine][0]}) imports {target} "
                                f"({LAYERS[layer_of(target)][0]}, a higher layer)")
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan, iterative enough for a few hundred modules
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in graph:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    # A package's __init__ importing its own submodules while they import siblings through it is not a cycle
    # of meaning; anything else is.
    real = [c for c in cycles if not _only_package_faces(c, graph)]
    assert not real, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in real)


def _only_package_faces(component: list[str], graph: dict[str, set[str]]) -> bool:
    faces = [m for m in component if MODULES[m].name == "__init__.py"]
    for face in faces:
        rest = [m for m in component if m != face]
        sub = {m: {t for t in graph[m] if t in rest} for m in rest}
        if not _has_cycle(sub):
            return True
    return False


def _has_cycle(graph: dict[str, set[str]]) -> bool:
    seen: dict[str, int] = {}

    def visit(v: str) -> bool:
        seen[v] = 1
        for w in graph[v]:
            if seen.get(w) == 1 or (w not in seen and visit(w)):
                return True
        seen[v] = 2
        return False

    return any(v not in seen and visit(v) for v in graph)


def test_nothing_outside_the_cli_imports_it() -> None:
    outside = [m for m in MODULES if not _matches(m, "orchestrator.cli") and m != "orchestrator.__main__"]
    offenders = [f"{m}:{line}" for m in outside for target, line in imports_of(m)
                 if _matches(target, "orchestrator.cli")]
    assert not offenders


def test_the_layer_checker_can_fail() -> None:
    """The checker sees an upward import and a cycle when there is one (it is not vacuous)."""
    assert layer_of("orchestrator.cli.shell") > layer_of("orchestrator.usecases.teardown") > layer_of(
        "orchestrator.engine") > layer_of("orchestrator.store.repo") > layer_of("orchestrator.lifecycle") > layer_of(
        "orchestrator.errors")
    assert _has_cycle({"a": {"b"}, "b": {"a"}}) and not _has_cycle({"a": {"b"}, "b": set()})
    seen = {t for t, _ in imports_of("orchestrator.cli.actions")}
    assert "orchestrator.cli.shell" in seen and any(_matches(t, "orchestrator.usecases") for t in seen)


def _sizes() -> Iterator[tuple[str, str, int, int]]:
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        yield module, "module", len(text.splitlines()), MAX_MODULE_LINES
        for node in ast.walk(tree_of(path)):
            if isinstance(node, ast.ClassDef):
                yield f"{module}.{node.name}", "class", (node.end_lineno or node.lineno) - node.lineno + 1, \
                    MAX_CLASS_LINES


@pytest.mark.parametrize("kind", ["module", "class"])
def test_modules_and_classes_are_small(kind: str) -> None:
    """The target for the whole package (the engine, store, report and simulator areas included)."""
    big = [f"{name}: {n} lines (max {limit})" for name, k, n, limit in _sizes() if k == kind and n > limit]
    assert not big, "\n".join(big)


def _same_names(modules: list[str]) -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for module in modules:
        by_name.setdefault(module.rsplit(".", 1)[-1], []).append(module)
    return {name: sorted(mods) for name, mods in by_name.items() if len(mods) > 1}


def test_no_two_modules_share_a_name() -> None:
    """A module's name says its job: no `models.py` beside `models.py` doing something else (packages' own
    `__init__`/`__main__` aside, which count under their package's name)."""
    leaves = [m for m, path in MODULES.items() if path.stem not in ("__init__", "__main__")]
    assert _same_names(["a.x", "b.x", "b.y"]) == {"x": ["a.x", "b.x"]}  # the check can fail
    assert not _same_names(leaves), _same_names(leaves)
