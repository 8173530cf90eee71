"""Viewpoint-aware matching: a photo of one flank is never matched against the other flank, in
either stage, and an index without viewpoints answers exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kenning.build import build_index
from kenning.config import LocalConfig
from kenning.data.readers import read_dataset, select_split
from kenning.recognizer import Recognizer
from tests.conftest import small_config


@pytest.fixture(scope="module")
def flanks(local_model: Path, local_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The local demo's test split with every other photo a 'left', the rest 'right' flanks."""
    gallery = select_split(read_dataset(local_demo), "test")
    gallery = gallery[gallery["label"] != ""].reset_index(drop=True)
    gallery["viewpoint"] = np.where(np.arange(len(gallery)) % 2 == 0, "left", "right")
    out = tmp_path_factory.mktemp("flanks")
    local = LocalConfig(method="sift", max_keypoints=200, image_side=256)
    build_index(local_model, gallery, small_config().index, out, progress=False, local=local)
    return out, gallery


@pytest.mark.parametrize("shortlist", [False, True])
def test_both_stages_match_only_the_same_flank(flanks: tuple[Path, object], shortlist: bool) -> None:
    """One descriptor index of the flank's images, or (a gallery too large for one) the shortlist
    with the other flank's images skipped like forgotten ones."""
    out, gallery = flanks
    recognizer = Recognizer.open(out, progress=False)
    index = recognizer.index
    if shortlist:
        index.manifest.local["max_descriptors"] = 1
    paths = gallery["path"].tolist()[:6]
    probes = recognizer.read(paths)
    for view in ("left", "right"):
        matches = recognizer.match(probes.vectors, probes.local, views=[view] * len(paths))
        found = matches.neighbours.ids[matches.neighbours.ids >= 0]
        assert len(found) and set(index.column_of(found, "viewpoint")) == {view}  # global stage
        local_ids = np.concatenate([s.image_ids for s in matches.local])
        assert len(local_ids) and set(index.column_of(local_ids, "viewpoint")) == {view}  # local stage
        for candidates in matches.candidates:  # every candidate identity has a photo of that flank
            flank_labels = set(gallery.loc[gallery["viewpoint"] == view, "label"])
            assert set(candidates.labels) <= flank_labels
        assert recognizer._matcher_for(view).searchable != shortlist  # the path this case is about


def test_any_viewpoint_and_unknown_queries_match_everything(flanks: tuple[Path, object]) -> None:
    out, gallery = flanks
    recognizer = Recognizer.open(out, progress=False)
    probes = recognizer.read(gallery["path"].tolist()[:3])
    free = recognizer.match(probes.vectors, probes.local, views=["", "", ""])
    recognizer.configure(viewpoints="any")
    everything = recognizer.match(probes.vectors, probes.local, views=["left"] * 3)
    assert np.array_equal(free.neighbours.ids, everything.neighbours.ids)
    assert set(recognizer.index.column_of(free.neighbours.ids[free.neighbours.ids >= 0], "viewpoint")) == {
        "left",
        "right",
    }
