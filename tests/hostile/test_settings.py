"""Issue 20, items 9, 15, 17, 18 and 23: settings that would exhaust the machine, abort FAISS or reach
the network are refused in one line before any work; a full disk during a write is one line and
leaves the index as it was."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.conftest import assert_refused, cli, snapshot
from tests.hostile.corpus import HOSTILE_ANNOY_TYPES, HOSTILE_INDEX_TYPES, Corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("index_type", sorted(HOSTILE_INDEX_TYPES))
def test_hostile_faiss_strings_are_refused_before_building(
    index_type: str, trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    """Item 9: HNSW0 aborted the process (SIGABRT), IDMap,Flat gave a traceback."""
    out = tmp_path / "index"
    run = cli(
        "build-index", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", out,
        "--index-type", index_type,
    )  # fmt: skip
    assert_refused(run, HOSTILE_INDEX_TYPES[index_type])
    assert not out.exists()


@pytest.mark.parametrize("index_type", sorted(HOSTILE_ANNOY_TYPES))
def test_annoy_trees_are_bounded(index_type: str, trained_model: Path, demo_dir: Path, tmp_path: Path) -> None:
    """Item 9: trees=99999999 wrote a ~50 GB temporary and took 13 GB of memory."""
    run = cli(
        "build-index", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", tmp_path / "i",
        "--backend", "annoy", "--index-type", index_type,
    )  # fmt: skip
    assert_refused(run, HOSTILE_ANNOY_TYPES[index_type])


def _limited_writes(limit: int) -> None:
    """In the child: writes past `limit` bytes fail with EFBIG, as on a full disk (SIGXFSZ ignored)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_during_compaction_is_one_line_and_harms_nothing(corpus: Corpus, index_copy: Path) -> None:
    """Item 15: FAISS's RuntimeError was a traceback (the index itself was unharmed: still so)."""
    assert cli("enroll", corpus.good[0], "--index", index_copy, "--label", "newcomer").exit_code == 0
    before = snapshot(index_copy)
    done = subprocess.run(
        [sys.executable, "-m", "kenning", "build-index", "--compact", "--out", str(index_copy)],
        capture_output=True,
        text=True,
        preexec_fn=lambda: _limited_writes(2048),
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=ROOT,
        timeout=300,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]  # beside progress bars
    assert done.returncode == 2 and len(errors) == 1 and "cannot write" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "/project/faiss" not in done.stderr
    assert snapshot(index_copy) == before
    assert cli("query", corpus.good[0], "--index", index_copy).exit_code == 0


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["--set", "index.k=[1"], "not valid YAML"),
        (["--set", "index.k=@x"], "not valid YAML"),
        (["--set", "index.k=x: [y"], "not valid YAML"),
        (["--backbone", "../../etc"], "is a path, not a model name"),
        (["--backbone", "hf-hub:timm/resnet18"], "hub models are downloaded"),
        (["--backbone", "timm/resnet18.a1_in1k"], "hub models are downloaded"),
    ],
)
def test_bad_settings_are_one_line_and_nothing_is_downloaded(
    sets: list[str], needle: str, demo_dir: Path, tmp_path: Path
) -> None:
    """Item 17: tracebacks; `hf-hub:` tried the network."""
    out = tmp_path / "model"
    assert_refused(cli("train-embed", "--data", demo_dir, "--out", out, *sets), needle)
    assert not out.exists()


def test_a_config_file_with_bad_yaml_is_one_line(demo_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epochs: [1\n")
    assert_refused(cli("train-embed", "--data", demo_dir, "--out", tmp_path / "m", "-c", config), "not valid YAML")
    config.write_text("train: !!python/object/apply:os.system ['echo owned']\n")
    assert_refused(cli("train-embed", "--data", demo_dir, "--out", tmp_path / "m", "-c", config), "not valid YAML")


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--max-upload-mb", "nan", "--max-upload-mb"),
        ("--max-upload-mb", "inf", "--max-upload-mb"),
        ("--max-upload-mb", "-1", "--max-upload-mb"),
        ("--port", "70000", "--port"),
        ("--port", "-1", "--port"),
        ("--port", "0", "--port"),
        ("--max-request-pixels", "0", "--max-request-pixels"),
        ("--cors-origin", "*", "--cors-origin"),
    ],
)
def test_serve_refuses_numbers_out_of_range(option: str, value: str, needle: str, index_copy: Path) -> None:
    """Item 18: tracebacks, a service that answered 413 to every request, a URL ending ':0'."""
    assert_refused(cli("serve", "--index", index_copy, option, value), needle)


def test_os_errors_keep_their_own_words() -> None:
    """Item 23: "error: FileNotFoundError", without the file it was about."""
    from kenning.cli import os_error_line

    assert os_error_line(FileNotFoundError(2, "No such file or directory", "/x/y.parquet")) == (
        "No such file or directory: /x/y.parquet"
    )
    assert os_error_line(FileNotFoundError("Failed to open local file '/x/y.parquet'")) == (
        "FileNotFoundError: Failed to open local file '/x/y.parquet'"
    )
