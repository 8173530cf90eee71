"""Viewpoints and encounters through the commands: enrol with them (kept through compaction),
query photos as one encounter, eval per encounter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kenning.decision.encounters import combine
from kenning.decision.voting import place_unknown
from kenning.index.gallery import GalleryIndex
from kenning.recognizer import Recognizer
from tests.conftest import build_local_index
from tests.hostile.conftest import assert_refused, cli


@pytest.fixture(scope="module")
def plain(local_model: Path, local_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    build_local_index(local_model, local_demo, out, "none")
    return out


def _photos(local_demo: Path) -> list[Path]:
    return sorted((local_demo / "enroll").glob("*.jpg"))


def test_an_encounter_answers_once_as_its_photos_combine(plain: Path, local_demo: Path) -> None:
    photos = [str(p) for p in sorted((local_demo / "images" / "test").glob("landmark_*/*.jpg"))[:2]]
    run = cli("query", "--index", plain, "--encounter", "--viewpoint", "Left", "--json", *photos)
    assert run.exit_code == 0, run.stderr
    records = json.loads(run.stdout)
    assert len(records) == 1 and records[0]["images"] == photos and len(records[0]["photos"]) == 2
    recognizer = Recognizer.open(plain, progress=False)
    probes = recognizer.read(photos)
    ranked = recognizer.rank(recognizer.match(probes.vectors, views=["left", "left"]))
    expected = place_unknown(combine(ranked, ["left", "left"]), recognizer.threshold, recognizer.unknown_label)
    assert [p["label"] for p in records[0]["predictions"]] == expected.labels
    assert records[0]["best_similarity"] == round(expected.best_similarity, 4)


def test_enrolled_metadata_survives_forget_and_compaction(plain: Path, local_demo: Path, tmp_path: Path) -> None:
    import shutil

    index = tmp_path / "index"
    shutil.copytree(plain, index)
    photos = _photos(local_demo)[:2]
    run = cli("enroll", "--index", index, "--label", "newcomer", "--viewpoint", "left", "--encounter", "e7", *photos)
    assert run.exit_code == 0, run.stderr
    other = GalleryIndex.load(index).table["label"].iloc[0]
    assert cli("forget", "--index", index, "--label", other).exit_code == 0
    compacted = cli("build-index", "--out", index, "--compact")
    assert compacted.exit_code == 0, compacted.stderr
    table = GalleryIndex.load(index).table
    assert other not in set(table["label"])
    mine = table[table["label"] == "newcomer"]
    assert len(mine) == 2 and set(mine["viewpoint"]) == {"left"} and set(mine["encounter"]) == {"e7"}
    assert_refused(
        cli("enroll", "--index", index, "--label", "x", "--viewpoint", "left\x07", str(photos[0])), "printable"
    )


def test_eval_by_encounter_adds_encounter_figures(plain: Path, local_demo: Path) -> None:
    run = cli("eval", "--index", plain, "--data", local_demo, "--split", "test", "--by-encounter")
    assert run.exit_code == 0, run.stderr
    assert "encounter recall@1" in run.stdout and "encounter encounters" in run.stdout


def test_a_batch_with_an_encounter_column_answers_each_encounter_once(
    plain: Path, local_demo: Path, tmp_path: Path
) -> None:
    import pandas as pd

    photos = sorted((local_demo / "images" / "test").glob("landmark_*/*.jpg"))[:4]
    listing = pd.DataFrame({"path": [str(p) for p in photos], "encounter": ["e1", "e1", "e2", ""]})
    listing.to_csv(tmp_path / "queries.csv", index=False)
    out = tmp_path / "submission.csv"
    run = cli("query", "--index", plain, "--batch", tmp_path / "queries.csv", "--out", out)
    assert run.exit_code == 0, run.stderr
    ids = pd.read_csv(out)["Id"].tolist()
    assert ids[0] == ids[1]  # one encounter, one answer
    recognizer = Recognizer.open(plain, progress=False)
    probes = recognizer.read([str(p) for p in photos[:2]])
    ranked = recognizer.rank(recognizer.match(probes.vectors, views=["", ""]))
    together = place_unknown(combine(ranked, ["", ""]), recognizer.threshold, recognizer.unknown_label)
    assert ids[0] == " ".join(together.labels)
    alone = recognizer.query([str(photos[3])])[0]
    assert ids[3] == " ".join(alone.labels)  # no encounter: answered alone
