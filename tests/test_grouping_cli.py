"""Batch grouping through the commands: calibrated at build-index on the held-out identities,
stored in the manifest, used by `query --batch --group`, refused in one line where it cannot work."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kenning.batch_grouping import answer_grouped, batch_links, stored_grouping
from kenning.decision.grouping import Grouping, sure_labels
from kenning.errors import KenningError
from kenning.grouping_calibration import QUANTILES
from kenning.index.gallery import GalleryIndex
from kenning.recognizer import Recognizer
from tests.conftest import LOCAL_SMALL
from tests.hostile.conftest import assert_refused, cli


@pytest.fixture(scope="module")
def grouped_index(local_model: Path, local_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grouped")
    run = cli(
        "build-index", "--model", local_model, "--data", local_demo, "--split", "test", "--out", out, "--local", "sift",
        "--calibrate", "balanced", "--set", "index.grouping=true", *LOCAL_SMALL,
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "batch grouping" in run.stdout and "groups, balanced" in run.stdout
    return out


def _batch(local_demo: Path, folder: Path) -> Path:
    """A batch of several photos of one new landmark, catalogue photos and distractors."""
    photos = (
        sorted((local_demo / "enroll").glob("*.jpg"))
        + sorted((local_demo / "images" / "test").glob("landmark_*/*.jpg"))[:4]
        + sorted((local_demo / "images" / "test" / "distractors").glob("*.jpg"))[:2]
    )
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / f"{photo.parent.name}-{photo.name}")
    return folder


def test_build_stores_the_grouping_the_held_out_identities_chose(grouped_index: Path) -> None:
    manifest = GalleryIndex.load(grouped_index).manifest
    grouping = Grouping.from_dict(manifest.grouping)
    assert grouping is not None and grouping.objective == "balanced" and grouping.quantile in QUANTILES
    assert (grouping.link is None) == (grouping.quantile == 1.0)
    held_out = grouping.held_out
    assert held_out["queries"] > 0 and 1 <= held_out["groups"] <= held_out["queries"]
    assert 0.0 <= held_out["balanced"] <= 1.0 and 0.0 < held_out["purity"] <= 1.0


def test_a_grouped_batch_gives_every_photo_of_a_group_one_answer(grouped_index: Path, local_demo: Path) -> None:
    folder = _batch(local_demo, local_demo.parent / "grouped-batch")
    out = local_demo.parent / "grouped-submission.csv"
    run = cli("query", "--index", grouped_index, "--batch", folder, "--out", out, "--group")
    assert run.exit_code == 0, run.stderr
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    assert f"{len(paths)} rows" in run.stdout and "groups" in run.stdout
    submission = pd.read_csv(out)
    assert len(submission) == len(paths)
    rated = cli(
        "query", "--index", grouped_index, "--batch", folder, "--out", out, "--replace", "--group", "--new-rate", "1"
    )
    assert rated.exit_code == 0, rated.stderr
    assert (pd.read_csv(out)["Id"].str.split().str[0] == "unknown").all()  # every group new at rate 1

    # Every join allowed (link 0): photos that match each other share one answer, and no group
    # holds two photos that each name a different identity on their own.
    recognizer = Recognizer.open(grouped_index, progress=False)
    stored = recognizer.index.manifest.grouping
    recognizer.index.manifest = dataclasses.replace(recognizer.index.manifest, grouping={**stored, "link": 0.0})
    views = [""] * len(paths)
    answers, groups = answer_grouped(recognizer, paths, views)
    assert len(set(groups.tolist())) < len(paths)
    for g in set(groups.tolist()):
        rows = np.flatnonzero(groups == g)
        assert len({tuple(answers[r].labels) for r in rows}) == 1
    probes = recognizer.read(paths)
    own = recognizer.rank(recognizer.match(probes.vectors, probes.local, views=views))
    sure = sure_labels(own, recognizer.threshold)
    for g in set(groups.tolist()):
        assert len({sure[r] for r in np.flatnonzero(groups == g)} - {None}) <= 1
    partner, score = batch_links(recognizer, probes, views)
    assert np.all(partner[score > 0] != np.flatnonzero(score > 0))  # a photo never links to itself


def test_grouping_is_refused_where_it_cannot_work(
    grouped_index: Path, local_model: Path, local_demo: Path, tmp_path: Path
) -> None:
    photo = str(sorted((local_demo / "enroll").glob("*.jpg"))[0])
    assert_refused(cli("query", "--index", grouped_index, "--group", photo), "--batch")
    folder = _batch(local_demo, tmp_path / "batch")
    no_local = cli(
        "query", "--index", grouped_index, "--batch", folder, "--out", tmp_path / "s.csv", "--group", "--no-local"
    )
    assert_refused(no_local, "local matching")
    listing = pd.DataFrame({"path": [str(p) for p in sorted(folder.glob("*.jpg"))[:2]], "encounter": ["e1", "e1"]})
    listing.to_csv(tmp_path / "queries.csv", index=False)
    recorded = cli("query", "--index", grouped_index, "--batch", tmp_path / "queries.csv", "--out", tmp_path / "t.csv")
    assert recorded.exit_code == 0, recorded.stderr
    with_group = cli(
        "query", "--index", grouped_index, "--batch", tmp_path / "queries.csv", "--out", tmp_path / "u.csv", "--group"
    )
    assert_refused(with_group, "encounters")
    recognizer = Recognizer.open(grouped_index, progress=False)
    recognizer.index.manifest = dataclasses.replace(recognizer.index.manifest, grouping={})
    with pytest.raises(KenningError, match="no calibrated batch grouping"):
        stored_grouping(recognizer)
    plain = cli(
        "build-index", "--model", local_model, "--data", local_demo, "--split", "test", "--out", tmp_path / "plain",
        "--local", "none", "--set", "index.grouping=true",
    )  # fmt: skip
    assert_refused(plain, "index.grouping needs local matching")
    assert not (tmp_path / "plain" / "manifest.json").exists()
