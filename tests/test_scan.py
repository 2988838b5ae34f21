"""The static scan: what it refuses (with the line), and what a real norm layer may do."""

from __future__ import annotations

import pytest

from conftest import ROOT
from harness.scan import scan_file, scan_source


def lines(source: str) -> list[tuple[int, str]]:
    return [(f.line, f.what.split(" (")[0]) for f in scan_source(source)]


@pytest.mark.parametrize("source, expected", [
    ("import os\n", [(1, "imports os")]),
    ("import os.path as p\n", [(1, "imports os.path")]),
    ("from subprocess import run\n", [(1, "imports from subprocess")]),
    ("import torch\nfrom torch import hub\n", [(2, "imports torch.hub")]),
    ("import torch.utils.cpp_extension\n", [(1, "imports torch.utils.cpp_extension")]),
    ("from . import x\n", [(1, "relative import")]),
    ("import harness.train\n", [(1, "imports harness.train")]),
    ("x = 1\nopen('f')\n", [(2, "uses open")]),
    ("exec('1')\n", [(1, "uses exec")]),
    ("__import__('os')\n", [(1, "uses __import__")]),
    ("import torch\ntorch.os.system('ls')\n", [(2, "uses the attribute .os")]),
    ("import torch\ntorch.load('w.pt')\n", [(2, "uses the attribute .load")]),
    ("x = ().__class__.__base__.__subclasses__()\n", [(1, "uses the attribute .__subclasses__")]),
    ("import torch\ngetattr(torch, 'o' + 's')\n", [(2, "getattr on something other than self")]),
    ("import torch.nn.functional as F\nF.cross_entropy = None\n", [(2, "assigns to an attribute of F")]),
    ("import torch\ntorch.nn.Module.__call__ = None\n", [(2, "assigns to an attribute of torch")]),
    ("import torch\nsetattr(torch, 'x', 1)\n", [(2, "setattr on something other than self")]),
    ("import torch\ndel torch.optim\n", [(2, "assigns to an attribute of torch")]),
    ("def g(open=None):\n    pass\nopen('x')\n", [(3, "uses open")]),  # a parameter elsewhere
    ("class A:\n    open = 1\n    def f(self):\n        return open('x')\n", [(4, "uses open")]),
])
def test_refused_with_the_line(source, expected):
    assert lines(source) == expected


@pytest.mark.parametrize("source", [
    "import math\nimport torch\nfrom torch import nn\nimport torch.nn.functional as F\n",
    "def forward(self, input):\n    return input * 2\n",  # a parameter called input is not input()
    "class N:\n    def __init__(self):\n        self.weight = 1\n        setattr(self, 'bias', 2)\n",
    "import torch\nx = torch.zeros(3)\nx[0] = 1.0\n",  # item assignment on a local tensor
    "if __name__ == '__main__':\n    import sys, os\n    open('log')\n",  # never runs when imported
    "import torch\ny = torch.compile\n",
])
def test_what_a_norm_layer_does_is_allowed(source):
    assert scan_source(source) == []


def test_every_shipped_layer_passes_the_scan():
    files = [ROOT / "custom_norm.py", *sorted((ROOT / "submissions").glob("*.py")),
             *sorted((ROOT / "baselines").glob("*.py"))]
    assert len(files) >= 6
    assert {str(f): [x.format(f) for x in scan_file(f)] for f in files} == {str(f): [] for f in files}


def test_a_syntax_error_is_left_to_the_loader():
    assert scan_source("def (:\n") == []
