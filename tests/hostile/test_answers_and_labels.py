"""Issue 20, items 10-13 and 16: no silently wrong answers. Every batch input is answered or named,
two inputs never share a submission key, look-alike labels are refused and NFC/NFD spellings are one
identity, a typo among the images to forget removes nothing, a short landmark id is one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kenning.index.gallery import GalleryIndex
from kenning.index.manifest import read_index_manifest
from tests.hostile.conftest import assert_refused, cli, snapshot
from tests.hostile.corpus import LOOK_ALIKE_LABELS, NFC_LABEL, NFD_LABEL, Corpus, batch_folder


def test_two_inputs_with_one_landmark_id_are_refused_before_any_image_is_read(
    corpus: Corpus, index_copy: Path, tmp_path: Path
) -> None:
    """Item 10: x.jpg and x.png gave two rows with id x, which Kenning's own scorer then refused."""
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(corpus.good[0].read_bytes())
    (folder / "x.png").write_bytes(corpus.good[3].read_bytes())
    out = tmp_path / "submission.csv"
    run = cli("query", "--index", index_copy, "--batch", folder, "--format", "landmark", "--out", out)
    assert_refused(run, "'x.jpg' and 'x.png' would both be 'x'")
    assert not out.exists()
    run = cli("query", "--index", index_copy, "--batch", folder, "--format", "whale", "--out", out)
    assert run.exit_code == 0, run.stderr  # whale keys are file names: x.jpg and x.png differ
    assert sorted(pd.read_csv(out)["Image"]) == ["x.jpg", "x.png"]


def test_every_batch_input_is_answered_or_named(corpus: Corpus, index_copy: Path, tmp_path: Path) -> None:
    """Item 11: a dangling link, a FIFO and a link to /dev/zero named *.jpg were left out silently."""
    folder, entries = batch_folder(tmp_path, corpus.good[0])
    out = tmp_path / "submission.csv"
    run = cli("query", "--index", index_copy, "--batch", folder, "--out", out)
    assert run.exit_code == 2 and "Traceback" not in run.stderr
    rows = pd.read_csv(out, keep_default_na=False)
    assert sorted(rows["Image"]) == sorted(p.name for k, p in entries.items() if k != "text")
    assert "wrote" in run.stdout and "4 rows" in run.stdout and "3 unreadable" in run.stdout
    errors = run.error_lines
    for kind, needle in (("dangling", "not found"), ("fifo", "FIFO"), ("device", "character device")):
        assert any(str(entries[kind]) in line and needle in line for line in errors), (kind, errors)
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert [w for w in warnings if "notes.txt" in w] == [w for w in warnings if "not images by their names" in w]
    assert len([w for w in warnings if "notes.txt" in w]) == 1


@pytest.mark.parametrize("kind", sorted(LOOK_ALIKE_LABELS))
def test_look_alike_labels_are_refused_everywhere(kind: str, corpus: Corpus, index_copy: Path, tmp_path: Path) -> None:
    """Item 12: "Caf\\u200be" and "Cafe" were two identities that look the same."""
    label = LOOK_ALIKE_LABELS[kind]
    before = snapshot(index_copy)
    assert_refused(cli("enroll", corpus.good[0], "--index", index_copy, "--label", label), "invisible character")
    assert snapshot(index_copy) == before
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.csv").write_text(f"image,label\n{corpus.good[0]},{label}\n", encoding="utf-8")
    assert_refused(cli("train-embed", "--data", data, "--out", tmp_path / "model"), "row 1", "invisible character")


def test_nfc_and_nfd_spellings_are_one_identity(corpus: Corpus, index_copy: Path, tmp_path: Path) -> None:
    """Item 12: the same name typed on two keyboards is one identity, stored in NFC."""
    assert cli("enroll", corpus.good[0], "--index", index_copy, "--label", NFD_LABEL).exit_code == 0
    assert cli("enroll", corpus.good[1], "--index", index_copy, "--label", NFC_LABEL).exit_code == 0
    table = GalleryIndex.load(index_copy).table
    assert (table["label"] == NFC_LABEL).sum() == 2 and not (table["label"] == NFD_LABEL).any()
    run = cli("forget", "--index", index_copy, "--label", NFD_LABEL)
    assert run.exit_code == 0 and "removed 2 image(s)" in run.stdout
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.csv").write_text(f"image,label\n{corpus.good[0]},{NFD_LABEL}\n", encoding="utf-8")
    from kenning.data.readers import read_dataset

    assert read_dataset(data)["label"].tolist() == [NFC_LABEL]


def test_a_typo_among_the_images_to_forget_removes_nothing(corpus: Corpus, index_copy: Path) -> None:
    """Item 13: `forget --id good --id typo.jpg` removed one and said nothing of the typo."""
    assert cli("enroll", corpus.good[0], "--index", index_copy, "--label", "newcomer").exit_code == 0
    good = GalleryIndex.load(index_copy).table.query("label == 'newcomer'")["image_id"].item()
    before = snapshot(index_copy)
    run = cli("forget", "--index", index_copy, "--id", good, "--id", "typo.jpg")
    assert_refused(run, "no image 'typo.jpg'", "nothing was forgotten")
    assert snapshot(index_copy) == before
    run = cli("forget", "--index", index_copy, "--label", "newcomer", "--label", "nobody")
    assert_refused(run, "no label 'nobody'", "nothing was forgotten")
    assert read_index_manifest(index_copy).count == GalleryIndex.load(index_copy).manifest.count


def test_a_short_landmark_id_is_one_line(tmp_path: Path) -> None:
    """Item 16: the landmark layout puts `abc` at train/a/b/c/abc.jpg; `ab` gave an IndexError."""
    data = tmp_path / "landmarks"
    data.mkdir()
    (data / "train.csv").write_text("id,landmark_id\n0123abcd,7\nab,8\n")
    assert_refused(cli("train-embed", "--data", data, "--out", tmp_path / "model"), "row 2", "id 'ab'")
    (data / "train.csv").write_text("id,landmark_id\n../../etc/passwd,7\n")
    assert_refused(cli("train-embed", "--data", data, "--out", tmp_path / "model"), "row 1", "not a Google Landmark")
