"""Issue 20, items 20-23: a damaged or tampered index or model is refused in one line by every
command, never half-read, never built upon; a foreign training checkpoint is not resumed from and
leaves no lock behind; messages say what differs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kenning.index.manifest import MANIFEST
from tests.hostile.conftest import assert_refused, cli, snapshot
from tests.hostile.corpus import TAMPERED_INDEX_MANIFEST, TAMPERED_MODEL_MANIFEST, Corpus


def _manifest(index: Path) -> dict:
    return json.loads((index / MANIFEST).read_text())


def _write_manifest(index: Path, manifest: dict) -> None:
    (index / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("key", sorted(TAMPERED_INDEX_MANIFEST))
def test_a_tampered_index_manifest_is_refused_by_every_command(key: str, corpus: Corpus, index_copy: Path) -> None:
    """Item 20: values of the wrong type or out of range were accepted (a negative next_id) or failed later."""
    value, needle = TAMPERED_INDEX_MANIFEST[key]
    _write_manifest(index_copy, {**_manifest(index_copy), key: value})
    before = snapshot(index_copy)
    assert_refused(cli("query", corpus.good[0], "--index", index_copy), needle)
    assert_refused(cli("enroll", corpus.good[0], "--index", index_copy, "--label", "newcomer"), needle)
    assert_refused(cli("forget", "--index", index_copy, "--label", "newcomer"), needle)
    assert snapshot(index_copy) == before


def test_an_object_array_of_removed_ids_is_refused(corpus: Corpus, index_copy: Path) -> None:
    """Item 20: removed-G.npy holding a pickled object array (its size recorded anew, as a careful
    tamperer would) is refused by its type, without unpickling it."""
    manifest = _manifest(index_copy)
    path = index_copy / manifest["removed_file"]
    np.save(path, np.array([{"not": "an id"}], dtype=object), allow_pickle=True)
    manifest["file_sizes"][manifest["removed_file"]] = path.stat().st_size
    _write_manifest(index_copy, manifest)
    assert_refused(cli("query", corpus.good[0], "--index", index_copy), "is damaged")
    assert_refused(cli("forget", "--index", index_copy, "--label", "x"), "is damaged")


def test_a_fifo_in_place_of_the_base_file_is_refused_not_waited_on(corpus: Corpus, index_copy: Path) -> None:
    """Item 20: the query blocked forever opening the FIFO."""
    base = index_copy / _manifest(index_copy)["base_file"]
    base.unlink()
    os.mkfifo(base)
    assert_refused(cli("query", corpus.good[0], "--index", index_copy), "is a FIFO")
    assert_refused(cli("enroll", corpus.good[0], "--index", index_copy, "--label", "x"), "is a FIFO")


def test_a_truncated_base_file_is_refused_by_writers_too(corpus: Corpus, index_copy: Path) -> None:
    """Item 20: query refused a truncated base, but enrol and forget committed into the index."""
    base = index_copy / _manifest(index_copy)["base_file"]
    base.write_bytes(base.read_bytes()[:-100])
    before = snapshot(index_copy)
    assert_refused(cli("query", corpus.good[0], "--index", index_copy), "truncated or replaced")
    assert_refused(cli("enroll", corpus.good[0], "--index", index_copy, "--label", "x"), "truncated or replaced")
    assert_refused(cli("forget", "--index", index_copy, "--label", "x"), "truncated or replaced")
    assert_refused(cli("build-index", "--compact", "--out", index_copy), "truncated or replaced")
    assert snapshot(index_copy) == before


@pytest.mark.parametrize("case", sorted(TAMPERED_MODEL_MANIFEST))
def test_a_tampered_model_manifest_is_refused(case: str, corpus: Corpus, index_copy: Path, tmp_path: Path) -> None:
    """Item 21: image_size 100000 was OOM-killed at 17 GB; std 0 divided by zero; "224" a traceback."""
    key, value, needle = TAMPERED_MODEL_MANIFEST[case]
    model = Path(shutil.copytree(_manifest(index_copy)["model_dir"], tmp_path / "model"))
    manifest = json.loads((model / "manifest.json").read_text())
    manifest[key] = value
    (model / "manifest.json").write_text(json.dumps(manifest))
    assert_refused(cli("query", corpus.good[0], "--index", index_copy, "--model", model), "is damaged", needle)


def test_a_model_whose_size_differs_says_so(corpus: Corpus, index_copy: Path, tmp_path: Path) -> None:
    """Item 23: "built with model 55792bb5..., not with model 55792bb5..." named the same model twice."""
    model = Path(shutil.copytree(_manifest(index_copy)["model_dir"], tmp_path / "model"))
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["embedding_dim"] = 32
    (model / "manifest.json").write_text(json.dumps(manifest))
    run = cli("query", corpus.good[0], "--index", index_copy, "--model", model)
    assert_refused(run, "index holds 64-d vectors", "gives 32-d ones")


def test_another_tools_checkpoint_is_refused_and_no_lock_is_left(demo_dir: Path, tmp_path: Path) -> None:
    """Item 22: a folder holding another tool's checkpoints/last.pt gave a KeyError traceback and
    kept a train.lock."""
    out = tmp_path / "experiment"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "step": 7}, out / "checkpoints" / "last.pt")
    before = snapshot(out)
    run = cli("train-embed", "--data", demo_dir, "--out", out, "--epochs", "1", "--image-size", "32")
    assert_refused(run, "is not a Kenning training checkpoint")
    assert snapshot(out) == before and not (out / "train.lock").exists()
