"""The rule for identity labels, checked wherever a label enters Kenning.

Everywhere (datasets, `enroll`, `forget`, the service, the unknown label): a label is 1 to 200
characters, with no control characters (tabs, newlines, NUL...), no line or paragraph separators,
no invisible characters (format characters such as zero-width spaces and joiners, bidirectional
overrides, soft hyphens, and blank-looking letters such as the Hangul fillers: each makes a label
display as another), and no whitespace at either end. Inner spaces are fine: "Hut on the ridge" is
a good landmark name. Labels are compared in Unicode NFC: "Café" typed as one code point or as
"e" + combining accent is one identity (`normalise_label` is applied wherever a label enters).

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
# Letters that render as nothing or as blank space (not format characters, so listed by hand).
_INVISIBLE_LETTERS = set("\u115f\u1160\u3164\uffa0\u2800")


def _arabic(ch: str) -> bool:
    return any(low <= ord(ch) <= high for low, high in _ARABIC)


_ARABIC = ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))


def _joiner_in_context(label: str, i: int) -> bool:
    """A zero-width (non-)joiner where a script needs one (after a virama, as in Devanagari; between
    Arabic-script letters, as in Persian): IDNA's contextual rule (RFC 5892, A.1 and A.2), simplified.
    Anywhere else it only makes one label look like another."""
    if label[i] not in "\u200c\u200d" or i == 0:
        return False
    before = label[i - 1]
    if unicodedata.combining(before) == 9:  # virama
        return True
    after = label[i + 1] if i + 1 < len(label) else ""
    return label[i] == "\u200c" and bool(after) and _arabic(before) and _arabic(after)


def normalise_label(label: str) -> str:
    """The one form a label is stored and compared in (NFC)."""
    return unicodedata.normalize("NFC", label)


def label_problem(label: str) -> str | None:
    """Why `label` is not a valid identity label, or None when it is."""
    if not isinstance(label, str) or not label:
        return "is empty"
    if len(label) > MAX_LENGTH:
        return f"is {len(label)} characters long (at most {MAX_LENGTH})"
    for i, ch in enumerate(label):
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs", "Zl", "Zp"):
            return f"contains the control character U+{ord(ch):04X}"
        if (category == "Cf" or ch in _INVISIBLE_LETTERS) and not _joiner_in_context(label, i):
            return f"contains the invisible character U+{ord(ch):04X}"
    if label != label.strip():
        return "starts or ends with whitespace"
    return None


def check_label(label: str, what: str = "label") -> str:
    """`label` in NFC if valid, else one line naming it and the problem."""
    problem = label_problem(label)
    if problem is not None:
        raise KenningError(f"{what} {label!r} {problem}")
    return normalise_label(label)


def check_enrol_label(label: str, unknown_label: str, what: str = "--label") -> str:
    """A label images may be given (enrolled, renamed or merged into), in NFC, or one line saying why
    not: an invalid label, or the index's unknown label (it names no identity)."""
    label = check_label(label, what)
    if label == unknown_label:
        raise KenningError(f"'{label}' is the index's unknown label and cannot name an identity")
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
