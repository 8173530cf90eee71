from pathlib import Path

import pytest

from kenning.errors import KenningError
from kenning.eval.kaggle_files import score_files


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_whale_submission_scored_by_hand(tmp_path: Path) -> None:
    solution = write(tmp_path / "truth.csv", "Image,Id\na.jpg,w1\nb.jpg,new_whale\nc.jpg,w2\nd.jpg,w3\n")
    submission = write(
        tmp_path / "sub.csv",
        "Image,Id\nb.jpg,w9 new_whale\na.jpg,w1 w2\nc.jpg,w1 w1 w1 w1 w2\nd.jpg,\n",  # rows in any order
    )
    got = score_files(submission, solution, "whale")
    assert got["queries"] == 4
    assert got["map@5"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 0) / 4)


def test_landmark_submission_scored_by_hand(tmp_path: Path) -> None:
    # q1 right 0.9, q2 non-landmark predicted 0.8, q3 no prediction, q4 right 0.7, q5 non-landmark, none
    solution = write(tmp_path / "truth.csv", "id,landmark_id\nq1,10\nq2,\nq3,30\nq4,40\nq5,\n")
    submission = write(tmp_path / "sub.csv", "id,landmarks\nq1,10 0.9\nq2,7 0.8\nq3,\nq4,40 0.7\nq5,\n")
    got = score_files(submission, solution, "landmark")
    # ranks: q1 (P 1/1), q2 (wrong), q4 (P 2/3); three queries have a landmark
    assert got["gap"] == pytest.approx((1 + 2 / 3) / 3)
    assert got["landmark_queries"] == 3 and got["predictions"] == 3


WHALE_SOLUTION = "Image,Id\na.jpg,w1\nb.jpg,w2\n"


@pytest.mark.parametrize(
    ("fmt", "submission", "message"),
    [
        ("whale", "Image,Label\na.jpg,w1\nb.jpg,w2\n", "sub.csv:1: header 'Image,Label' lacks column 'Id'"),
        ("whale", "Image,Id\na.jpg,w1 w2 w3 w4 w5 w6\nb.jpg,w2\n", "sub.csv:2: 6 ids for 'a.jpg'; at most 5"),
        ("whale", "Image,Id\na.jpg,w1\nb.jpg,w2,extra\n", "sub.csv:3: 3 fields, the header has 2"),
        ("whale", "Image,Id\na.jpg,w1\na.jpg,w2\n", "sub.csv:3: Image 'a.jpg' again (first on line 2)"),
        ("whale", "Image,Id\na.jpg,w1\nb.jpg,w2\nz.jpg,w1\n", "sub.csv:4: 'z.jpg' is not in the solution"),
        ("whale", "Image,Id\nb.jpg,w2\n", "no row for 1 image(s) of the solution, first 'a.jpg' ("),
        ("whale", "Image,Id\n,w1\n", "sub.csv:2: empty Image"),
        ("whale", "", "sub.csv: empty file"),
        ("whale", "Image,Id\n", "sub.csv: no rows under the header"),
        ("landmark", "id,landmarks\nq1,10\n", "sub.csv:2: landmarks '10' for 'q1'; expected 'label score'"),
        ("landmark", "id,landmarks\nq1,10 high\n", "sub.csv:2: score 'high' for 'q1' is not a finite number"),
        ("landmark", "id,landmarks\nq1,10 nan\n", "sub.csv:2: score 'nan'"),
    ],
)
def test_malformed_submission_names_the_line(fmt: str, submission: str, message: str, tmp_path: Path) -> None:
    solution = WHALE_SOLUTION if fmt == "whale" else "id,landmark_id\nq1,10\n"
    with pytest.raises(KenningError) as err:
        score_files(write(tmp_path / "sub.csv", submission), write(tmp_path / "truth.csv", solution), fmt)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("fmt", "solution", "message"),
    [
        ("whale", "Image,Id\na.jpg,\n", "truth.csv:2: empty Id for 'a.jpg'"),
        ("whale", "Image,Id\na.jpg,w1 w2\n", "truth.csv:2: 2 labels for 'a.jpg'"),
        ("landmark", "id,landmarks\nq1,10\n", "truth.csv:1: header 'id,landmarks' lacks column 'landmark_id'"),
    ],
)
def test_malformed_solution_names_the_line(fmt: str, solution: str, message: str, tmp_path: Path) -> None:
    submission = "Image,Id\na.jpg,w1\n" if fmt == "whale" else "id,landmarks\nq1,10 0.5\n"
    with pytest.raises(KenningError, match=message.replace("(", r"\(")):
        score_files(write(tmp_path / "sub.csv", submission), write(tmp_path / "truth.csv", solution), fmt)


def test_binary_and_missing_files_are_refused(tmp_path: Path) -> None:
    solution = write(tmp_path / "truth.csv", WHALE_SOLUTION)
    binary = tmp_path / "sub.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(KenningError, match="not a UTF-8 text file"):
        score_files(binary, solution, "whale")
    with pytest.raises(KenningError, match="file not found"):
        score_files(tmp_path / "none.csv", solution, "whale")
