"""Static scan: a reviewer's list of what a submission reaches for beyond tensor arithmetic.

A normalization layer needs tensors and arithmetic. It has no business with the operating system,
the interpreter's internals (frames, code objects, builtins), files, the network, other
processes, the harness, torch's global modes and hooks, or rewriting attributes of what it
imported. The scan reads the file's syntax tree (nothing is executed) and lists each such use
with its line.

It is a review aid, not a boundary: Python is too dynamic for a scan to prove anything, which is
why untrusted code runs split and sandboxed (harness.execution.untrusted, harness.execution.sandbox), where what it
reaches for cannot change a score. So by default (``--scan-policy report``) findings are
recorded (check rows, the run record, the entry's page) and nothing is refused. A host may opt
into ``--scan-policy refuse``: then a finding of severity ``refuse`` refuses the file, unless
``--trust-code``.

Severity: ``refuse`` for a use in code the harness runs (the module's top level, which runs at
import, and every function or class that CustomNorm or the top level reaches); ``note`` for the
rest: an import nothing reached uses (the reference benchmark's fixed header imports ``os``,
``json``, ``time`` for its own training script), code only the file's own training script calls,
and dynamic attribute access whose target the scan cannot see (``getattr(F, name)``). The
``if __name__ == "__main__":`` block never runs under the harness and is not scanned.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

# Module (or package) -> why a norm layer must not import it.
FORBIDDEN_MODULES = {
    **dict.fromkeys(("os", "posix", "nt", "pathlib", "shutil", "tempfile", "glob", "fnmatch", "io",
                     "fileinput", "mmap", "fcntl", "pwd", "grp", "resource", "platform"),
                    "the file system or the operating system"),
    **dict.fromkeys(("sys", "builtins", "importlib", "imp", "pkgutil", "zipimport", "runpy", "site",
                     "sysconfig", "inspect", "gc", "ctypes", "cffi", "code", "codeop", "marshal",
                     "pickle", "dill", "cloudpickle", "shelve", "atexit", "traceback",
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
    "torch.overrides": "torch's global function modes",
    "torch.utils._python_dispatch": "torch's global dispatch modes",
}

# Built-in names that execute code, reach the interpreter's state or open files.
FORBIDDEN_NAMES = {
    "open": "opens files", "exec": "executes code", "eval": "evaluates code",
    "compile": "compiles code", "__import__": "imports dynamically", "globals": "reaches module state",
    "locals": "reaches frame state", "vars": "reaches module state", "breakpoint": "starts a debugger",
    "input": "reads the terminal", "__builtins__": "reaches the builtins", "memoryview": "reads raw memory",
}
DYNAMIC = ("getattr", "setattr", "delattr")
DYNAMIC_OPERATOR = ("attrgetter", "methodcaller")

# Attributes that lead out of tensor arithmetic: to modules (torch.os), frames, code objects,
# global hooks and modes.
FORBIDDEN_ATTRIBUTES = {
    **dict.fromkeys(("os", "sys", "subprocess", "socket", "builtins", "importlib", "ctypes", "_C",
                     "hub", "cpp_extension", "multiprocessing", "distributed", "overrides"),
                    "a forbidden module"),
    **dict.fromkeys(("__subclasses__", "__globals__", "__builtins__", "__code__", "__closure__",
                     "__import__", "__loader__", "__spec__", "__getattribute__", "f_globals",
                     "f_locals", "f_builtins", "f_back", "gi_frame", "cr_frame", "tb_frame",
                     "tb_next", "__traceback__", "_getframe", "__reduce__", "__reduce_ex__",
                     "__setattr__", "__delattr__"),
                    "the interpreter's internals"),
    **dict.fromkeys(("register_module_forward_hook", "register_module_forward_pre_hook",
                     "register_module_backward_hook", "register_module_full_backward_hook",
                     "register_module_full_backward_pre_hook", "register_optimizer_step_pre_hook",
                     "register_optimizer_step_post_hook", "TorchFunctionMode", "TorchDispatchMode",
                     "_set_torch_function_mode", "_push_mode"),
                    "a global hook or mode (it sees every module or tensor, the logits included)"),
}
# File I/O, when called on an imported module (torch.load, numpy.fromfile), not on one's own object.
FILE_ATTRIBUTES = ("load", "save", "fromfile", "tofile", "from_file", "loadtxt", "savetxt",
                   "genfromtxt", "memmap", "load_library", "load_inline", "open")

REFUSE, NOTE = "refuse", "note"


@dataclass(frozen=True)
class Finding:
    line: int
    what: str
    severity: str = REFUSE

    def format(self, path: str | Path) -> str:
        return f"{path}:{self.line}: {self.what}" + (" [note]" if self.severity == NOTE else "")

    def to_json(self) -> dict:
        return asdict(self)


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


def _names_loaded(nodes: Iterable[ast.AST]) -> set[str]:
    return {n.id for node in nodes for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


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


def _reached(tree: ast.Module) -> set[int]:
    """ids of the top-level function and class definitions the harness can run: those the
    module's top level or CustomNorm refers to, and those they refer to in turn."""
    defs = {node.name: node for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    top: list[ast.AST] = [n for n in tree.body if n not in defs.values()]
    # What a def statement evaluates at import: decorators, bases, default values.
    for node in defs.values():
        top += node.decorator_list
        if isinstance(node, ast.ClassDef):
            top += node.bases + [k.value for k in node.keywords]
        else:
            top += node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
    todo = (_names_loaded(top) | {"CustomNorm"}) & set(defs)
    reached: set[str] = set()
    while todo:
        name = todo.pop()
        reached.add(name)
        todo |= (_names_loaded([defs[name]]) & set(defs)) - reached
    return {id(defs[name]) for name in reached}


class _Scanner(ast.NodeVisitor):
    def __init__(self, imported: set[str], module_names: set[str], reached: set[int]):
        # Names bound by import statements, or assigned from them (T = torch.Tensor).
        self.imported = imported
        self.reached = reached
        self.scopes: list[tuple[str, set[str]]] = [("module", module_names)]
        self.findings: list[Finding] = []
        self.in_reached = True  # the module's top level runs at import
        self.used: set[str] = set()  # imported names used where the harness runs code

    def _visible(self, name: str) -> bool:
        kind, names = self.scopes[-1]
        if name in names:
            return True
        return any(name in names for kind, names in self.scopes[:-1] if kind != "class")

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef,
                kind: str, names: set[str]) -> None:
        # Decorators, bases and defaults are evaluated where the definition stands; the body
        # runs only if something reached calls it (a class body runs when the class is defined).
        header = [*getattr(node, "decorator_list", []), *getattr(node, "bases", []),
                  *[k.value for k in getattr(node, "keywords", [])]]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            header += [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]
        for child in header:
            self.visit(child)
        outer = self.in_reached
        if len(self.scopes) == 1 and id(node) not in self.reached and not isinstance(node, ast.Lambda):
            self.in_reached = False
        self.scopes.append((kind, names))
        body = node.body if isinstance(node.body, list) else [node.body]
        for child in body:
            self.visit(child)
        self.scopes.pop()
        self.in_reached = outer

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        args = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        self._scoped(node, "function", args | _bound_in(node))

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scoped(node, "function", {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)})

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, "class", _bound_in(node))

    def add(self, node: ast.AST, what: str, severity: str = REFUSE) -> None:
        if not self.in_reached:
            severity, what = NOTE, f"{what}; in code the harness never runs"
        self.findings.append(Finding(getattr(node, "lineno", 0), what, severity))

    def visit_Import(self, node: ast.Import) -> None:
        pass  # judged by use, after the walk (harness.vetting.scan.scan_source)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.add(node, "relative import (a submission is one self-contained file)")

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if self.in_reached:
                self.used.add(node.id)
            if (node.id in FORBIDDEN_NAMES and node.id not in self.imported
                    and not self._visible(node.id)):
                self.add(node, f"uses {node.id} ({FORBIDDEN_NAMES[node.id]})")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in FORBIDDEN_ATTRIBUTES:
            self.add(node, f"uses the attribute .{node.attr} ({FORBIDDEN_ATTRIBUTES[node.attr]})")
        elif node.attr in FILE_ATTRIBUTES:
            root = _root(node.value)
            if isinstance(root, ast.Name) and root.id in self.imported:
                self.add(node, f"uses {root.id}...{node.attr} (file I/O)")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else None)
        if isinstance(func, ast.Name) and name in DYNAMIC and node.args:
            self._dynamic(node, name, node.args[0], node.args[1] if len(node.args) > 1 else None)
        elif name in DYNAMIC_OPERATOR:
            for arg in node.args:
                self._dynamic(node, f"operator.{name}", None, arg)
        self.generic_visit(node)

    def _dynamic(self, node: ast.Call, what: str, target: ast.AST | None, attr: ast.AST | None):
        root = _root(target) if target is not None else None
        if isinstance(root, ast.Name) and root.id == "self":
            return
        if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
            for part in attr.value.split("."):
                if part in FORBIDDEN_ATTRIBUTES:
                    self.add(node, f"{what} of .{part} ({FORBIDDEN_ATTRIBUTES[part]})")
            if what in ("setattr", "delattr") and isinstance(root, ast.Name) and root.id in self.imported:
                self.add(node, f"{what} on {root.id} (monkeypatching what it imported)")
            return
        if what in ("setattr", "delattr"):
            self.add(node, f"{what} with a computed name on something other than self "
                           "(it can rewrite any module)")
        else:
            self.add(node, f"{what} with a computed name (dynamic attribute access: review what "
                           "it reaches)", NOTE)

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
        value = node.value
        if isinstance(value, ast.Name) and value.id in (*DYNAMIC, *FORBIDDEN_NAMES) \
                and not self._visible(value.id):
            self.add(node, f"takes the builtin {value.id} as a value (an alias the scan cannot "
                           "follow)")
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


