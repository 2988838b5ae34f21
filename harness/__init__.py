"""A benchmark harness for drop-in normalization layers (``CustomNorm``) in PyTorch.

Public API for notebooks and scripts::

    import harness
    CustomNorm = harness.load_submission("submissions/my_norm.py")
    model = harness.build_model("resnet56", 100, CustomNorm)
"""

__version__ = "0.1.0"

from harness.protocol.models import build_model  # noqa: E402
from harness.vetting.submission import load_submission  # noqa: E402

__all__ = ["__version__", "build_model", "load_submission"]
