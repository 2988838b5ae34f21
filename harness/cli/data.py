"""``harness data list | verify | import | download``: which datasets this machine has, where,
whether they are the published files, and how to get the others (harness.data.files)."""

from __future__ import annotations

import json

import click

from harness.cli.common import CONTEXT, EXIT_FAILED, EXIT_USAGE, Command, fail, json_option, output_options
from harness.protocol.catalog import DATASETS
from harness.reporting import ConsoleReporter

DATA_ROOT_HELP = ("Data root searched first, and where import and download write. Default: "
                  "$HARNESS_DATA, else ~/.cache/harness/data. The system's dataset folders "
                  "(/usr/share/datasets/...) are searched after it.")


def data_root_option(fn: Command) -> Command:
    return click.option("--data-root", type=click.Path(file_okay=False, path_type=str), default=None,
                        help=DATA_ROOT_HELP)(fn)


def _names(names: tuple[str, ...]) -> list[str]:
    from harness.protocol.catalog import DATASETS, resolve_dataset_name

    try:
        return [resolve_dataset_name(n) for n in names] or list(DATASETS)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n else ""


@click.group("data", context_settings=CONTEXT)
def data_group() -> None:
    """Datasets on this machine: list, verify, import, download.

    \b
    Datasets are found where they are, in their published forms: the MNIST family's IDX files
    (gzipped or not, flat or in torchvision's NAME/raw/), CIFAR's cifar-*-python.tar.gz or its
    folder, under --data-root, $HARNESS_DATA, ~/.cache/harness/data and the system's dataset
    folders (Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist). Each
    file is checked against the md5 of the published file's content.
    """


@data_group.command("list", context_settings=CONTEXT)
@data_root_option
@json_option("Print one object per dataset as JSON.")
@output_options
def data_list_cmd(data_root: str | None, as_json: bool, console: ConsoleReporter) -> None:
    """Every dataset: present or missing, where, verified, size, and how to get it."""
    from harness.data import files as datafiles

    rows = [datafiles.status(n, data_root) for n in _names(())]
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if k != "files"} for r in rows], indent=2))
        return
    width = max(len(r["dataset"]) for r in rows)
    for r in rows:
        if r["present"]:
            check = {True: "verified", False: "found (no published checksum)",
                     None: "built in"}[r["verified"]]
            click.echo(f"{r['dataset']:<{width}}  {check:<8}  {_size(r['bytes']):>10}  {r['where']}")
        else:
            click.echo(f"{r['dataset']:<{width}}  missing   {'':>10}  get: {'; or '.join(r['get'])}")
        for problem in r["problems"]:
            click.echo(f"{'':<{width}}  note: {problem}")


@data_group.command("verify", context_settings=CONTEXT)
@click.argument("names", nargs=-1)
@data_root_option
@json_option("Print one object per copy found as JSON.")
@output_options
def data_verify_cmd(names: tuple[str, ...], data_root: str | None, as_json: bool,
                    console: ConsoleReporter) -> None:
    """Check every copy found of NAMES (default: all) against the published files.

    Exit 1 when a copy is not the published files, or when a dataset named is missing.
    """
    from harness.data import files as datafiles

    rows, bad = [], False
    for name in _names(names):
        if DATASETS[name].built_in:
            continue
        copies, partial = datafiles.find_copies(name, data_root)
        intact = 0
        for copy in copies:
            try:
                v = datafiles.verify(copy)
                rows.append({"dataset": name, "where": copy.describe(), "ok": True,
                             "verified": v.verified, "files": v.files})
                intact += 1
            except datafiles.OtherDataset as exc:  # MNIST's layout matches Fashion-MNIST's names
                rows.append({"dataset": name, "where": copy.describe(), "ok": None, "problem": str(exc)})
            except datafiles.DataProblem as exc:
                rows.append({"dataset": name, "where": copy.describe(), "ok": False, "problem": str(exc)})
                bad = True
        rows += [{"dataset": name, "where": None, "ok": None, "problem": p} for p in partial]
        if not intact and names:  # a dataset asked for by name must be here, intact
            rows.append({"dataset": name, "where": None, "ok": False,
                         "problem": datafiles.missing_message(name, data_root, partial)})
            bad = True
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if r["ok"]:
                state = "ok (verified)" if r["verified"] else "ok (found; no published checksum)"
                click.echo(f"{r['dataset']}: {state}  {r['where']}")
            elif r["ok"] is None:
                click.echo(f"{r['dataset']}: note: {r['problem']}")
            else:
                click.echo(f"{r['dataset']}: FAILED: {r['problem']}")
        if not rows:
            console.info("no dataset files found (harness data list says how to get them)")
    if bad:
        raise SystemExit(EXIT_FAILED)


def _report_imports(rows: list[dict], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    for r in rows:
        if as_json:
            break
        if "error" in r:
            click.echo(f"{r['dataset']}: not imported: {r['error']}", err=True)
        elif r["already"]:
            click.echo(f"{r['dataset']}: already in {r['to']} (verified), nothing written")
        else:
            state = "verified" if r["verified"] else "no published checksum"
            click.echo(f"{r['dataset']}: {len(r['written'])} file(s) into {r['to']} ({state})")
    if any("error" in r for r in rows):
        raise SystemExit(EXIT_FAILED)


@data_group.command("import", context_settings=CONTEXT)
@click.argument("path", type=click.Path(path_type=str))
@data_root_option
@json_option("Print one object per dataset imported as JSON.")
@output_options
def data_import_cmd(path: str, data_root: str | None, as_json: bool, console: ConsoleReporter) -> None:
    """Copy the dataset(s) at PATH into the data root, verified first.

    PATH: a downloaded archive (cifar-10-python.tar.gz, cifar-100-python.tar.gz,
    aclImdb_v1.tar.gz, tiny-imagenet-200.zip), a folder holding a dataset's files in any layout
    `harness data list` recognises, or one of those files (its folder is imported). Files that
    are not the published ones are refused with both hashes, and nothing of them is written.
    """
    from harness.data import files as datafiles
    from harness.data import install as dataimport

    try:
        rows = dataimport.import_path(path, data_root)
    except (datafiles.DataProblem, OSError) as exc:
        fail(str(exc))
    _report_imports(rows, as_json)


@data_group.command("download", context_settings=CONTEXT)
@click.argument("name")
@data_root_option
@json_option("Print one object per dataset imported as JSON.")
@output_options
def data_download_cmd(name: str, data_root: str | None, as_json: bool, console: ConsoleReporter) -> None:
    """Download NAME from its published address into the data root, verified.

    The files go to a temporary folder first: a failed download leaves no trace in the data root.
    """
    from harness.data import files as datafiles
    from harness.data import install as dataimport

    [name] = _names((name,))
    if DATASETS[name].built_in:
        fail(f"{name} needs no files: {DATASETS[name].built_in}", EXIT_USAGE)
    try:
        rows = dataimport.download(name, data_root, say=console.info)
    except (datafiles.DataProblem, OSError) as exc:
        fail(f"{name}: {exc}. Other ways: {'; or '.join(datafiles.PUBLISHED[name].how_to_get())}")
    _report_imports(rows, as_json)
