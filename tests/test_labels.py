"""The label rule: everywhere, and for the Kaggle formats."""

from __future__ import annotations

import pytest

from kenning.errors import KenningError
from kenning.labels import check_kaggle_labels, check_label, label_problem


@pytest.mark.parametrize(
    "label",
    [
        "Hut on the ridge",
        "w_1a2b3c",
        "Säntis",
        "Дом",
        'Notre-Dame,"Paris"',
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        "\u0915\u094d\u200d\u0937",
    ],  # Persian, Devanagari joiners
)
def test_good_labels(label: str) -> None:
    assert label_problem(label) is None


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("", "is empty"),
        ("a\nb", "U+000A"),
        ("a\x00", "U+0000"),
        ("\x1b[31m", "U+001B"),
        ("abc\u202edef", "U+202E"),
        ("a\u2028b", "U+2028"),
        ("x" * 201, "at most 200"),
        (" x", "whitespace"),
        ("\udcff", "U+DCFF"),
        ("Caf\u200be", "invisible character U+200B"),  # zero-width space: looks like "Cafe"
        ("a\u200cb", "invisible character U+200C"),  # a joiner where no script needs one
        ("\ufeffx", "invisible character U+FEFF"),
        ("Hu\u00adt", "invisible character U+00AD"),  # soft hyphen
        ("\u3164", "invisible character U+3164"),  # Hangul filler: a blank that is not whitespace
    ],
)
def test_bad_labels(label: str, problem: str) -> None:
    assert problem in label_problem(label)
    with pytest.raises(KenningError, match="--label"):
        check_label(label, "--label")


def test_kaggle_formats_refuse_whitespace_by_name() -> None:
    check_kaggle_labels(["a", "b_c", "d,e"], "whale")
    with pytest.raises(KenningError, match=r"2 label\(s\).*whale submission.*'Hut on the ridge', 'x\\ty'"):
        check_kaggle_labels(["ok", "Hut on the ridge", "x\ty"], "whale")


def test_labels_are_compared_in_nfc() -> None:
    """Item 12: "Café" typed as one code point and as e + combining accent is one identity."""
    composed, decomposed = "Caf\u00e9", "Cafe\u0301"
    assert composed != decomposed
    assert check_label(composed) == check_label(decomposed) == composed
