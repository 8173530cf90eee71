"""The rule for identity labels, checked wherever a label enters Kenning.

Everywhere (datasets, `enroll`, the unknown label): a label is 1 to 200 characters, with no
control characters (tabs, newlines, NUL...), no line or paragraph separators, no bidirectional
overrides (they make a label display as another), and no whitespace at either end. Inner spaces
are fine: "Hut on the ridge" is a good landmark name.

The Kaggle submission formats separate labels by whitespace (whale: five ids in one field;
landmark: `label score`), so a label holding whitespace cannot be written there and read back as
itself. Such labels are refused by `query --batch`, named, before any image is read; `query
--json` carries any label.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from kenning.errors import KenningError

MAX_LENGTH = 200
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def label_problem(label: str) -> str | None:
    """Why `label` is not a valid identity label, or None when it is."""
    if not isinstance(label, str) or not label:
        return "is empty"
    if len(label) > MAX_LENGTH:
        return f"is {len(label)} characters long (at most {MAX_LENGTH})"
    for ch in label:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI_CONTROLS:
            return f"contains the control character U+{ord(ch):04X}"
    if label != label.strip():
        return "starts or ends with whitespace"
    return None


def check_label(label: str, what: str = "label") -> str:
    """`label` if valid, else one line naming it and the problem."""
    problem = label_problem(label)
    if problem is not None:
        raise KenningError(f"{what} {label!r} {problem}")
    return label


def check_kaggle_labels(labels: Iterable[str], fmt: str) -> None:
    """Refuse, naming them, labels that a Kaggle submission cannot hold and give back unchanged."""
    bad = sorted({lab for lab in labels if any(ch.isspace() for ch in lab)})
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise KenningError(
            f"{len(bad)} label(s) contain whitespace and cannot round-trip through a {fmt} submission "
            f"(labels are separated by spaces there): {shown}; use query --json, or re-enrol them without spaces"
        )
