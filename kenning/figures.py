"""Saving PNG figures people open (matplotlib, files only): one place for the backend and settings."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt

from kenning.atomic import atomic_save

matplotlib.rcParams["text.parse_math"] = False  # labels are users' text: "Cost $5 hut" is not TeX


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
