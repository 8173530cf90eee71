from pathlib import Path

import pandas as pd

from kenning.decision.voting import Prediction
from kenning.eval.submission import write_submission


def test_whale_and_landmark_formats(tmp_path: Path) -> None:
    answers = [
        Prediction(["w1", "new_whale", "w2", "w3", "w4"], [0.8, None, 0.1, 0.05, 0.01], 0.9),
        Prediction(["new_whale", "w9"], [None, 0.2], 0.3),
        "b.jpg: not an image",
    ]
    names = ["a.jpg", "b.jpg", "c.jpg"]
    failed = write_submission(tmp_path / "w.csv", "whale", names, answers, "new_whale")
    assert failed == ["b.jpg: not an image"]
    assert (tmp_path / "w.csv").read_text().splitlines() == [
        "Image,Id",
        "a.jpg,w1 new_whale w2 w3 w4",
        "b.jpg,new_whale w9",
        "c.jpg,new_whale",
    ]
    write_submission(tmp_path / "l.csv", "landmark", names, answers, "new_whale")
    table = pd.read_csv(tmp_path / "l.csv", keep_default_na=False)
    assert table.columns.tolist() == ["id", "landmarks"]
    assert table.values.tolist() == [["a", "w1 0.800000"], ["b", ""], ["c", ""]]
