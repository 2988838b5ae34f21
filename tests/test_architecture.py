"""The shape of the code: no import cycles, packages in layers, modules a newcomer can read,
and a command line whose --help does not import torch (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# Where each importable package lives in the repository (setuptools package-dir in pyproject.toml).
PACKAGE_ROOTS = {"harness": ROOT / "harness", "harness.leaderboard": ROOT / "leaderboard"}
# Lowest first: a module may import from its own layer and those before it, never after.
LAYERS = ["harness.errors", "harness.reporting", "harness.protocol", "harness.data", "harness.models",
          "harness.vetting", "harness.store",
          "harness.engine", "harness.execution", "harness.leaderboard", "harness.results", "harness.bench",
          "harness.cli"]
MAX_LINES = 400
MAX_PARAMETERS = 8  # what a reader holds in mind; more travel folded in one object (docs/architecture.md)


def modules() -> dict[str, Path]:
    out = {}
    for package, root in PACKAGE_ROOTS.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph() -> dict[str, set[str]]:
    """Module -> the harness modules it imports, anywhere in it (inside functions too: a lazy
    import is still a dependency), except under ``if TYPE_CHECKING``."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(tree):
            if _type_checking_only(node, parents):
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in known}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                if base in known:
                    edges.add(base)
                edges |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int | None:
    return next((i for i, name in enumerate(LAYERS)
                 if module == name or module.startswith(name + ".")), None)


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40
    assert "harness.execution.sweep" in graph["harness.cli.sweeps"]  # imports inside functions count
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_packages_import_only_their_own_layer_and_lower_ones():
    wrong = []
    for module, imports in import_graph().items():
        mine = layer(module)
        if mine is None:  # the root facade (harness, harness.__main__) may import anything
            continue
        for target in imports:
            theirs = layer(target)
            if theirs is None:
                if target != "harness":  # the version, from the root
                    wrong.append(f"{module} -> {target}")
            elif theirs > mine:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    count = len(names) + (a.vararg is not None) + (a.kwarg is not None)
    return count - (1 if names and names[0].arg in ("self", "cls") else 0)


def too_many_parameters(source: str) -> list[str]:
    return [f"{n.name} ({_parameters(n)})" for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _parameters(n) > MAX_PARAMETERS]


def test_no_function_takes_more_than_eight_parameters():
    """Options travel as one object (Execution, SweepEntry, Slot, TrainOptions, Bench, ...), not
    one by one; a click command's callback too: its options arrive in groups (cli.common.gathered:
    SweepRequest, EvalSetting, RecipeOverrides, BenchRequest)."""
    assert too_many_parameters("def f(a, b, c, d, e, f, g, h, i): pass") == ["f (9)"]
    assert too_many_parameters("class A:\n    def m(self, a, b, c, d, e, f, g, h): pass") == []
    assert too_many_parameters("@click.command('x')\ndef c(a, b, c, d, e, f, g, h, i): pass") == ["c (9)"]
    wide = {name: found for name, path in modules().items()
            if (found := too_many_parameters(path.read_text(encoding="utf-8")))}
    assert wide == {}


def test_every_module_is_short_enough_to_read():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("argv", [["--help"], ["eval", "--help"], ["submit", "--help"],
                                  ["leaderboard", "build", "--help"], ["--version"]])
def test_help_does_not_import_torch(argv):
    code = ("import sys, runpy; sys.argv = ['harness', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('harness', run_name='__main__')\n"
            "except SystemExit as exc:\n    code = exc.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.stdout.strip().endswith("NO-TORCH 0"), out.stdout + out.stderr


def test_the_store_and_the_board_do_not_import_torch(tmp_path):
    """Reading records needs no torch (harness.protocol.verdict keeps the record-level verdicts
    apart from the scoring): building a board and asking the status stay quick."""
    from harness.store.results import ResultsStore

    from records import make_record

    store = ResultsStore(tmp_path / "results")
    for seed in (0, 1):
        store.add(make_record("a", "1" * 64, "resnet20-digits", seed, 80.0 + seed))
    code = ("import sys, runpy; sys.argv = ['harness', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('harness', run_name='__main__')\n"
            "except SystemExit as exc:\n    code = exc.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    for argv in (["leaderboard", "build", "--results", str(store.root), "--out", str(tmp_path / "site")],
                 ["status", "--results", str(store.root), "--suite", "smoke"]):
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
        assert out.stdout.strip().endswith("NO-TORCH 0"), argv + [out.stdout + out.stderr]


def test_the_build_finds_every_package_of_the_source_tree():
    """The wheel ships the packages setup.py finds: none is listed by hand, so a new package
    cannot be left out (harness.bench once was; the slow wheel test checks the built wheel)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("harness_setup", ROOT / "setup.py")
    setup_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_py)  # its setup() runs only as a script
    found = set()
    for package, root in PACKAGE_ROOTS.items():
        for init in root.rglob("__init__.py"):
            found.add(".".join([package, *init.parent.relative_to(root).parts]))
    found.add("harness.baselines")  # a folder of layer files, shipped as a package
    assert {"harness.bench", "harness.cli", "harness.leaderboard"} <= found
    assert set(setup_py.packages()) == found

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "packages" not in config  # a hand list there would override the discovery
    assert set(config["package-dir"]) == set(setup_py.SHIPPED_FOLDERS)
