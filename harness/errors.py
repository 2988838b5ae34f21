"""The errors a user is told about in one line, each with its exit code in the command line
(harness/cli/common.py ``guarded``): nothing here imports the rest of the harness."""

from __future__ import annotations


class SubmissionError(Exception):
    """A submission cannot be used; ``str(err)`` is a one-line explanation for the user.
    ``category`` is what a run record calls it: ``interface``, ``refused`` (static scan) or
    ``tampered``."""

    def __init__(self, message: str, category: str = "interface"):
        super().__init__(message)
        self.category = category


class RunError(Exception):
    """A run cannot start (bad configuration, missing data, unusable device); one line for the user.
    ``category``: ``setup`` (not the layer's fault) or ``interface`` (the layer does not fit)."""

    def __init__(self, message: str, category: str = "setup"):
        super().__init__(message)
        self.category = category


class SuiteError(ValueError):
    """A suite or study that does not exist or does not validate; one line for the user."""
