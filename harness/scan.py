"""Static scan: refuse a submission that reaches for what a norm layer has no business with.

A normalization layer needs tensors and arithmetic. It does not need the operating system, the
interpreter's internals, files, the network, other processes, the harness, or to rewrite other
modules' attributes. The scan reads the file's syntax tree (nothing is executed) and reports each
such use with its line. It is a first line of defence that makes accidents and casual cheating
visible; it is not a proof of safety (Python is too dynamic for that), which is why untrusted runs
are also sandboxed (harness.sandbox) and tamper-checked (harness.tamper).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

# Module (or package) -> why a norm layer must not import it.
FORBIDDEN_MODULES = {
    **dict.fromkeys(("os", "posix", "nt", "pathlib", "shutil", "tempfile", "glob", "fnmatch", "io",
                     "fileinput", "mmap", "fcntl", "pwd", "grp", "resource", "platform"),
                    "the file system or the operating system"),
    **dict.fromkeys(("sys", "builtins", "importlib", "imp", "pkgutil", "zipimport", "runpy", "site",
                     "sysconfig", "inspect", "gc", "ctypes", "cffi", "code", "codeop", "marshal",
                     "pickle", "dill", "cloudpickle", "shelve", "atexit", "traceback", "types",
                     "_thread", "threading", "signal", "faulthandler"),
                    "the interpreter's internals"),
    **dict.fromkeys(("subprocess", "multiprocessing", "concurrent", "pty", "asyncio"),
                    "other processes"),
    **dict.fromkeys(("socket", "ssl", "select", "selectors", "http", "urllib", "urllib3", "requests",
                     "ftplib", "smtplib", "telnetlib", "xmlrpc", "webbrowser", "email"),
                    "the network"),
    "harness": "the harness itself",
    "torch.hub": "downloading code", "torch.utils.cpp_extension": "compiling native code",
    "torch.multiprocessing": "other processes", "torch.distributed": "the network",
    "torch._C": "torch's internals", "torch._dynamo": "torch's internals",
}

# Built-in names that execute code, reach the interpreter's state or open files.
FORBIDDEN_NAMES = {
    "open": "opens files", "exec": "executes code", "eval": "evaluates code",
    "compile": "compiles code", "__import__": "imports dynamically", "globals": "reaches module state",
    "locals": "reaches frame state", "vars": "reaches module state", "breakpoint": "starts a debugger",
    "input": "reads the terminal", "__builtins__": "reaches the builtins", "memoryview": "reads raw memory",
}

# Attributes that lead out of tensor arithmetic: to modules (torch.os), frames, code objects, or
# file I/O (torch.load, numpy.fromfile, ...).
FORBIDDEN_ATTRIBUTES = {
    **dict.fromkeys(("os", "sys", "subprocess", "socket", "builtins", "importlib", "ctypes", "_C",
                     "hub", "cpp_extension", "multiprocessing", "distributed"), "a forbidden module"),
    **dict.fromkeys(("__subclasses__", "__globals__", "__builtins__", "__code__", "__closure__",
                     "__import__", "__loader__", "__spec__", "__getattribute__", "f_globals",
                     "f_locals", "f_builtins", "f_back", "gi_frame", "cr_frame", "tb_frame",
                     "_getframe", "__reduce__", "__reduce_ex__", "__setattr__", "__delattr__"),
                    "the interpreter's internals"),
    **dict.fromkeys(("load", "save", "fromfile", "tofile", "from_file", "loadtxt", "savetxt",
                     "genfromtxt", "memmap", "load_library", "load_inline", "open"), "file I/O"),
}

DYNAMIC_ATTRIBUTE = ("getattr", "setattr", "delattr")


@dataclass(frozen=True)
class Finding:
    line: int
    what: str

    def format(self, path: str | Path) -> str:
        return f"{path}:{self.line}: {self.what}"


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def _module_reason(name: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        reason = FORBIDDEN_MODULES.get(".".join(parts[:i]))
        if reason:
            return reason
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, imported: set[str], module_names: set[str]):
        self.imported = imported  # names bound by import statements: modules, or things in them
        # Names bound in each enclosing scope, innermost last ("class" scopes are not seen from
        # the methods inside them, as in Python): a parameter called input is not input().
        self.scopes: list[tuple[str, set[str]]] = [("module", module_names)]
        self.findings: list[Finding] = []

    def _visible(self, name: str) -> bool:
        kind, names = self.scopes[-1]
        if name in names:
            return True
        return any(name in names for kind, names in self.scopes[:-1] if kind != "class")

    def _scoped(self, node: ast.AST, kind: str, names: set[str]) -> None:
        self.scopes.append((kind, names))
        self.generic_visit(node)
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        args = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        self._scoped(node, "function", args | _bound_in(node))

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scoped(node, "function", {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)})

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, "class", _bound_in(node))

    def add(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            reason = _module_reason(alias.name)
            if reason:
                self.add(node, f"imports {alias.name} ({reason})")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.add(node, "relative import (a submission is one self-contained file)")
            return
        base = node.module or ""
        reason = _module_reason(base)
        if reason:
            self.add(node, f"imports from {base} ({reason})")
            return
        for alias in node.names:
            reason = _module_reason(f"{base}.{alias.name}")
            if reason:
                self.add(node, f"imports {base}.{alias.name} ({reason})")

    def visit_Name(self, node: ast.Name) -> None:
        if (isinstance(node.ctx, ast.Load) and node.id in FORBIDDEN_NAMES
                and node.id not in self.imported and not self._visible(node.id)):
            self.add(node, f"uses {node.id} ({FORBIDDEN_NAMES[node.id]})")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in FORBIDDEN_ATTRIBUTES:
            self.add(node, f"uses the attribute .{node.attr} ({FORBIDDEN_ATTRIBUTES[node.attr]})")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in DYNAMIC_ATTRIBUTE and node.args:
            target = _root(node.args[0])
            if not (isinstance(target, ast.Name) and target.id == "self"):
                self.add(node, f"{func.id} on something other than self (dynamic attribute access "
                               "can reach any module)")
        self.generic_visit(node)

    def _check_target(self, target: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._check_target(t)
            return
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            root = _root(target)
            if isinstance(root, ast.Name) and root.id in self.imported:
                self.add(target, f"assigns to an attribute of {root.id} (monkeypatching what it "
                                 "imported)")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_target(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_target(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._check_target(target)
        self.generic_visit(node)


def _bound_in(scope: ast.AST) -> set[str]:
    """Names a module, class or function body binds itself (not those of scopes nested in it)."""
    names: set[str] = set()
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue  # its body is its own scope
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return names


def _is_main_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    sides = [test.left, *test.comparators]
    return (len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and any(isinstance(n, ast.Name) and n.id == "__name__" for n in sides)
            and any(isinstance(n, ast.Constant) and n.value == "__main__" for n in sides))


def scan_source(source: str, filename: str = "<submission>") -> list[Finding]:
    """Every forbidden use in ``source``, in line order. A syntax error is left to the loader."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:
        return []
    # The file is imported, never run as a script: its ``if __name__ == "__main__":`` block never
    # runs under the harness (harness.submission), so it is not scanned.
    tree.body = [node for node in tree.body if not _is_main_block(node)]
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
    scanner = _Scanner(imported, _bound_in(tree))
    scanner.visit(tree)
    return sorted(scanner.findings, key=lambda f: f.line)


def scan_file(path: str | Path) -> list[Finding]:
    return scan_source(Path(path).read_text(encoding="utf-8", errors="replace"), str(path))
