"""The evaluation report's PNG figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from kenning.data.images import load_image
from kenning.errors import KenningError
from kenning.figures import plt, save_figure


def plot_threshold_sweep(
    evaluated: list[dict] | None, calibration: list[dict] | None, chosen: float | None, path: str | Path
) -> None:
    """MAP@5 and GAP versus the unknown threshold: on the evaluated queries (solid) and on the held-out
    identities the threshold was calibrated on (dashed); the chosen threshold marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for curve, style, where in ((evaluated, "-", "evaluated queries"), (calibration, "--", "calibration (held out)")):
        if not curve:
            continue
        t = [p["threshold"] for p in curve]
        ax.plot(t, [p["map5"] for p in curve], style, color="tab:blue", label=f"MAP@5, {where}")
        ax.plot(t, [p["gap"] for p in curve], style, color="tab:orange", label=f"GAP, {where}")
    if chosen is not None:
        ax.axvline(chosen, color="black", linewidth=1, label=f"chosen threshold {chosen:.3f}")
    ax.set(xlabel="unknown threshold (best-match cosine similarity)", ylabel="score", ylim=(0, 1.02))
    ax.set_title("threshold sweep: below the threshold the first answer is unknown")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)


def plot_similarity_histograms(best: np.ndarray, known: np.ndarray, threshold: float | None, path: str | Path) -> None:
    """Best-match similarity (1 - cosine distance) of queries with a match in the gallery and of
    queries without one: the overlap is what no threshold can separate."""
    fig, ax = plt.subplots(figsize=(7, 4))
    finite = np.isfinite(best)
    low, high = (best[finite].min(), best[finite].max()) if finite.any() else (0.0, 1.0)
    bins = np.linspace(low, high + 1e-6, 31)
    for mask, name, colour in (
        (known, "known (a match is in the gallery)", "tab:green"),
        (~known, "unknown", "tab:red"),
    ):
        values = best[mask & finite]
        if len(values):
            ax.hist(values, bins=bins, alpha=0.55, color=colour, label=f"{name}: {len(values)}")
    if threshold is not None:
        ax.axvline(threshold, color="black", linewidth=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="best-match cosine similarity", ylabel="queries", title="match similarity, known vs unknown")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_per_identity(per_query: pd.DataFrame, path: str | Path) -> None:
    """Top-1 accuracy of each known identity's queries against how many gallery images it has."""
    known = per_query[per_query["known"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    if known.empty:
        ax.text(0.5, 0.5, "no known queries", ha="center", va="center", transform=ax.transAxes)
    else:
        by_id = known.groupby("actual").agg(
            gallery=("gallery_images", "max"), acc=("correct", "mean"), n=("correct", "size")
        )
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(by_id))
        ax.scatter(
            by_id["gallery"] + jitter, by_id["acc"], s=12 + 6 * by_id["n"], alpha=0.5, label="identity (size: queries)"
        )
        means = known.groupby("gallery_images")["correct"].mean()
        ax.plot(means.index, means.to_numpy(), "o-", color="black", label="all queries at that count")
        ax.legend(fontsize=8)
        if len(means) <= 20:  # few counts (protocol B: one or two each): a tick at each, none between
            ax.set_xticks(means.index.to_numpy())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="gallery images of the identity", ylabel="top-1 accuracy", ylim=(-0.05, 1.05))
    ax.set_title("per-identity accuracy vs gallery images")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


@dataclass
class RetrievalRow:
    title: str  # e.g. "worst 1" plus the answer
    query_path: str
    actual: str
    paths: list[str]
    labels: list[str]
    similarities: list[float]


def plot_retrieval_grid(rows: list[RetrievalRow], path: str | Path, thumb: int = 112) -> None:
    """One row per query: the query photo, then its nearest gallery images with label and similarity,
    framed green when the label is the query's, red otherwise."""
    columns = 1 + max((len(r.paths) for r in rows), default=0)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns, 1.9 * len(rows)), squeeze=False)
    for axrow, row in zip(axes, rows, strict=True):
        cells = [(row.query_path, f"{row.title}\n{row.actual}", "black")] + [
            (p, f"{lab}\n{sim:.3f}", "tab:green" if lab == row.actual else "tab:red")
            for p, lab, sim in zip(row.paths, row.labels, row.similarities, strict=True)
        ]
        for ax, (image_path, caption, colour) in zip(axrow, cells, strict=False):
            ax.imshow(_thumbnail(image_path, thumb))
            ax.set_title(caption, fontsize=7, color=colour)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color=colour, linewidth=2.5 if colour != "black" else 1)
        for ax in axrow[len(cells) :]:
            ax.axis("off")
    save_figure(fig, path)


