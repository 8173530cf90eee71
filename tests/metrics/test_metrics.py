import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from kenning.index.faiss_index import FaissIndex
from kenning.index.topk import select_top
from kenning.metrics.open_set import balanced_open_set, false_accept_rate, known_unknown_auroc
from kenning.metrics.retrieval import (
    average_precision_at_k,
    global_average_precision,
    map_at_k,
    recall_at_k,
    retrieval_precision,
)


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


def test_gap_tie_breaks_on_label_when_the_image_id_is_equal() -> None:
    # the same image id (two rows of one image), equal confidence: the smaller label goes first
    actual = ["x", "b"]
    assert global_average_precision(actual, ["c", "b"], [0.5, 0.5], ["img", "img"]) == pytest.approx(1 / 2)
    assert global_average_precision(actual, ["a", "b"], [0.5, 0.5], ["img", "img"]) == pytest.approx(1 / 4)


def test_gap_non_landmark_predictions_cost_precision_but_no_prediction_costs_nothing() -> None:
    actual = ["a", None]
    # confident prediction on the non-landmark comes first: the right one then has precision 1/2
    assert global_average_precision(actual, ["a", "x"], [0.5, 0.9]) == pytest.approx(1 / 2)
    # no prediction on the non-landmark: precision 1/1
    assert global_average_precision(actual, ["a", None], [0.5, 0.9]) == pytest.approx(1.0)
    # no prediction on the landmark: its positive is lost
    assert global_average_precision(["a", "b"], ["a", None], [0.5, 0.9]) == pytest.approx(1 / 2)
    assert global_average_precision([None, None], ["x", "y"], [0.5, 0.9]) == 0.0  # no landmark to find


def test_retrieval_precision_by_hand() -> None:
    labels = np.array([["a", "b", "a", "c"], ["c", "b", "b", "b"], ["x", "y", "z", "w"]], dtype=object)
    actual = ["a", "b", "q"]
    relevant = np.array([3, 2, 0])  # q has no match: left out
    got = retrieval_precision(labels, actual, relevant)
    assert got["precision@1"] == pytest.approx((1 + 0) / 2)
    # R-precision: query a has 2 of its R=3 in the top 3; query b has 1 of R=2 in the top 2
    assert got["r_precision"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # mAP@R: a: (1/1 + 2/3) / 3; b: (1/2) / 2
    assert got["map@r"] == pytest.approx(((1 + 2 / 3) / 3 + (1 / 2) / 2) / 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_precision_equals_pytorch_metric_learning(seed: int) -> None:
    """Same embeddings, leave-one-out: ours from a FAISS search, theirs from AccuracyCalculator."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 12, 120)
    centres = rng.normal(size=(12, 16))
    x = centres[labels] + rng.normal(scale=1.2, size=(120, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = FaissIndex.create(16, "Flat")
    index.add(x, np.arange(120))
    counts = np.bincount(labels)[labels] - 1
    width = int(counts.max())
    _, ids = select_top(*index.search(x, width + 1), width, exclude=np.arange(120))
    ours = retrieval_precision(labels[ids].astype(str).astype(object), labels.astype(str), counts)
    theirs = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    ).get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))
    assert ours["precision@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-9)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-9)
    assert ours["map@r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-9)
    assert 0.05 < ours["map@r"] < 0.95  # neither trivial nor hopeless: a real comparison


def test_auroc_and_false_accept_rate_by_hand() -> None:
    best = np.array([0.9, 0.7, 0.4, 0.8, 0.3, 0.2])
    known = np.array([True, True, True, False, False, False])
    # pairs (known, unknown) ordered right: 0.9 beats all 3, 0.7 beats 2, 0.4 beats 2 -> 7 of 9
    assert known_unknown_auroc(best, known) == pytest.approx(7 / 9)
    assert false_accept_rate(best, known, 0.5) == pytest.approx(1 / 3)  # 0.8 accepted
    assert false_accept_rate(best, known, 0.8) == pytest.approx(1 / 3)  # at the threshold is accepted
    assert false_accept_rate(best, known, 0.85) == 0.0
    assert false_accept_rate(best, known, None) == 1.0  # no threshold: never unknown
    assert known_unknown_auroc(best[:3], known[:3]) is None and false_accept_rate(best[:3], known[:3], 0.5) is None


def test_balanced_open_set_score_by_hand() -> None:
    """Known: identity a 2 of 3 right, b 0 of 1 -> BAKS (2/3 + 0) / 2 = 1/3. New: c 1 of 2 answered
    new, d 1 of 1 -> BAUS (1/2 + 1) / 2 = 3/4. Balanced: sqrt(1/3 * 3/4) = 1/2."""
    actual = np.array(["a", "a", "a", "b", "new", "new", "new"], dtype=object)
    top = np.array(["a", "a", "b", "new", "new", "a", "new"], dtype=object)
    known = actual != "new"
    identities = np.array(["a", "a", "a", "b", "c", "c", "d"], dtype=object)
    got = balanced_open_set(actual, top, known, identities, "new")
    assert got["baks"] == pytest.approx(1 / 3) and got["baus"] == pytest.approx(3 / 4)
    assert got["balanced"] == pytest.approx(0.5)
    everything_new = balanced_open_set(actual, np.full(7, "new", dtype=object), known, identities, "new")
    assert everything_new["balanced"] == 0.0 and everything_new["baus"] == 1.0
    assert balanced_open_set(actual[:4], top[:4], known[:4], identities[:4], "new")["balanced"] is None
