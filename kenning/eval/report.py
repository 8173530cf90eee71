"""`kenning eval --report DIR`: metrics.json, predictions.csv, the figures as PNG files, and one
self-contained report.html (figures embedded) that opens anywhere, offline."""

from __future__ import annotations

import base64
import contextlib
import html
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from kenning.atomic import atomic_write_json, atomic_write_text
from kenning.decision.threshold import Calibration, describe_calibration, sweep, threshold_grid
from kenning.eval.evaluate import EvalResult, write_eval
from kenning.eval.plots import (
    MatchRow,
    RetrievalRow,
    plot_foregrounds,
    plot_local_matches,
    plot_per_identity,
    plot_reliability,
    plot_retrieval_grid,
    plot_similarity_histograms,
    plot_threshold_sweep,
)
from kenning.paths import holds_only, require_output_dir

GRID_ROWS = 4  # worst and best queries each in the retrieval grid

CAPTIONS = {
    "threshold_sweep.png": "MAP@5 and GAP if the unknown threshold were elsewhere: solid on these queries, dashed on "
    "the held-out training identities it was chosen on (the chosen point marked). Only the dashed curve chose it.",
    "similarity_histograms.png": "Best-match similarity of queries whose identity is in the gallery (known) and of "
    "those whose is not (unknown). Right of the threshold the answer names an identity.",
    "retrieval_grid.png": "The worst queries (top) and the best (bottom): the query, then its five nearest gallery "
    "images with label and cosine similarity; green when the label is the query's.",
    "per_identity.png": "Top-1 accuracy of each known identity against how many of its images the gallery holds.",
    "reliability.png": "With local matching: for every (query, candidate identity) pair, the probability each "
    "calibrated score and their fusion predict against the observed rate of same-identity pairs (on the "
    "diagonal: calibrated). "
    "The calibrators were fitted on held-out training identities, not on these queries.",
    "foregrounds.png": "With local matching: the grid's queries (top) and their foreground maps (below, dark where "
    "the map is low): the ImageNet classifier's activation map, which decides where local features are kept.",
    "local_matches.png": "With local matching: queries beside the gallery image they matched best locally, lines "
    "between the matched keypoints (green: the same identity, red: another). Why an answer was given.",
}


REPORT_MARKER = ".kenning-report"  # a folder without it holds a user's report.html, however it looks
REPORT_FILES = {"metrics.json", "predictions.csv", "report.html", *CAPTIONS}


def check_report_dir(report: Path | None) -> None:
    """Before a run: the report folder (if any) is new, empty or a report Kenning wrote."""
    if report is not None:
        require_output_dir(report, "report folder", is_report_dir)


def is_report_dir(directory: Path) -> bool:
    """A report `write_report` wrote: its marker, and only the files it writes."""
    return (directory / REPORT_MARKER).is_file() and holds_only(directory, {*REPORT_FILES, REPORT_MARKER})


