"""Where every benchmark reads and writes: the repository, the shared photographs beside it
(`../shared/data`, never copied in), and the results folder. Benchmarks run as scripts
(`python benchmarks/NAME.py`), so this sits beside them and is imported as `common`."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
