"""The hostile-input suite: every command, run in-process as a user runs it, on a generated corpus."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kenning.cli import app
from tests.hostile.corpus import Corpus, make_corpus


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def cli(*args: str | Path) -> Run:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return Run(result.exit_code, result.stdout, result.stderr, result.exception)


def assert_refused(run: Run, *needles: str) -> None:
    """Exit 2, exactly one line on stderr (an error naming the problem), no traceback."""
    assert run.exit_code == 2, (run.exit_code, run.stdout, run.stderr, run.exception)
    assert isinstance(run.exception, SystemExit) or run.exception is None, repr(run.exception)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory`: bytes and mode (what a refused command must leave as it was)."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def corpus(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    photos = sorted((demo_dir / "images" / "train").glob("landmark_*/0.jpg"))[:4]  # the test split is indexed
    return make_corpus(tmp_path_factory.mktemp("hostile"), photos)


@pytest.fixture()
def index_copy(built_index: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(built_index, copy)
    return copy
