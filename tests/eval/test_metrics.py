import numpy as np
import pytest

from kenning.eval.metrics import average_precision_at_k, global_average_precision, map_at_k, recall_at_k


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        (["a", "b", "c", "d", "e"], 1.0),
        (["b", "a", "c", "d", "e"], 1 / 2),
        (["b", "c", "d", "e", "a"], 1 / 5),
        (["b", "c", "d", "e", "f", "a"], 0.0),  # sixth place is outside the top five
        (["b", "b", "a"], 1 / 3),  # positions count repeats
        (["a", "a", "a"], 1.0),  # a repeated true label scores once
        ([], 0.0),
    ],
)
def test_apk_kaggle_humpback(predicted: list[str], expected: float) -> None:
    assert average_precision_at_k("a", predicted) == pytest.approx(expected)


def test_map5_new_whale_is_an_ordinary_label() -> None:
    actual = ["new_whale", "w1", "w2"]
    predicted = [["w3", "new_whale"], ["new_whale", "w1"], ["w2"]]
    assert map_at_k(actual, predicted) == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)


def test_gap_by_hand() -> None:
    # q1 right (0.9), q2 wrong (0.8), q3 non-landmark predicted (0.7), q4 no prediction, q5 right (0.6)
    actual = ["a", "b", None, "d", "e"]
    predicted = ["a", "x", "y", None, "e"]
    conf = [0.9, 0.8, 0.7, 0.5, 0.6]
    # ranks: q1 (P=1/1, correct), q2, q3, q5 (P=2/4, correct); 4 queries have a landmark
    assert global_average_precision(actual, predicted, conf) == pytest.approx((1 + 2 / 4) / 4)


def test_gap_ties_broken_by_query_id_then_label() -> None:
    actual = ["a", "b"]
    predicted = ["a", "x"]
    conf = [0.5, 0.5]
    # id "q2" (the right one) sorts before "q9": its precision is 1/1
    assert global_average_precision(actual, predicted, conf, ["q2", "q9"]) == pytest.approx(1 / 2)
    # swapped ids: the wrong prediction comes first, the right one has precision 1/2
    assert global_average_precision(actual, predicted, conf, ["q9", "q2"]) == pytest.approx(1 / 4)


def test_recall_at_k() -> None:
    neighbours = np.array([["a", "b"], ["c", "b"], ["c", "d"]], dtype=object)
    assert recall_at_k(["a", "b", "x"], neighbours, 1) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "b", "x"], neighbours, 2) == pytest.approx(2 / 3)