def write_report(result: EvalResult, out: str | Path, title: str = "Kenning evaluation") -> Path:
    """Write everything into `out` (a new, empty or report folder); returns the path of report.html.
    The report is made in a temporary folder inside `out` and its files moved in when all are
    written: a failure leaves the previous report (or no folder) as it was, never half of a new one."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report.", suffix=".tmp", dir=out))  # a name sweeps recognise
    try:
        _write_report(result, staging, title)
        atomic_write_text(out / REPORT_MARKER, "a Kenning evaluation report: `kenning eval --report` may rewrite it\n")
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # made by this call, inside the report folder
        if created:  # the folder too, with nothing in it that another writer made
            for path in out.iterdir():
                if path.name in REPORT_FILES or path.name == REPORT_MARKER:
                    path.unlink()
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    staging.rmdir()
    return out / "report.html"


def _write_report(result: EvalResult, out: Path, title: str) -> None:
    write_eval(result, out)
    calibration = result.calibration.to_dict() if result.calibration else {}
    calibration.pop("curve", None)
    atomic_write_json(out / "metrics.json", {**result.metrics, "calibration": calibration})
    q = result.per_query
    threshold = result.metrics["threshold"]
    figures = []
    open_set = threshold is not None or not q["known"].all()
    if open_set:
        evaluated = sweep(
            result.ranked,
            q["actual"].tolist(),
            result.unknown_label,
            threshold_grid(q["best_similarity"].to_numpy()),
            q["image_id"].tolist(),
        )
        plot_threshold_sweep(
            [asdict(p) for p in evaluated], _curve(result.calibration), threshold, out / "threshold_sweep.png"
        )
        figures.append("threshold_sweep.png")
    plot_similarity_histograms(
        q["best_similarity"].to_numpy(), q["known"].to_numpy(), threshold, out / "similarity_histograms.png"
    )
    plot_retrieval_grid(_grid_rows(result), out / "retrieval_grid.png")
    plot_per_identity(q, out / "per_identity.png")
    figures += ["similarity_histograms.png", "retrieval_grid.png", "per_identity.png"]
    if result.reliability:
        plot_reliability(result.reliability, out / "reliability.png")
        figures.append("reliability.png")
    if result.foregrounds:
        q = result.per_query.reset_index(drop=True)
        where = {p: i for i, p in enumerate(q["path"])}
        shown = [
            (r.title.splitlines()[0], r.query_path, result.foregrounds[where[r.query_path]]) for r in _grid_rows(result)
        ]
        plot_foregrounds(shown, out / "foregrounds.png")
        figures.append("foregrounds.png")
    match_rows = _match_rows(result)
    if match_rows:
        plot_local_matches(match_rows, out / "local_matches.png")
        figures.append("local_matches.png")
    atomic_write_text(out / "report.html", _html(title, result, figures, out))


def per_viewpoint(per_query: pd.DataFrame) -> dict[str, tuple[int, int, float | None, float | None]]:
    """Queries, known queries and top-1 accuracy on known and on new queries, per viewpoint; empty
    when no query has one (the table is left out)."""
    if "viewpoint" not in per_query or not (per_query["viewpoint"] != "").any():
        return {}
    out = {}
    for view, rows in per_query.groupby("viewpoint", sort=True):
        known, new = rows[rows["known"]], rows[~rows["known"]]
        right = (
            float(known["correct"].mean()) if len(known) else None,
            float(new["correct"].mean()) if len(new) else None,
        )
        out[str(view)] = (len(rows), len(known), *right)
    return out


def _curve(calibration: Calibration | None) -> list[dict] | None:
    """The held-out sweep; None when the threshold was set by hand or calibrated before GAP was swept."""
    return [asdict(p) for p in calibration.curve] if calibration and calibration.curve else None


def _grid_rows(result: EvalResult) -> list[RetrievalRow]:
    """Worst: lowest AP@5, the most confident first; best: known queries answered right, the closest
    first (their neighbours show what the model matches on), then the other highest AP@5."""
    q = result.per_query.reset_index(drop=True)
    ap, best_sim, known = q["ap@5"].to_numpy(), q["best_similarity"].to_numpy(), q["known"].to_numpy()
    n = min(GRID_ROWS, max(len(q) // 2, 1))
    worst = np.lexsort((-best_sim, ap))[:n]
    shown = set(worst)
    best = [i for i in np.lexsort((-best_sim, ~known, -ap)) if i not in shown][:n]
    rows = []
    for name, picks in (("worst", worst), ("best", best)):
        for rank, i in enumerate(picks, start=1):
            answer = q.at[i, "predicted"].split(" ")[0] if q.at[i, "predicted"] else "-"
            rows.append(
                RetrievalRow(
                    title=f"{name} {rank}, answered\n{answer}; truth:",
                    query_path=q.at[i, "path"],
                    actual=q.at[i, "actual"],
                    paths=[p for p in result.neighbour_paths[i] if p],
                    labels=[lab for lab in result.neighbour_labels[i] if lab],
                    similarities=[float(s) for s in result.neighbour_sims[i] if np.isfinite(s)],
                )
            )
    return rows


def _match_rows(result: EvalResult) -> list[MatchRow]:
    """The grid's queries again (worst and best), each beside its best local match."""
    if not result.local_matches:
        return []
    q = result.per_query.reset_index(drop=True)
    rows = []
    for row in _grid_rows(result):
        i = int(q.index[q["path"] == row.query_path][0])
        found = result.local_matches[i]
        if found is None:
            continue
        path, query_xy, gallery_xy = found
        label = result.local[i].labels[0] if result.local[i].labels else "-"
        title = f"{row.title.splitlines()[0]}; truth {row.actual}, best local match {label}"
        rows.append(MatchRow(title, row.query_path, path, query_xy, gallery_xy, label == row.actual))
    return rows


def _html(title: str, result: EvalResult, figures: list[str], out: Path) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))

    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in result.metrics.items())
    by_view = "\n".join(
        f"<tr><th>{html.escape(view or 'unknown')}</th>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
        for view, row in per_viewpoint(result.per_query).items()
    )
    views = (
        "<h2>By viewpoint</h2><table><tr><th>viewpoint</th><th>queries</th><th>known</th><th>top-1 right "
        f"(known)</th><th>top-1 right (new)</th></tr>\n{by_view}</table>"
        if by_view
        else ""
    )
    threshold = result.metrics["threshold"]
    if threshold is None:
        how = "No unknown threshold: every query is answered with its nearest identities (closed set)."
    else:
        how = f"Unknown threshold {threshold:.4f}, {describe_calibration(result.calibration)}."
    blocks = []
    for name in figures:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        blocks.append(
            f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(CAPTIONS[name])} (<a href="{name}">{name}</a>)</figcaption></figure>'
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 2px 12px; border-bottom: 1px solid #ddd; text-align: left; }}
td {{ font-family: monospace; }} img {{ max-width: 100%; }} figure {{ margin: 2em 0; }}
figcaption {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(how)}</p>
<h2>Metrics</h2>
<table>
{table}
</table>
<p>MAP@5: Kaggle Humpback Whale Identification; GAP: Kaggle Google Landmark Recognition (the first answer,
none when it is unknown); recall@K, precision@1, R-precision and mAP@R: retrieval of known queries as
pytorch-metric-learning defines them; auroc: best-match similarity separating known from unknown queries;
false_accept_rate: unknown queries answered with a known identity first; baks, baus, balanced: AnimalCLEF 2025's
open-set score, the accuracy on known queries and on new ones each averaged per identity, and their geometric
mean (answering new for everything scores 0). Per query: predictions.csv.</p>
{views}
<h2>Figures</h2>
{"".join(blocks)}
</body></html>
"""
