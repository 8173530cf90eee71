"""The curation commands: rename, merge and split identities, the log of what was curated, and
export (parse, one library call, print)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kenning.cli import options as o
from kenning.cli.app import app
from kenning.errors import one_line, warn

CuratedIndex = Annotated[Path, typer.Option(help="Index directory to curate.")]
OldLabel = Annotated[str, typer.Option("--label", help="The identity's current label.")]
MergedLabels = Annotated[list[str], typer.Option("--label", help="An identity to merge (two or more).")]
Into = Annotated[str, typer.Option(help="The label the images carry afterwards.")]
MovedIds = Annotated[list[str], typer.Option("--id", "--ids", help="Image id to move (repeatable).")]
if TYPE_CHECKING:
    from kenning.index.curation import Curated

ExportOut = Annotated[Path, typer.Option(help="Folder to export into (new, empty, or an earlier export).")]


def _done(result: Curated) -> None:
    where = "an existing identity" if result.joined_existing else "the identity"
    typer.echo(
        one_line(
            f"{result.operation}: {result.images} image(s) of {', '.join(map(repr, result.labels))} are now "
            f"{where} {result.into!r}; the index holds {result.count} images"
        )
    )


@app.command()
def rename(index: CuratedIndex, label: OldLabel, to: Annotated[str, typer.Option(help="New label.")]) -> None:
    """Rename an identity (one commit; image ids and calibrations stay)."""
    from kenning.index.curation import rename as rename_identity

    _done(rename_identity(index, label, to))


@app.command()
def merge(index: CuratedIndex, label: MergedLabels, into: Into) -> None:
    """Merge identities that are one individual into one label (one of theirs, or a new one)."""
    from kenning.index.curation import merge as merge_identities

    _done(merge_identities(index, label, into))


@app.command()
def split(index: CuratedIndex, label: OldLabel, image_id: MovedIds, into: Into) -> None:
    """Move some images of an identity (by image id) to another identity, new or existing."""
    from kenning.index.curation import split as split_identity

    _done(split_identity(index, label, image_id, into))


@app.command()
def history(index: o.Index) -> None:
    """What was curated since the index was built: one line per rename, merge, split or forget."""
    from kenning.index.history import read_history

    lines = read_history(index)
    if not lines:
        typer.echo(f"nothing curated in {index} since it was built")
    for line in lines:
        into = f" -> {line['into']!r}" if "into" in line else ""
        ids = f" (ids: {', '.join(line['image_ids'])})" if line.get("image_ids") else ""
        labels = "".join(f" {label!r}," for label in line["labels"]).rstrip(",")
        typer.echo(one_line(f"{line['time']}  {line['operation']}{labels}{into}: {line['images']} image(s){ids}"))


@app.command()
def export(index: o.Index, out: ExportOut, quiet: o.Quiet = False) -> None:
    """One folder per identity with its photos, catalogue.csv and index.html: a catalogue to browse,
    and to rebuild elsewhere with `build-index --data OUT`."""
    from kenning.export import export_catalogue

    done = export_catalogue(index, out, progress=not quiet)
    typer.echo(f"exported {done.photos} photo(s) of {done.identities} identities to {out} (open {out / 'index.html'})")
    if done.missing:
        shown = ", ".join(done.missing[:10]) + (f" and {len(done.missing) - 10} more" if len(done.missing) > 10 else "")
        warn(f"{len(done.missing)} photo(s) are no longer where they were indexed and are listed without one: {shown}")
