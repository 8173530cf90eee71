"""The layering Kenning keeps: a module never imports one from a floor above it. Read from the
source (ast), so a stray import fails here, not as an import cycle later."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kenning"
# a floor -> the only third-party and Kenning modules its files may import (besides the standard library)
LEAVES = {
    "metrics": {"numpy", "sklearn", "kenning.metrics"},
    "local/registry.py": set(),  # names only: the config checks local.method against it
    "config.py": {"yaml", "kenning.errors", "kenning.labels", "kenning.paths", "kenning.local.registry"},
}
# Kenning's floors, lowest first: a module imports only from its own floor or those below. A name
# is a package or a module (dotted, under kenning); the longest that matches a module places it.
FLOORS = (
    ("errors", "labels", "paths", "atomic", "locks", "manifests", "photos", "figures", "metrics", "timing"),
    ("local.registry",),
    ("config",),
    ("data",),
    ("embeddings", "decision"),  # the model and its losses; the answer rules
    ("local",),  # local features (their foreground map uses the backbone)
    ("index",),  # vectors and local features stored and searched; stores the rules
    ("reader", "enrolment", "recognizer", "answers", "batch_grouping"),  # the query path
    # building an index (and calibrating it) or a model; exporting one
    ("build", "gallery_calibration", "holdout_calibration", "grouping_calibration", "training", "export"),
    ("eval",),
    ("serve",),
    ("cli", "__main__"),
)


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


def _floor(module: str) -> int:
    """The floor of `kenning.<module>` (a dotted name): the longest floor name it starts with."""
    best, floor = -1, -1
    for level, names in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(f"{name}.")) and len(name) > best:
                best, floor = len(name), level
    assert floor >= 0, f"kenning.{module} is on no floor: add it to FLOORS"
    return floor


def test_no_module_imports_from_a_floor_above_it() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        if module == "__init__":
            continue
        own = _floor(module)
        above = sorted(
            name
            for name in _imports(path)
            if name.startswith("kenning.") and _floor(name.removeprefix("kenning.")) > own
        )
        assert not above, f"kenning.{module} (floor {own}) imports {above} from above it"


def test_the_floors_catch_an_upward_import() -> None:
    """The check itself: the recognizer is above the index, and metrics below everything."""
    assert _floor("index.gallery") < _floor("recognizer") and _floor("metrics.answers") < _floor("decision")
    assert _floor("local.registry") < _floor("config") < _floor("local.sift")


def test_the_layering_test_sees_imports() -> None:
    """The check itself: it finds what a file imports, at any depth."""
    found = _imports(PACKAGE / "decision" / "threshold.py")
    assert "kenning.metrics.answers" in found and "kenning.decision.voting" in found


MAX_MODULE_LINES = 400
MAX_COMMAND_LINES = 40


def test_modules_stay_small_and_commands_thin() -> None:
    """Small modules with one job; a command is parse -> one library call -> print."""
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines"
    tree = ast.parse((PACKAGE / "cli" / "commands.py").read_text(encoding="utf-8"))
    commands = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any("command" in ast.unparse(d) for d in node.decorator_list)
    ]
    assert len(commands) >= 9
    for node in commands:
        length = node.end_lineno - node.lineno + 1
        assert length <= MAX_COMMAND_LINES, f"command {node.name} is {length} lines"