def _thumbnail(path: str, size: int) -> np.ndarray:
    """The image shrunk to fit size x size; a grey square when it cannot be read (moved, deleted)."""
    try:
        img = load_image(path)
    except KenningError:
        return np.full((size, size, 3), 200, dtype=np.uint8)
    img.thumbnail((size, size))
    return np.asarray(img)


def plot_reliability(parts: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, bins: int = 10) -> None:
    """Reliability diagram: for each score (fused probability, each calibrated part), the observed
    rate of same-identity pairs against the predicted probability, in bins of equal count."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    top = 0.05
    for name, (predicted, same) in parts.items():
        if len(predicted) == 0:
            continue
        order = np.argsort(predicted, kind="stable")
        groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
        x = [float(predicted[g].mean()) for g in groups]
        y = [float(same[g].mean()) for g in groups]
        ax.plot(x, y, marker="o", label=f"{name} ({int(same.sum())} of {len(same)} pairs same)")
        top = max(top, *x, *y)
    ax.set(
        xlabel="predicted P(same identity)",
        ylabel="observed same-identity rate",
        xlim=(0, min(1, top * 1.1)),
        ylim=(0, min(1, top * 1.1)),
        title="calibration of the candidate scores",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, path)


@dataclass
class MatchRow:
    title: str
    query_path: str
    gallery_path: str
    query_xy: np.ndarray  # (m, 2) matched keypoints in the query, original pixels
    gallery_xy: np.ndarray  # (m, 2) their matches in the gallery image
    same: bool  # the gallery image is of the query's identity


def plot_local_matches(rows: list[MatchRow], path: str | Path, height: int = 220, lines: int = 60) -> None:
    """Query beside its best local match, with lines between the matched keypoints (the strongest
    `lines`): why the local stage gave its answer."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(7, 2.6 * len(rows)), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        left, ls = _scaled(row.query_path, height)
        right, rs = _scaled(row.gallery_path, height)
        canvas = np.full((height, left.shape[1] + right.shape[1] + 10, 3), 255, np.uint8)
        canvas[: left.shape[0], : left.shape[1]] = left
        canvas[: right.shape[0], left.shape[1] + 10 :] = right
        ax.imshow(canvas)
        colour = "tab:green" if row.same else "tab:red"
        for (qx, qy), (gx, gy) in list(zip(row.query_xy, row.gallery_xy, strict=True))[:lines]:
            ax.plot([qx * ls, gx * rs + left.shape[1] + 10], [qy * ls, gy * rs], color=colour, linewidth=0.6, alpha=0.7)
        ax.set_title(f"{row.title}: {len(row.query_xy)} matched keypoints", fontsize=8, color=colour)
        ax.axis("off")
    save_figure(fig, path)


def _scaled(path: str, height: int) -> tuple[np.ndarray, float]:
    """The image at `height` pixels high, and the factor from its original pixels."""
    try:
        img = load_image(path)
    except KenningError:
        return np.full((height, height, 3), 200, dtype=np.uint8), 0.0
    scale = height / img.height
    return np.asarray(img.resize((max(1, round(img.width * scale)), height))), scale


def plot_foregrounds(rows: list[tuple[str, str, np.ndarray]], path: str | Path, size: int = 160) -> None:
    """Each (title, image path, foreground map): the photo, and the photo under its map (bright where
    local features are kept)."""
    fig, axes = plt.subplots(2, len(rows), figsize=(1.9 * len(rows), 4.2), squeeze=False)
    for j, (title, image_path, weight_map) in enumerate(rows):
        photo = _thumbnail(image_path, size)
        h, w = photo.shape[:2]
        cells = np.asarray(weight_map, np.float32)
        up = cells[np.minimum(np.arange(h) * cells.shape[0] // h, cells.shape[0] - 1)][
            :, np.minimum(np.arange(w) * cells.shape[1] // w, cells.shape[1] - 1)
        ]
        axes[0, j].imshow(photo)
        axes[0, j].set_title(title, fontsize=7)
        axes[1, j].imshow((photo * (0.25 + 0.75 * up[:, :, None])).astype(np.uint8))
        for ax in axes[:, j]:
            ax.axis("off")
    save_figure(fig, path)
