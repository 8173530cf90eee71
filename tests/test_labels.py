"""The label rule: everywhere, and for the Kaggle formats."""

from __future__ import annotations

import pytest

from kenning.errors import KenningError
from kenning.labels import check_kaggle_labels, check_label, label_problem


@pytest.mark.parametrize("label", ["Hut on the ridge", "w_1a2b3c", "Säntis", "Дом", 'Notre-Dame,"Paris"', "a\u200cb"])
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
