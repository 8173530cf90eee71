"""`kenning embed`: chunked, resumable, sharded over torchrun; `build-index --embeddings` from its output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kenning.data.readers import read_dataset, select_split
from kenning.embeddings.checkpoint import load_model
from kenning.embeddings.inference import embed_paths, manifest_transform
from kenning.embeddings.shards import EmbeddingSet, chunk_name
from kenning.recognizer import Recognizer
from tests.conftest import small_config
from tests.embeddings.test_distributed import _torchrun
from tests.hostile.conftest import cli
from tests.processes import kill_when

ROOT = Path(__file__).resolve().parent.parent.parent
CHUNK = "16"


def _vectors(folder: Path, part: str = "gallery") -> tuple[list[str], np.ndarray]:
    chunks = list(EmbeddingSet(folder).chunks(part))
    return [p for rows, _ in chunks for p in rows["path"]], np.concatenate([v for _, v in chunks])


@pytest.fixture(scope="module")
def embedded(trained_model: Path, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("embedded") / "emb"
    run = cli("embed", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", out,
              "--chunk-size", CHUNK, "--quiet")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    return out


def test_embed_writes_chunks_of_the_gallery_and_the_held_out_images(embedded: Path, trained_model: Path) -> None:
    manifest = json.loads((embedded / "manifest.json").read_text())
    n_chunks = -(-manifest["rows"] // manifest["chunk_size"])
    assert n_chunks > 2 and sorted(p.name for p in embedded.glob("chunk-*")) == [chunk_name(c) for c in range(n_chunks)]
    paths, vectors = _vectors(embedded)
    model, model_manifest = load_model(trained_model)
    direct = embed_paths(model, paths, manifest_transform(model_manifest), progress=False)
    assert direct.ok.all() and np.allclose(direct.vectors, vectors, atol=1e-5)
    holdout_paths, _ = _vectors(embedded, "holdout")
    assert len(holdout_paths) > 0 and not set(holdout_paths) & set(paths)


def test_a_killed_embed_resumes_without_redoing_finished_chunks(
    embedded: Path, trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "emb"
    args = ["embed", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", out,
            "--chunk-size", "8", "--quiet"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *map(str, args)])
    kill_when(proc, lambda: len(list(out.glob("chunk-*.parquet"))) >= 2, tree=True)
    finished = {p.name: p.stat().st_ino for p in out.glob("chunk-*.parquet")}
    total = -(-json.loads((out / "manifest.json").read_text())["rows"] // 8)
    assert 2 <= len(finished) < total

    run = cli("build-index", "--embeddings", out, "--out", tmp_path / "index")
    assert run.exit_code == 2 and "unfinished" in run.stderr and "kenning embed" in run.stderr
    assert not (tmp_path / "index").exists()

    run = cli(*args)
    assert run.exit_code == 0, run.stderr
    assert {n: (out / n).stat().st_ino for n in finished} == finished  # not written again
    assert len(list(out.glob("chunk-*.parquet"))) == total
    paths, vectors = _vectors(out)
    reference_paths, reference = _vectors(embedded)
    assert paths == reference_paths and np.allclose(vectors, reference, atol=1e-6)

    other = cli(*args[:-2], "16", "--quiet")  # another chunk size into the same folder
    assert other.exit_code == 2 and "another model, image list" in other.stderr


def test_two_ranks_embed_the_same_vectors_as_one_process(
    embedded: Path, trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "emb"
    args = ["embed", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", out,
            "--chunk-size", CHUNK, "--quiet"]  # fmt: skip
    done = subprocess.run(_torchrun(*args), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("embedded") == 1
    for part in ("gallery", "holdout"):
        paths, vectors = _vectors(out, part)
        reference_paths, reference = _vectors(embedded, part)
        assert paths == reference_paths and np.allclose(vectors, reference, atol=1e-5)


def test_an_index_built_from_embeddings_answers_as_one_built_from_images(
    embedded: Path, built_index: Path, demo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "index"
    run = cli("build-index", "--embeddings", embedded, "--out", out, "--k", str(small_config().index.k))
    assert run.exit_code == 0, run.stderr
    ours, theirs = (json.loads((d / "manifest.json").read_text()) for d in (out, built_index))
    assert ours["threshold"] == pytest.approx(theirs["threshold"], abs=1e-6) and ours["count"] == theirs["count"]
    queries = select_split(read_dataset(demo_dir), "test")["path"].tolist()[:40]
    ours, theirs = (Recognizer.open(d, progress=False).query(queries) for d in (out, built_index))

    def rounded(answers: list) -> list:
        return [(p.labels, [None if c is None else round(c, 5) for c in p.confidences]) for p in answers]

    assert rounded(ours) == rounded(theirs)
    assert len({p.labels[0] for p in ours}) > 1  # not one answer for everything


def test_an_approximate_index_from_embeddings_records_its_tuned_search_settings(embedded: Path, tmp_path: Path) -> None:
    out = tmp_path / "index"
    run = cli("build-index", "--embeddings", embedded, "--out", out, "--index-type", "IVF1,Flat")
    assert run.exit_code == 0, run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    point = manifest["operating_point"]
    assert point["reached"] and point["recall"] >= point["target"] == 0.95
    assert manifest["search_params"] == point["search_params"] == "nprobe=1"  # one list: all it can do
    assert f"search settings {point['search_params']}" in run.stdout


def test_embeddings_refuse_what_they_cannot_do(embedded: Path, trained_model: Path, tmp_path: Path) -> None:
    run = cli("build-index", "--embeddings", embedded, "--out", tmp_path / "i", "--local", "sift")
    assert run.exit_code == 2 and "local features need the images" in run.stderr
    run = cli("build-index", "--embeddings", embedded, "--out", tmp_path / "i", "--flip-tta")
    assert run.exit_code == 2 and "without flip TTA" in run.stderr
    run = cli("build-index", "--embeddings", embedded, "--model", trained_model, "--out", tmp_path / "i")
    assert run.exit_code == 2 and "drop --model" in run.stderr
    run = cli("build-index", "--embeddings", tmp_path, "--out", tmp_path / "i")
    assert run.exit_code == 2 and "not an embeddings folder" in run.stderr
    assert not (tmp_path / "i").exists()


def test_viewpoints_travel_through_embed_chunks_into_the_index(
    trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    """labels.csv's viewpoint and encounter columns are kept in the chunks and reach the index."""
    import pandas as pd

    table = pd.read_csv(demo_dir / "labels.csv", dtype=str, keep_default_na=False)
    test = table[(table["split"] == "test") & (table["label"] != "")].head(12).copy()
    test["image"] = [str((demo_dir / i).resolve()) for i in test["image"]]
    test["viewpoint"] = ["left", "right"] * 6
    test["encounter"] = [f"e{i // 2}" for i in range(12)]
    data = tmp_path / "data"
    data.mkdir()
    test.to_csv(data / "labels.csv", index=False)
    out = tmp_path / "vectors"
    assert cli("embed", "--model", trained_model, "--data", data, "--out", out, "--quiet").exit_code == 0
    chunk = EmbeddingSet(out).table("gallery")
    assert chunk["viewpoint"].tolist() == test["viewpoint"].tolist()
    run = cli("build-index", "--embeddings", out, "--out", tmp_path / "index", "--threshold", "0.5")
    assert run.exit_code == 0, run.stderr
    from kenning.index.gallery import GalleryIndex

    stored = GalleryIndex.load(tmp_path / "index").table.sort_values("id")
    assert stored["viewpoint"].tolist() == test["viewpoint"].tolist()
    assert stored["encounter"].tolist() == test["encounter"].tolist()
