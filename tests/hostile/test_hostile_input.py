"""Each command on the hostile corpus: bad images of every kind, bombs, hostile labels, malformed CSVs,
paths of the wrong kind, numbers out of range. Refusals are one line and exit 2, batch work skips a
bad file with one warning naming it, nothing is ever a traceback, and a refused command leaves the
index's bytes as they were (issue 11, items 6-10)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image

from kenning.data.images import load_image, set_max_pixels
from kenning.errors import KenningError
from tests.hostile.conftest import assert_refused, cli, snapshot
from tests.hostile.corpus import Corpus, png_of_zeros

BAD_KINDS = [
    "missing", "empty", "text", "truncated_jpeg", "truncated_png", "header_only_jpeg", "garbage_png_body",
    "bomb", "folder", "fifo", "device", "symlink_loop",
]  # fmt: skip
WHAT = {  # what the one line must say about each kind
    "missing": "not found",
    "empty": "not an image",
    "text": "not an image",
    "truncated_jpeg": "unreadable image",
    "truncated_png": "unreadable image",
    "header_only_jpeg": "not an image",
    "garbage_png_body": "not an image",
    "bomb": "too large: ",
    "folder": "is a folder",
    "fifo": "is a FIFO",
    "device": "is a character device",
    "symlink_loop": "cannot access",
}


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_query_refuses_a_bad_image_in_one_line(kind: str, corpus: Corpus, index_copy: Path) -> None:
    before = snapshot(index_copy)
    run = cli("query", corpus.bad[kind], "--index", index_copy)
    assert_refused(run, WHAT[kind], str(corpus.bad[kind]))
    assert snapshot(index_copy) == before


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_enroll_refuses_a_bad_image_in_one_line(kind: str, corpus: Corpus, index_copy: Path) -> None:
    before = snapshot(index_copy)
    run = cli("enroll", corpus.bad[kind], "--index", index_copy, "--label", "newcomer")
    assert_refused(run, "nothing was enrolled", WHAT[kind], str(corpus.bad[kind]))
    assert snapshot(index_copy) == before


def test_enroll_names_each_file_it_could_not_read(corpus: Corpus, index_copy: Path) -> None:
    """Item 8: the good photo is enrolled, each failed one is named with its reason, exit 2."""
    bad = [corpus.bad["truncated_jpeg"], corpus.bad["missing"], corpus.bad["fifo"]]
    run = cli("enroll", corpus.good[0], *bad, "--index", index_copy, "--label", "newcomer")
    assert run.exit_code == 2 and "Traceback" not in run.stderr
    assert "enrolled 1 of 4 image(s) as 'newcomer'" in run.stdout
    assert len(run.error_lines) == 3
    for path, line in zip(bad, run.error_lines, strict=True):
        assert line.startswith("error: not enrolled: ") and str(path) in line
    assert "not found" in run.error_lines[1] and "FIFO" in run.error_lines[2]


def test_build_index_skips_each_bad_gallery_image_with_one_warning(
    corpus: Corpus, trained_model: Path, tmp_path: Path
) -> None:
    """Item 6: a bomb among good images no longer kills the build; every bad file is one warning."""
    data = tmp_path / "gallery"
    data.mkdir()
    rows = [f"{p},good\n" for p in corpus.good] + [f"{corpus.bad[k]},other\n" for k in BAD_KINDS]
    (data / "labels.csv").write_text("image,label\n" + "".join(rows))
    run = cli(
        "build-index", "--model", trained_model, "--data", data, "--out", tmp_path / "index", "--threshold", "0.5"
    )
    assert run.exit_code == 0, run.stderr
    assert f"indexed {len(corpus.good)} images of 1 identities" in run.stdout
    skipped = [line for line in run.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(skipped) == len(BAD_KINDS) and "Traceback" not in run.stderr
    for kind in BAD_KINDS:
        assert sum(str(corpus.bad[kind]) in line for line in skipped) == 1, kind
        assert any(WHAT[kind] in line for line in skipped), kind


def test_batch_query_answers_good_images_and_names_each_bad_one(
    corpus: Corpus, index_copy: Path, tmp_path: Path
) -> None:
    listing = tmp_path / "queries.csv"
    names = [*corpus.good, *(corpus.bad[k] for k in BAD_KINDS)]
    listing.write_text("path\n" + "".join(f"{p}\n" for p in names))
    run = cli("query", "--index", index_copy, "--batch", listing, "--out", tmp_path / "sub.csv")
    assert run.exit_code == 2 and "Traceback" not in run.stderr
    assert len(run.error_lines) == len(BAD_KINDS)
    assert f"{len(names)} rows (whale format), {len(BAD_KINDS)} unreadable" in run.stdout
    assert len((tmp_path / "sub.csv").read_text().splitlines()) == 1 + len(names)


def test_large_legal_image_loads_without_pillow_warning_and_limit_is_configurable(tmp_path: Path) -> None:
    """Over Pillow's own limit (which would warn in several lines), under Kenning's raised one."""
    big = png_of_zeros(tmp_path / "big.png", 9_500, 9_500)  # 90.25 million pixels
    try:
        set_max_pixels(100_000_000)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning fails the test
            assert load_image(big).size == (9_500, 9_500)
        set_max_pixels(90_000_000)
        with pytest.raises(KenningError, match="9500 x 9500 pixels, over the limit of 90000000"):
            load_image(big)
    finally:
        set_max_pixels(89_478_485)


def test_max_pixels_option_and_its_validation(corpus: Corpus, index_copy: Path) -> None:
    run = cli("--max-pixels", "100", "query", corpus.good[0], "--index", index_copy)
    assert_refused(run, "too large", "over the limit of 100")
    assert_refused(cli("--max-pixels", "0", "query", corpus.good[0], "--index", index_copy), "at least 1")
    assert cli("query", corpus.good[0], "--index", index_copy).exit_code == 0  # the limit is per process run


@pytest.mark.parametrize("kind", ["missing_columns", "not_utf8", "empty", "binary", "ragged", "control_label"])
def test_malformed_dataset_csv_is_one_line(kind: str, corpus: Corpus, trained_model: Path, tmp_path: Path) -> None:
    data = corpus.csvs[kind]
    out = tmp_path / "index"
    assert_refused(cli("build-index", "--model", trained_model, "--data", data, "--out", out), "labels.csv")
    assert not out.exists()
    assert_refused(cli("train-embed", "--data", data, "--out", tmp_path / "model"), "labels.csv")
    assert not (tmp_path / "model").exists()
    report = tmp_path / "report"
    assert_refused(cli("eval", "--protocol", "reid", "--model", trained_model, "--data", data, "--report", report))
    assert not report.exists()


@pytest.mark.parametrize("kind", ["newline", "tab", "nul", "escape", "bidi_override", "line_separator", "too_long"])
def test_hostile_label_is_refused_by_enroll(kind: str, corpus: Corpus, index_copy: Path) -> None:
    before = snapshot(index_copy)
    run = cli("enroll", corpus.good[0], "--index", index_copy, "--label", corpus.hostile_labels[kind])
    assert_refused(run, "--label")
    assert "\n" not in run.stderr.rstrip("\n")  # a newline in the label is shown escaped, not printed
    assert snapshot(index_copy) == before


def test_forget_with_hostile_or_unknown_names_changes_nothing(corpus: Corpus, index_copy: Path, tmp_path: Path) -> None:
    before = snapshot(index_copy)
    for label in corpus.hostile_labels.values():
        assert_refused(cli("forget", "--index", index_copy, "--label", label), "nothing was forgotten")
    assert_refused(cli("forget", "--index", index_copy, "--id", "../../etc/passwd"), "nothing was forgotten")
    assert_refused(cli("forget", "--index", tmp_path, "--label", "x"), "not a Kenning index")
    assert_refused(cli("forget", "--index", index_copy), "needs --label")
    assert snapshot(index_copy) == before
    assert not (tmp_path / "index.lock").exists()  # a mistyped index path is not created


def test_paths_of_the_wrong_kind(
    corpus: Corpus, index_copy: Path, trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    """Items 9 and 10: folders where files go, files where folders go, FIFOs and devices as input."""
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("mine")
    a_folder = tmp_path / "a-folder"
    a_folder.mkdir()

    before = snapshot(index_copy)

    run = cli("query", "--index", index_copy, "--batch", corpus.root, "--out", a_folder)
    assert_refused(run, "cannot write submission", "it is a folder")
    assert_refused(cli("eval", "--index", index_copy, "--data", demo_dir, "--report", a_file), "is a regular file")
    assert_refused(cli("build-index", "--model", trained_model, "--data", demo_dir, "--out", a_file), "not a folder")
    assert_refused(cli("train-embed", "--data", demo_dir, "--out", a_file), "not a folder")
    assert_refused(cli("demo-data", a_file), "not a folder")
    assert_refused(cli("query", corpus.good[0], "--index", trained_model), "unsupported index format")
    assert_refused(cli("query", corpus.good[0], "--index", tmp_path / "nowhere"), "not a Kenning index")
    assert_refused(cli("query", corpus.good[0], "--index", index_copy, "--model", index_copy), "model format")
    assert_refused(cli("train-embed", "--data", a_file, "--out", tmp_path / "m"), "is a regular file")
    assert_refused(cli("train-embed", "--data", "/dev/zero", "--out", tmp_path / "m"), "character device")
    assert_refused(
        cli("train-embed", "--data", corpus.root, "--out", tmp_path / "m", "-c", "/dev/zero"), "character device"
    )
    fifo = corpus.bad["fifo"]
    assert_refused(cli("query", "--index", index_copy, "--batch", fifo, "--out", tmp_path / "s.csv"), "FIFO")
    assert_refused(cli("eval", "--submission", fifo, "--solution", fifo, "--format", "whale"), "FIFO")
    assert snapshot(index_copy) == before
    assert a_file.read_text() == "mine" and not any(a_folder.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ("build-index", "--threshold", "nan"),
        ("build-index", "--threshold", "inf"),
        ("build-index", "--threshold", "1.5"),
        ("build-index", "--k", "0"),
        ("build-index", "--power", "-3"),
        ("build-index", "--target-far", "2"),
        ("build-index", "--set", "index.batch_size=0"),
        ("build-index", "--unknown-label", "new whale"),
        ("train-embed", "--epochs", "-1"),
        ("train-embed", "--lr", "nan"),
        ("train-embed", "--image-size", "0"),
        ("train-embed", "--set", "train.holdout_fraction=1.5"),
        ("train-embed", "--set", "loss.margin=inf"),
        ("train-embed", "--set", "train.seed=-1"),
    ],
)
def test_numbers_out_of_range_are_refused_where_parsed(
    args: tuple[str, ...], demo_dir: Path, trained_model: Path, tmp_path: Path
) -> None:
    """Item 7: refused before anything is read or written."""
    out = tmp_path / "out"
    command, *rest = args
    common = ["--model", trained_model] if command == "build-index" else []
    run = cli(command, *common, "--data", demo_dir, "--out", out, *rest)
    assert_refused(run, "must be" if "label" not in rest[0] else "whitespace")
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--power", "nan"), ("--power", "inf"), ("--power", "-3"), ("--k", "0")])
def test_query_voting_options_are_validated(option: str, value: str, corpus: Corpus, index_copy: Path) -> None:
    run = cli("query", corpus.good[0], "--index", index_copy, option, value)
    assert_refused(run, f"index.{option[2:]}")


def test_tampered_voting_settings_in_the_manifest_are_refused(corpus: Corpus, index_copy: Path) -> None:
    manifest = index_copy / "manifest.json"
    good = json.loads(manifest.read_text())
    for change in ({"k": 0}, {"power": -1}, {"threshold": 7}, {"k": "five"}):
        manifest.write_text(json.dumps({**good, **change}))
        assert_refused(cli("query", corpus.good[0], "--index", index_copy), "manifest.json")


def test_corpus_good_images_are_really_good(corpus: Corpus) -> None:
    """The corpus's controls: the good files load, so the refusals above are about the bad ones."""
    for path in corpus.good:
        assert load_image(path).size == Image.open(path).size


def test_an_operating_system_error_is_one_line(built_index: Path, demo_dir: Path) -> None:
    """A write the system refuses (here: a folder under /proc) ends in one line, not a traceback."""
    run = cli("eval", "--index", built_index, "--data", demo_dir, "--split", "test", "--report", "/proc/kenning-report")
    assert run.exit_code == 2 and "Traceback" not in run.stderr  # (stderr also holds the progress bar)
    assert len(run.error_lines) == 1 and "/proc/kenning-report" in run.error_lines[0]