def _aliases(tree: ast.Module, imported: set[str]) -> set[str]:
    """Names assigned (anywhere) from an imported name's attributes: ``T = torch.Tensor``."""
    out = set(imported)
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Name, ast.Attribute)):
                root = _root(node.value)
                if isinstance(root, ast.Name) and root.id in out:
                    for target in node.targets:
                        if isinstance(target, ast.Name) and target.id not in out:
                            out.add(target.id)
                            changed = True
    return out


def scan_source(source: str, filename: str = "<submission>") -> list[Finding]:
    """Every finding in ``source``, in line order. A syntax error is left to the loader."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:
        return []
    tree.body = [node for node in tree.body if not _is_main_block(node)]
    imports: list[tuple[ast.Import | ast.ImportFrom, str, str]] = []  # (node, bound name, module it names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(node, (a.asname or a.name).split(".")[0], a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            base = node.module or ""
            for a in node.names:
                # `from torch import os` names the module os; `from os import path`, os.path.
                full = a.name if a.name in FORBIDDEN_MODULES else f"{base}.{a.name}"
                imports.append((node, a.asname or a.name,
                                full if _module_reason(full) else base))
    imported = {name for _, name, _ in imports}
    scanner = _Scanner(_aliases(tree, imported), _bound_in(tree), _reached(tree))
    scanner.visit(tree)
    for node, name, module in imports:
        reason = _module_reason(module)
        if not reason:
            continue
        if name in scanner.used:
            scanner.findings.append(Finding(node.lineno, f"imports {module} ({reason})"))
        else:
            scanner.findings.append(Finding(node.lineno, f"imports {module} ({reason}); unused by "
                                                         "the code the harness runs", NOTE))
    return sorted(set(scanner.findings), key=lambda f: (f.line, f.what))


def scan_file(path: str | Path) -> list[Finding]:
    return scan_source(Path(path).read_text(encoding="utf-8", errors="replace"), str(path))


def refusing(findings: list[Finding]) -> list[Finding]:
    """The findings ``--scan-policy refuse`` refuses a file for."""
    return [f for f in findings if f.severity == REFUSE]


def summary(findings: list[Finding], limit: int = 8) -> str:
    """One line: the findings, the refusing ones first."""
    ordered = refusing(findings) + [f for f in findings if f.severity == NOTE]
    listed = "; ".join(f"line {f.line}: {f.what}" + (" [note]" if f.severity == NOTE else "")
                       for f in ordered[:limit])
    return listed + (f" (and {len(ordered) - limit} more)" if len(ordered) > limit else "")
