"""A benchmark harness for drop-in normalization layers (``CustomNorm``) in PyTorch.

Public API for notebooks and scripts::

    import harness
    CustomNorm = harness.load_submission("submissions/my_norm.py")
    model = harness.build_model("resnet56", 100, CustomNorm)

    from harness import results
    runs = results.load("results")        # every run record as a pandas DataFrame

The version lives here and nowhere else (pyproject.toml reads it). The API is imported on first
use, so that ``import harness`` (and ``harness --help``) does not import torch.
"""

__version__ = "0.3.1"

__all__ = ["__version__", "build_model", "load_submission"]


def __getattr__(name: str):
    if name == "build_model":
        from harness.models import build_model

        return build_model
    if name == "load_submission":
        from harness.vetting.submission import load_submission

        return load_submission
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
