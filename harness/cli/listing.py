"""``harness list``: tracks, architectures, datasets, baselines and suites, with one-line
descriptions (the catalogue of harness.protocol.catalog, the baselines' files, the suites)."""

from __future__ import annotations

import json

import click

from harness.cli.common import CONTEXT
from harness.protocol.catalog import ARCHITECTURES, DATASET_ALIASES, DATASETS, TRACKS
from harness.protocol.recipe import TRACK_RECIPES
from harness.reporting import plural


@click.command("list", context_settings=CONTEXT)
@click.option("--track", type=click.Choice(list(TRACKS)), default=None,
              help="Only this track's architectures, datasets, baselines and suites.")
@click.option("--json", "as_json", is_flag=True, help="Print the lists as JSON.")
def list_cmd(track: str | None, as_json: bool) -> None:
    """List tracks, architectures, datasets, baselines and suites, with one-line descriptions.

    Grouped by track: cnn (the reference benchmark's CNNs), mlp, rnn and transformer. Each
    track's recipe is shown with it; a dataset is listed under every track that has an
    architecture for its kind of input.
    """
    from dataclasses import asdict

    from harness.protocol.entries import baseline_names, baselines_dir, declared_tracks, describe
    from harness.protocol.suites import all_suites

    tracks = [track] if track else list(TRACKS)
    suites = all_suites()
    baselines = {n: (describe(baselines_dir() / f"{n}.py"),
                     declared_tracks(baselines_dir() / f"{n}.py")) for n in baseline_names()}

    def datasets_of(t: str) -> list[str]:
        kinds = {k for a in ARCHITECTURES.values() if a.track == t for k in a.takes}
        return [d.name for d in DATASETS.values() if d.kind in kinds]

    if as_json:  # every thing once, as before tracks existed; "tracks" names what each holds
        archs = [a for a in ARCHITECTURES.values() if a.track in tracks]
        names = [n for n in DATASETS if any(n in datasets_of(t) for t in tracks)]
        click.echo(json.dumps({
            "architectures": {a.name: {"description": a.description, "in_reference": a.in_reference,
                                       "track": a.track, "takes": list(a.takes)} for a in archs},
            "datasets": {n: {"description": DATASETS[n].description, "kind": DATASETS[n].kind,
                             "classes": DATASETS[n].num_classes,
                             "in_reference": DATASETS[n].in_reference} for n in names},
            "baselines": {n: d for n, (d, ts) in baselines.items() if set(ts) & set(tracks)},
            "suites": {s.name: {"track": s.track, "version": s.version, "description": s.description,
                                "settings": {x.key: "hidden" if x.hidden else "public"
                                             for x in s.settings}, "seeds": list(s.seeds)}
                       for s in suites if s.track in tracks},
            "tracks": {t: {"description": TRACKS[t].description, "layout": TRACKS[t].layout,
                           "recipe": asdict(TRACK_RECIPES[t]),
                           "architectures": [a.name for a in archs if a.track == t],
                           "datasets": datasets_of(t),
                           "baselines": [n for n, (_, ts) in baselines.items() if t in ts],
                           "suites": [s.name for s in suites if s.track == t]} for t in tracks}},
            indent=2))
        return
    # One column for every name of the listing, however long, so that descriptions line up.
    w = 2 + max(len(n) for n in [*ARCHITECTURES, *DATASETS, *baselines, *(s.name for s in suites)])
    for i, t in enumerate(tracks):
        info, recipe = TRACKS[t], TRACK_RECIPES[t]
        click.echo(("\n" if i else "") + click.style(f"Track {t}", bold=True)
                   + f": {info.description}; a norm sees {info.layout}")
        click.echo(f"  recipe: {recipe.optimizer} lr {recipe.lr:g}, weight decay "
                   f"{recipe.weight_decay:g}, {recipe.schedule}, batch {recipe.batch_size}, "
                   f"{plural(recipe.epochs, 'epoch')}"
                   + (f", warm-up {recipe.warmup_epochs}" if recipe.warmup_epochs else "")
                   + (f", label smoothing {recipe.label_smoothing:g}" if recipe.label_smoothing else "")
                   + (f", clip {recipe.grad_clip:g}" if recipe.grad_clip else ""))
        click.echo("  Architectures (--arch):")
        for spec in ARCHITECTURES.values():
            if spec.track == t:
                click.echo(f"    {spec.name:<{w}}{spec.description}")
        click.echo("  Datasets (--dataset):")
        for name in datasets_of(t):
            aliases = [a for a, target in DATASET_ALIASES.items() if target == name]
            extra = f" (alias: {', '.join(aliases)})" if aliases else ""
            click.echo(f"    {name:<{w}}{DATASETS[name].description}{extra}")
        click.echo(f"  Baselines (a name works wherever a submission path does; {baselines_dir()}):")
        for name, (description, ts) in baselines.items():
            if t in ts:
                click.echo(f"    {name:<{w}}{description}")
        click.echo("  Suites (--suite):")
        for suite in suites:
            if suite.track != t:
                continue
            click.echo(f"    {suite.name:<{w}}v{suite.version}: {suite.description}")
            for setting in suite.settings:
                click.echo(f"    {'':<{w}}  {setting.key:<24} {'hidden' if setting.hidden else 'public'}")
