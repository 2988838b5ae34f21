"""The static scan, a review aid: what it lists (with the line and a severity), what a real norm
layer may do, and what --scan-policy refuse refuses (nothing by default)."""

from __future__ import annotations

import pytest

from harness.vetting.scan import NOTE, REFUSE, refusing, scan_file, scan_source

from conftest import FIXTURES, ROOT

HOSTILE = ROOT / "tests" / "hostile"


def lines(source: str) -> list[tuple[int, str, str]]:
    return [(f.line, f.what.split(" (")[0].split(";")[0], f.severity) for f in scan_source(source)]


@pytest.mark.parametrize("source, expected", [
    ("import os\nos.listdir('.')\n", [(1, "imports os", REFUSE)]),
    ("import os.path as p\np.exists('x')\n", [(1, "imports os.path", REFUSE)]),
    ("from subprocess import run\nrun(['ls'])\n", [(1, "imports subprocess.run", REFUSE)]),
    ("import torch\nfrom torch import hub\nhub.load('x')\n",
     [(2, "imports torch.hub", REFUSE), (3, "uses hub...load", REFUSE)]),
    ("from . import x\n", [(1, "relative import", REFUSE)]),
    ("import harness.engine.train\nharness.engine.train.score = 1\n",
     [(1, "imports harness.engine.train", REFUSE), (2, "assigns to an attribute of harness", REFUSE)]),
    ("x = 1\nopen('f')\n", [(2, "uses open", REFUSE)]),
    ("exec('1')\n", [(1, "uses exec", REFUSE)]),
    ("import torch\ntorch.os.system('ls')\n", [(2, "uses the attribute .os", REFUSE)]),
    ("import torch\ntorch.load('w.pt')\n", [(2, "uses torch...load", REFUSE)]),
    ("x = ().__class__.__base__.__subclasses__()\n", [(1, "uses the attribute .__subclasses__", REFUSE)]),
    ("import torch.nn.functional as F\nF.cross_entropy = None\n", [(2, "assigns to an attribute of F", REFUSE)]),
    ("import torch\nsetattr(torch, 'x', 1)\n", [(2, "setattr on torch", REFUSE)]),
    ("import torch\ndel torch.optim\n", [(2, "assigns to an attribute of torch", REFUSE)]),
    ("def g(open=None):\n    pass\nopen('x')\n", [(3, "uses open", REFUSE)]),  # a parameter elsewhere
    # What the old scan let through:
    ("ga = getattr\n", [(1, "takes the builtin getattr as a value", REFUSE)]),
    ("from torch import os\nos.getcwd()\n", [(1, "imports os", REFUSE)]),
    ("import torch\nT = torch.Tensor\nT.__eq__ = lambda a, b: True\n",
     [(3, "assigns to an attribute of T", REFUSE)]),
    ("import operator\noperator.attrgetter('__globals__')\n",
     [(2, "operator.attrgetter of .__globals__", REFUSE)]),
    ("from torch.overrides import TorchFunctionMode\nclass M(TorchFunctionMode):\n    pass\n",
     [(1, "imports torch.overrides.TorchFunctionMode", REFUSE)]),
    ("import sys\ntry:\n    1/0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame.f_back\n",
     [(1, "imports sys", NOTE), (5, "uses the attribute .__traceback__", REFUSE),
      (5, "uses the attribute .f_back", REFUSE), (5, "uses the attribute .tb_frame", REFUSE)]),
])
def test_findings_with_the_line_and_severity(source, expected):
    assert lines(source) == expected


@pytest.mark.parametrize("source, expected", [
    # The reference header imports os for its own script: unused by the layer, a note only.
    ("import os\nimport json\nimport time\n", [(1, "imports os", NOTE)]),
    # A computed name on a module: review what it reaches, but nothing to refuse.
    ("import torch.nn.functional as F\ndef act(name):\n    return getattr(F, name)\n"
     "class CustomNorm:\n    f = act('relu')\n", [(3, "getattr with a computed name", NOTE)]),
    ("import operator\ndef g(name):\n    return operator.attrgetter(name)\nclass CustomNorm:\n"
     "    h = g('x')\n", [(3, "operator.attrgetter with a computed name", NOTE)]),
    # Code that only the file's own training script reaches never runs under the harness.
    ("import os\nclass CustomNorm:\n    pass\ndef main():\n    os.makedirs('out')\n    open('x')\n",
     [(1, "imports os", NOTE), (6, "uses open", NOTE)]),
])
def test_notes_are_never_refusals(source, expected):
    assert lines(source) == expected
    assert refusing(scan_source(source)) == []


@pytest.mark.parametrize("source", [
    "import math\nimport torch\nfrom torch import nn\nimport torch.nn.functional as F\n",
    "def forward(self, input):\n    return input * 2\n",  # a parameter called input is not input()
    "class N:\n    def __init__(self):\n        self.weight = 1\n        setattr(self, 'bias', 2)\n",
    "import torch\nx = torch.zeros(3)\nx[0] = 1.0\n",  # item assignment on a local tensor
    "if __name__ == '__main__':\n    import sys, os\n    open('log')\n",  # never runs when imported
    "import torch\ny = torch.compile\n",
    "import types\nns = types.SimpleNamespace(a=1)\n",  # once refused for the module's name alone
    "class CustomNorm:\n    def load(self, w):\n        return w\n    def f(self):\n"
    "        return self.load(1)\n",  # a method of one's own called load is not torch.load
    "import torch.nn.functional as F\nclass CustomNorm:\n    act = getattr(F, 'relu')\n",
])
def test_what_a_norm_layer_does_is_not_listed(source):
    assert scan_source(source) == []


def test_every_shipped_layer_passes_the_scan():
    files = [ROOT / "custom_norm.py", *sorted((ROOT / "submissions").glob("*.py")),
             *sorted((ROOT / "baselines").glob("*.py"))]
    assert len(files) >= 6
    assert {str(f): [x.format(f) for x in scan_file(f)] for f in files} == {str(f): [] for f in files}


def test_the_reference_format_has_notes_and_nothing_to_refuse():
    findings = scan_file(FIXTURES / "reference_format.py")
    assert refusing(findings) == []
    assert [(f.line, f.severity) for f in findings] == [(9, NOTE), (140, NOTE)]  # os; main's open


@pytest.mark.parametrize("name", ["walks_frames", "swaps_scoring", "patches_tensor_eq",
                                  "torch_function_mode", "edits_checkpoint", "io_uring_socket",
                                  "malformed_handover", "leaks_secrets", "result_line"])
def test_the_scan_lists_what_a_reviewer_should_see_in_hostile_files(name):
    assert refusing(scan_file(HOSTILE / f"{name}.py"))


def test_a_syntax_error_is_left_to_the_loader():
    assert scan_source("def (:\n") == []
