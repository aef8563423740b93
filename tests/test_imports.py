"""The package's import graph has no cycle.

Walked with :mod:`ast`, without importing anything. **Every** import counts, the module-level ones and those
inside functions: a function-level import that closes a cycle (``a`` imports ``b`` at the top, ``b`` imports
``a`` inside a function) still ties the two modules together, and deferring the import only hides it until
the first call. The one exception is an import under ``if TYPE_CHECKING:``, which never runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import qparse_lite

PKG = Path(qparse_lite.__file__).resolve().parent


def _modules(pkg: Path = PKG) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of the package."""
    out = {}
    for p in sorted(pkg.rglob("*.py")):
        parts = list(p.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` (any depth), except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """Module → the package modules it imports (``from . import x`` counts as importing ``x``).

    Edges to the module's own parent packages are left out: Python has imported them before the module.
    """
    mods = _modules(pkg)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in mods}
                continue
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets |= {m for m in [mod, *(f"{mod}.{a.name}" for a in node.names)] if m in mods}
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = targets - {name} - ancestors
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (c := dfs(w)):
                return c
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (c := dfs(v)):
            return c
    return None


def test_the_walker_sees_the_package():
    g = import_graph()
    assert len(g) > 20 and "qparse_lite.model.mcnn" in g and "qparse_lite.commands.train" in g
    # a function-level import is an edge: summary.receptive_fields imports receptive inside the function
    assert "qparse_lite.model.receptive" in g["qparse_lite.model.summary"]
    assert "qparse_lite.data.synthetic" in g["qparse_lite.data.datasets"]


def test_find_cycle_finds_a_function_level_cycle(tmp_path):
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n")
    (pkg / "d.py").write_text("import pkgx.c\n")
    g = import_graph(pkg)
    assert g["pkgx.a"] == {"pkgx.b"} and g["pkgx.b"] == {"pkgx.a"}
    assert g["pkgx.c"] == set()  # TYPE_CHECKING imports never run: no edge
    assert g["pkgx.d"] == {"pkgx.c"}
    assert find_cycle(g) in (["pkgx.a", "pkgx.b", "pkgx.a"], ["pkgx.b", "pkgx.a", "pkgx.b"])
    del g["pkgx.b"]
    assert find_cycle(g) is None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# The pipeline, in paper order: a stage imports only the shared utilities (the package's top-level modules),
# its own stage and earlier stages. viz draws what parse produces; baselines are parsers scored by evaluation;
# match_rcnn is the second matching system; pipeline runs the notebooks; commands are the CLI over all of it.
STAGES = ("data", "retrieval", "model", "train", "parse", "viz", "baselines", "evaluation", "match_rcnn",
          "pipeline", "commands")  # fmt: skip
SHARED = ("errors", "io", "runinfo", "profiles", "labels", "metrics", "backbones")
TOP = ("cli", "__main__")


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "qparse_lite"


def test_the_package_is_laid_out_by_stage():
    """Every module lives in a stage folder, or is a shared utility, or is the CLI entry point."""
    stray = [m for m in _modules() if _stage(m) not in (*STAGES, *SHARED, *TOP, "qparse_lite")]
    assert stray == []
    assert {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(STAGES)


def test_a_stage_imports_only_earlier_stages_and_the_shared_utilities():
    rank = {s: i for i, s in enumerate(STAGES)}
    bad = []
    for mod, deps in import_graph().items():
        s = _stage(mod)
        for d in deps:
            t = _stage(d)
            if t == "qparse_lite" or s in TOP:
                continue
            if s in SHARED or s == "qparse_lite":
                ok = t in SHARED
            else:
                ok = t in SHARED or rank[t] <= rank[s]
            if not ok:
                bad.append(f"{mod} -> {d}")
    assert bad == []


def test_no_module_is_over_600_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}
