"""The training curves PNG, redrawn after every epoch."""

from __future__ import annotations

from pathlib import Path

from kenning.figures import plt, save_figure

CURVES = "training_curves.png"
VALIDATION_METRICS = ("recall@1", "map@5", "map@r")


def plot_training_curves(history: list[dict[str, float]], path: str | Path, best_epoch: int | None = None) -> None:
    """Training loss (left) and validation figures on held-out identities (right), per epoch."""
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [row["loss"] for row in history], marker="o")
    left.set(title="training loss", xlabel="epoch", ylabel="loss")
    for metric in VALIDATION_METRICS:
        values = [row.get(metric) for row in history]
        if any(v is not None for v in values):
            right.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", label=metric)
    if best_epoch is not None:
        right.axvline(best_epoch, color="grey", linestyle="--", label=f"best (epoch {best_epoch})")
    right.set(title="validation (held-out identities)", xlabel="epoch", ylim=(0, 1))
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="lower right")
    else:
        right.text(0.5, 0.5, "no held-out identities", ha="center", va="center", transform=right.transAxes)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    save_figure(fig, path)
