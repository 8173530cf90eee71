"""What the commands print: results as the lines people read (JSON where asked for)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from kenning.errors import one_line


def training(result: Any, out: Path, curves: str) -> None:
    losses = ", ".join(f"{v:.3f}" for v in result.epoch_losses) or "none (0 epochs)"
    typer.echo(
        f"trained on {result.train_images} images of {len(result.manifest.classes)} identities "
        f"({result.holdout_images} held out for validation and calibration) in {result.seconds:.0f}s; "
        f"loss per epoch: {losses}"
    )
    if result.validation:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.validation.items())
        typer.echo(f"best epoch {result.best_epoch} on held-out identities: {shown}")
    drawn = f" (training curves: {out / curves})" if result.history else ""
    typer.echo(f"model {result.manifest.fingerprint} saved to {out}{drawn}")


def built(index: Any, calibration: Any, out: Path) -> None:
    m = index.manifest
    params = f", {m.search_params}" if m.search_params else ""
    typer.echo(
        f"indexed {len(index)} images of {index.table['label'].nunique()} identities into {out} "
        f"({m.backend} {m.index_type}{params})"
    )
    if m.operating_point:
        point = m.operating_point
        typer.echo(
            f"search settings {point['search_params']}: recall@{point['k']} {point['recall']:.3f} against exact "
            f"search on {point['queries']} gallery vectors (target {point['target']}), {point['qps']:.0f} queries/s"
        )
    if calibration is not None:
        typer.echo(f"unknown threshold {calibration.threshold:.4f} ({calibration.describe()})")
        if calibration.review is not None:
            band = calibration.review
            typer.echo(f"review band {band.sure_new:.4f} to {band.sure_match:.4f}: answers between are flagged")
        if calibration.spread is not None and calibration.spread.low_high is not None:
            low, high = calibration.spread.low_high
            typer.echo(
                f"threshold spread over {len(calibration.spread.thresholds)} draws of the held-out identities: "
                f"{low:.4f} to {high:.4f} (10th-90th percentile)"
            )
    elif m.threshold is not None:
        typer.echo(f"unknown threshold {m.threshold:.4f} (given)")
    else:
        typer.echo(
            "warning: the model has no held-out identities to calibrate on, so unknown is never "
            "answered; pass --threshold to choose one",
            err=True,
        )
    if m.grouping:
        grouping(m.grouping)


def grouping(stored: dict[str, Any]) -> None:
    """What `query --batch --group` will join, as the held-out identities chose it."""
    held_out, link = stored["held_out"], stored["link"]
    joins = "joins nothing (photo by photo was best)" if link is None else f"joins photos linked at {link:.4f} or more"
    typer.echo(
        f"batch grouping {joins}, grouped unknown threshold {stored['threshold']:.4f}: on the held-out identities "
        f"{held_out['queries']} queries in {held_out['groups']} groups, balanced {held_out['balanced']:.3f}, "
        f"false accepts {held_out['far']:.3f}"
    )


def batch(out: Path, fmt: str, rows: int, failed: list[str], groups: int | None) -> None:
    """`query --batch`: the unreadable images, then what was written (and with --group, in how many groups)."""
    errors(failed)
    grouped = "" if groups is None else f", answered in {groups} groups"
    typer.echo(f"wrote {out}: {rows} rows ({fmt} format), {len(failed)} unreadable{grouped}")


def answers(records: list[dict[str, Any]], as_json: bool) -> None:
    """`query`'s answers: JSON (one record per image, answers.py), or a few lines per image."""
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    for r in records:
        if "error" in r:
            typer.echo(f"error: {one_line(r['error'])}", err=True)
            continue
        flag = "  REVIEW: between the sure-new and sure-match thresholds" if r.get("decision") == "review" else ""
        typer.echo(f"{one_line(r['image'])}  (best match {r['score']} {r['best_similarity']:.3f}){flag}")
        for rank, p in enumerate(r["predictions"], start=1):
            if p["confidence"] is None:  # the unknown answer: placed by the threshold, not voted
                typer.echo(f"  {rank}. {p['label']:<30} (labels below come from matches under {r['threshold']:.3f})")
            else:
                typer.echo(f"  {rank}. {p['label']:<30} {p['confidence']:.3f}")
        errors([photo["error"] for photo in r.get("photos", []) if "error" in photo])


def errors(lines: list[str], prefix: str = "") -> None:
    for line in lines:
        typer.echo(f"error: {prefix}{one_line(line)}", err=True)


def scores(values: dict[str, Any]) -> None:
    for key, value in values.items():
        typer.echo(f"{key:<17} {value:.5f}" if isinstance(value, float) else f"{key:<17} {value}")
