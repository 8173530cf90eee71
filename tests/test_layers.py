"""The layering Kenning keeps: a module never imports one from a floor above it. Read from the
source (ast), so a stray import fails here, not as an import cycle later."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kenning"
# a floor -> the only third-party and Kenning modules its files may import (besides the standard library)
LEAVES = {
    "metrics": {"numpy", "sklearn", "kenning.metrics"},
    "config.py": {"yaml", "kenning.errors", "kenning.labels", "kenning.paths"},  # typed settings, below every stage
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _third_party_or_ours(name: str) -> bool:
    import sys

    return name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"


def test_leaves_import_nothing_above_them() -> None:
    for floor, allowed in LEAVES.items():
        files = sorted((PACKAGE / floor).glob("*.py")) if (PACKAGE / floor).is_dir() else [PACKAGE / floor]
        assert files, floor
        for path in files:
            outside = {
                name
                for name in _imports(path)
                if _third_party_or_ours(name) and not any(name == a or name.startswith(f"{a}.") for a in allowed)
            }
            assert not outside, f"{path.relative_to(PACKAGE.parent)} imports {sorted(outside)}"


def test_the_layering_test_sees_imports() -> None:
    """The check itself: it finds what a file imports, at any depth."""
    found = _imports(PACKAGE / "decision" / "threshold.py")
    assert "kenning.metrics.answers" in found and "kenning.decision.voting" in found
