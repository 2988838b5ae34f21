"""The ``harness`` command line (also ``python -m harness``): one module per command group.

:mod:`harness.cli.run` (eval, check, list), :mod:`harness.cli.sweeps` (submit, baselines run,
status), :mod:`harness.cli.study`, :mod:`harness.cli.board` (leaderboard build),
:mod:`harness.cli.bench`, :mod:`harness.cli.data`; what they share (exit codes, options, one-line errors) is in
:mod:`harness.cli.common`. No module here imports torch at import time, so ``--help`` is fast.
"""

from __future__ import annotations

import re

import click

from harness import __version__
from harness.cli.bench import bench_cmd
from harness.cli.board import leaderboard_group
from harness.cli.common import CONTEXT, EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from harness.cli.data import data_group
from harness.cli.listing import list_cmd
from harness.cli.run import check_cmd, eval_cmd
from harness.cli.study import study_group
from harness.cli.sweeps import baselines_group, status_cmd, submit_cmd

__all__ = ["EXIT_DIVERGED", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "main"]


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="harness")
def main() -> None:
    """Benchmark drop-in normalization layers (CustomNorm) under one fixed training protocol.

    A submission is one Python file defining ``CustomNorm(num_features)``, a drop-in for
    ``nn.BatchNorm2d``. The path: `harness check FILE`, `harness eval FILE --arch A --dataset D`
    (one run), `harness submit FILE --name N` (a whole suite), `harness leaderboard build`.

    \b
    Every command: --results DIR is the results folder, --out a generated artefact, --json
    prints JSON, -q/--quiet and -v/--verbose. Exit codes: 0 success, 1 failure, 2 usage error,
    3 a run diverged, 130 interrupted.
    """


for command in (eval_cmd, check_cmd, list_cmd, submit_cmd, baselines_group, status_cmd,
                study_group, leaderboard_group, bench_cmd, data_group):
    main.add_command(command)


def _plain(text: str) -> str:
    """Help as a terminal shows it: the docstrings' ``code`` and `code` marks read as code and 'code'."""
    return re.sub(r"(?<![\w:])`([^`]+)`", r"'\1'", re.sub(r"``([^`]+)``", r"\1", text))


def _plain_help(command: click.Command) -> None:
    command.help = _plain(command.help) if command.help else command.help
    for param in command.params:
        text = getattr(param, "help", None)
        if text:
            param.help = _plain(text)  # type: ignore[attr-defined]  # an Option's, not an Argument's
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


_plain_help(main)
