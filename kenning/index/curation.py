"""Curating a catalogue's identities: rename one, merge several into one, split photos off into
another. Each is one commit under the index's lock (files.py), so a kill or a concurrent enrolment
sees all of it or none. Only labels change: image ids, vectors and local features (stored by image
id) stay, and so do calibrations (thresholds and fusion never depend on what a label is called).
Every label and id named must be live: a typo changes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kenning.errors import KenningError
from kenning.index.files import commit_changes, complete_table, locked_manifest, read_delta, read_ids, writer_lock
from kenning.index.history import event
from kenning.labels import check_enrol_label, check_label


@dataclass
class Curated:
    """What a curation did."""

    operation: str  # rename, merge, split
    labels: list[str]  # the identities it was given
    into: str  # the label their images carry now
    images: int  # images relabelled
    joined_existing: bool  # `into` was already an identity (split into an existing one)
    count: int  # images the index holds (unchanged)


def rename(directory: str | Path, label: str, to: str) -> Curated:
    """`label` becomes `to`, a name no live identity has (joining two identities is `merge`)."""
    with _changing_nothing_on_refusal():
        label = check_label(label, "--label")
        return _relabel(directory, "rename", [label], to, lambda live: (live["label"] == label).to_numpy())


def merge(directory: str | Path, labels: Sequence[str], into: str) -> Curated:
    """Every image of `labels` (two or more) is labelled `into`: one of them, or a new name."""
    with _changing_nothing_on_refusal():
        labels = list(dict.fromkeys(check_label(x, "--label") for x in labels))
        if len(labels) < 2:
            raise KenningError("merge needs two or more different --label")
        return _relabel(directory, "merge", labels, into, lambda live: live["label"].isin(labels).to_numpy())


def split(directory: str | Path, label: str, image_ids: Sequence[str], into: str) -> Curated:
    """The images `image_ids` of `label` move to `into` (a new identity, or an existing one); the
    rest of `label` stays."""
    image_ids = list(dict.fromkeys(image_ids))

    def chosen(live: pd.DataFrame) -> np.ndarray:
        mine = live[live["label"] == label]
        others = [i for i in image_ids if not (mine["image_id"] == i).any()]
        if others:
            shown = ", ".join(repr(i) for i in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise KenningError(f"no image {shown} of {label!r} in the index")
        return ((live["label"] == label) & live["image_id"].isin(image_ids)).to_numpy()

    with _changing_nothing_on_refusal():
        label = check_label(label, "--label")
        if not image_ids:
            raise KenningError("split needs the --id of each image to move")
        return _relabel(directory, "split", [label], into, chosen, image_ids=image_ids)


@contextmanager
def _changing_nothing_on_refusal() -> Iterator[None]:
    """Every refusal happens before the commit (the manifest's rename), so it says that nothing changed."""
    try:
        yield
    except KenningError as exc:
        raise KenningError(f"{exc}; nothing was changed") from None


def _relabel(
    directory: str | Path,
    operation: str,
    labels: list[str],
    into: str,
    choose: Callable[[pd.DataFrame], np.ndarray],
    **details: object,
) -> Curated:
    """Label the live images `choose(live table)` selects `into`, in one commit, after checking
    that every label given is live and that `into` may take them."""
    directory = Path(directory)
    with writer_lock(directory):
        manifest = locked_manifest(directory)
        into = check_enrol_label(into, manifest.unknown_label, "--into" if operation != "rename" else "--to")
        base = pd.read_parquet(directory / manifest.base_table, columns=["id", "image_id", "label"])
        delta = read_delta(directory, manifest)
        live_base = ~base["id"].isin(read_ids(directory / manifest.removed_file)).to_numpy()
        live = pd.concat([base[live_base], delta.table], ignore_index=True)
        named = live["label"].isin([*labels, into])  # vectorised: a set of a million Arrow strings takes a second
        present = set(live["label"][named].unique())
        absent = [x for x in labels if x not in present]
        if absent:
            raise KenningError(f"no label {', '.join(map(repr, absent))} in index {directory}")
        _check_into(operation, labels, into, into in present)
        hit = choose(live)
        moved = live["id"].to_numpy(np.int64)[hit]
        base_table = None  # rewritten only when one of its images changes (it is most of the catalogue)
        if base["id"].isin(moved).any():
            base_table = complete_table(pd.read_parquet(directory / manifest.base_table))
            base_table = base_table.assign(label=np.where(base_table["id"].isin(moved), into, base_table["label"]))
        rows = delta.table
        relabelled = rows.assign(label=np.where(rows["id"].isin(moved), into, rows["label"]))
        delta = dataclasses.replace(delta, table=relabelled)
        line = event(operation, labels, int(hit.sum()), into=into, **details)
        commit_changes(directory, manifest, delta, None, base_table=base_table, event=line)
    return Curated(operation, labels, into, int(hit.sum()), into in present and into not in labels, manifest.count)


def _check_into(operation: str, labels: list[str], into: str, exists: bool) -> None:
    """A rename never joins an identity (merge does, by name); a merge joins only those it names."""
    if operation == "split" and into == labels[0]:
        raise KenningError(f"split --into must name another identity than {into!r}")
    if operation == "rename" and into == labels[0]:
        raise KenningError(f"{into!r} is already called {into!r}")
    if operation == "rename" and exists:
        raise KenningError(
            f"identity {into!r} exists: renaming {labels[0]!r} to it would join the two; use merge to do that"
        )
    if operation == "merge" and exists and into not in labels:
        raise KenningError(
            f"identity {into!r} exists and is not among the merged labels: add --label {into!r} to merge it too"
        )
