"""The package's layers: imports run one way, and no two packages import each other.

Every import of every module under ``sparsepai/`` is read with ``ast`` (module level, inside
functions, under ``TYPE_CHECKING``) and checked against :data:`LAYERS`, lowest first: a module
may import its own layer and the layers below it, never one above. Inside a layer, packages must
not form a circle either (``pruning`` and ``structured`` share a layer and import neither each
other), and no modules anywhere import each other around a circle. The facade ``sparsepai/__init__.py`` (lazy names) is the one module above every layer; importing
it counts as importing :mod:`sparsepai.api`.

Plugging in upward goes through registration instead of imports: ``sparsepai.distributed``
registers its gradient averaging and sharded gradients with ``sparsepai.core``, and
``sparsepai.structured`` its channel masks with ``sparsepai.masks``.
"""

from __future__ import annotations

import ast
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sparsepai"

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS = (
    ("sparsepai._io", "sparsepai._ext", "sparsepai._comm"),  # leaves: atomic files, the compiled
    # extension, process-group helpers
    ("sparsepai.ops",),  # ops: faces, dispatch, references, Triton kernels, the mask bit layout
    ("sparsepai.masks",),  # apply, threshold, io
    ("sparsepai.core",),  # registry, model call, losses and gradients, options, training pass
    ("sparsepai.optim",),
    ("sparsepai.experiments.data", "sparsepai.experiments.models"),  # the lab's leaves
    ("sparsepai.autosparse",),
    ("sparsepai.pruning", "sparsepai.structured", "sparsepai.sparse"),  # sparse: sp.sparsify
    ("sparsepai.distributed",),
    ("sparsepai.api",),  # sp.score / sp.prune / masks: composes the layers below
    ("sparsepai.experiments",),  # recipes: training, sweeps, reports
    ("sparsepai.cli", "sparsepai.__main__"),
)


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(package: pathlib.Path = PACKAGE) -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for every import of a ``sparsepai`` module, at any depth
    (``from a import b`` of a submodule ``a.b`` counts as importing ``a.b``)."""
    root = package.parent
    modules = {module_name(p, root): p for p in package.rglob("*.py")}
    out = []
    for name, path in sorted(modules.items()):
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                subs = [f"{module}.{a.name}" for a in node.names
                        if f"{module}.{a.name}" in modules]
                # ``from pkg import sub`` imports the submodule; any other name, the module
                targets = subs + ([module] if len(subs) < len(node.names) else [])
            else:
                continue
            for t in targets:
                if t == "sparsepai" or t.startswith("sparsepai."):
                    out.append((name, t, node.lineno))
    return out


def layer_of(module: str) -> int | None:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def package_of(module: str) -> str:
    """The unit circles are checked between: ``sparsepai.<package>`` (the lab's leaves count
    apart from the recipes they sit under)."""
    for p in ("sparsepai.experiments.data", "sparsepai.experiments.models"):
        if module == p or module.startswith(p + "."):
            return p
    return ".".join(module.split(".")[:2])


def upward_imports(edges) -> list[str]:
    bad = []
    for src, dst, line in edges:
        if src == "sparsepai":
            continue  # the facade
        # importing the facade reaches the whole API: only the API's layer and those above may
        ls, ld = layer_of(src), layer_of("sparsepai.api" if dst == "sparsepai" else dst)
        if ls is None or ld is None:
            bad.append(f"{src}:{line} -> {dst}: a module in no layer (add it to LAYERS)")
        elif ld > ls:
            bad.append(f"{src}:{line} imports {dst}, a higher layer ({LAYERS[ld][0]} > "
                       f"{LAYERS[ls][0]})")
    return bad


def package_cycles(edges) -> list[list[str]]:
    """Circles in the graph of packages (each a list of packages, first repeated last)."""
    graph: dict = {}
    for src, dst, _ in edges:
        a, b = package_of(src), package_of(dst)
        if a != b and "sparsepai" not in (src, dst):
            graph.setdefault(a, set()).add(b)
    cycles, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return cycles


def module_cycles(edges) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a circle (strongly
    connected components of more than one module)."""
    graph: dict = {}
    for src, dst, _ in edges:
        if src != dst and "sparsepai" not in (src, dst):
            graph.setdefault(src, set()).add(dst)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on.discard(group[-1])
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_is_in_a_layer_and_imports_downward():
    assert upward_imports(imports()) == []


def test_no_circles_between_packages():
    assert package_cycles(imports()) == []


def test_no_circles_between_modules():
    assert module_cycles(imports()) == []


def test_the_check_catches_a_planted_upward_import(tmp_path):
    # a copy of the package with one upward import planted in core: both checks must fail
    copy = tmp_path / "sparsepai"
    for path in PACKAGE.rglob("*.py"):
        dst = copy / path.relative_to(PACKAGE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(path.read_text())
    planted = copy / "core" / "loss.py"
    planted.write_text(planted.read_text() + "\n\ndef _planted():\n"
                       "    from sparsepai.distributed.sharded import backward_grads\n"
                       "    return backward_grads\n")
    edges = imports(copy)
    assert any("sparsepai.core.loss" in b and "sparsepai.distributed.sharded" in b
               for b in upward_imports(edges))
    assert any("sparsepai.core" in c and "sparsepai.distributed" in c
               for c in package_cycles(edges))
    assert any("sparsepai.core.loss" in c and "sparsepai.distributed.sharded" in c
               for c in module_cycles(edges))
    assert os.path.exists(PACKAGE / "core" / "loss.py")  # the real package untouched
