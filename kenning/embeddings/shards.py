"""Embeddings on disk in chunks: what `kenning embed` writes and `build-index --embeddings` reads.

Layout of an embeddings folder:
- `manifest.json`: the model's manifest (fingerprint, size, transform), flip TTA, chunk size, row
  count and a digest of the row list, so a resumed run provably embeds the same images;
- `rows.parquet`: the images to embed, in order: image_id, label, path, part (`gallery`, or
  `holdout`: the model's held-out images, embedded too so that the index can be calibrated
  without the model);
- `chunk-NNNNNN.parquet`: rows [N x chunk, (N + 1) x chunk): image_id, label, path, part, sha256,
  ok, vector (float32 x dim; zeros where the image could not be read).

Each chunk is written atomically and never again: a killed run resumes by embedding only the
chunks that are missing, with any number of processes. Under torchrun, rank r embeds chunks r,
r + W, r + 2W, ..., so embedding spreads over GPUs and machines and the index is built on one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from kenning.atomic import atomic_save, atomic_write_json
from kenning.data.duplicates import DIGEST, file_digests
from kenning.data.metadata import ENCOUNTER, VIEWPOINT, with_metadata
from kenning.embeddings.checkpoint import ModelManifest, load_holdout, load_model
from kenning.embeddings.device import select_device
from kenning.embeddings.distributed import Ranks, barrier, from_main, process_group
from kenning.embeddings.inference import Embedded, embed_paths, manifest_transform
from kenning.errors import KenningError
from kenning.manifests import read_manifest
from kenning.paths import require_output_dir

FORMAT = "kenning-embeddings/1"
MANIFEST = "manifest.json"
ROWS = "rows.parquet"
PARTS = ("gallery", "holdout")
ROW_COLUMNS = ["image_id", "label", "path", "part"]
METADATA = [VIEWPOINT, ENCOUNTER]  # stored beside the rows; a folder written before them reads them from names
OWN_FILE = re.compile(r"^(?:manifest\.json|rows\.parquet|chunk-\d{6}\.parquet)$")


@dataclass
class EmbeddingsManifest:
    model_dir: str
    model: dict  # the ModelManifest the vectors come from
    flip_tta: bool
    chunk_size: int
    rows: int
    rows_digest: str
    format: str = FORMAT

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.chunk_size)

    @property
    def model_manifest(self) -> ModelManifest:
        return ModelManifest(**self.model)


def chunk_name(number: int) -> str:
    return f"chunk-{number:06d}.parquet"


def is_embeddings_dir(directory: Path) -> bool:
    """An embeddings folder (its manifest must read as one), or one holding only what `embed` writes."""
    from kenning.atomic import ANY_TEMPORARY

    if (directory / MANIFEST).exists():
        read_embeddings_manifest(directory)  # a foreign manifest is refused, by name
        return True
    return all(OWN_FILE.match(p.name) or ANY_TEMPORARY.match(p.name) for p in directory.iterdir())


def read_embeddings_manifest(directory: Path) -> EmbeddingsManifest:
    return read_manifest(directory / MANIFEST, EmbeddingsManifest, FORMAT, "embeddings manifest")


def rows_digest(rows: pd.DataFrame) -> str:
    """The image list's fingerprint: its metadata counts only where some is recorded, so a folder
    written before viewpoints existed is still finished by the same command."""
    stated = [c for c in METADATA if c in rows and (rows[c] != "").any()]
    return hashlib.sha256(rows[[*ROW_COLUMNS, *stated]].to_csv(index=False).encode()).hexdigest()[:16]


def embed_to_dir(
    model_dir: str | Path,
    gallery: pd.DataFrame,
    out: str | Path,
    flip_tta: bool = False,
    chunk_size: int = 4096,
    batch_size: int = 32,
    progress: bool = True,
) -> EmbeddingsManifest:
    """Embed `gallery` (and the model's held-out images) into `out`, chunk by chunk; a folder a killed
    run left is finished, not restarted. Under torchrun each rank embeds its own chunks."""
    out = Path(out)
    with process_group() as ranks:
        manifest = from_main(ranks, lambda: _plan(model_dir, gallery, out, flip_tta, chunk_size))
        rows = pd.read_parquet(out / ROWS)  # the folder is shared by every rank (and read whole by build-index)
        todo = [c for c in range(ranks.rank, manifest.chunks, ranks.world) if not (out / chunk_name(c)).is_file()]
        if todo:
            _embed_chunks(model_dir, manifest, rows, out, todo, ranks, batch_size, progress and ranks.is_main)
        barrier(ranks)  # rank 0 reports only when every rank's chunks are on disk
    return manifest


def _plan(
    model_dir: str | Path, gallery: pd.DataFrame, out: Path, flip_tta: bool, chunk_size: int
) -> EmbeddingsManifest:
    """The row list and manifest (rank 0): written on a first run, checked against on a resume."""
    _, model = load_model(model_dir)
    holdout = load_holdout(model_dir)
    parts = [gallery.assign(part="gallery")]
    if holdout is not None and not holdout.empty:
        parts.append(holdout.assign(part="holdout"))
    rows = with_metadata(pd.concat(parts))[[*ROW_COLUMNS, *METADATA]].astype(str).reset_index(drop=True)
    manifest = EmbeddingsManifest(
        str(Path(model_dir).resolve()), dataclasses.asdict(model), flip_tta, chunk_size, len(rows), rows_digest(rows)
    )
    return start_folder(out, manifest, rows)


def start_folder(out: Path, manifest: EmbeddingsManifest, rows: pd.DataFrame) -> EmbeddingsManifest:
    """Write the row list and manifest of a new folder, or check them against an unfinished one."""
    require_output_dir(out, "embeddings folder", is_embeddings_dir)
    if (out / MANIFEST).exists():
        before = read_embeddings_manifest(out)
        if dataclasses.asdict(before) != dataclasses.asdict(manifest):
            raise KenningError(
                f"{out} holds embeddings of another model, image list, flip setting or chunk size: "
                "choose another --out (or the same settings to finish that run)"
            )
        return before
    out.mkdir(parents=True, exist_ok=True)
    atomic_save(out / ROWS, lambda p: rows.to_parquet(p, index=False))
    atomic_write_json(out / MANIFEST, dataclasses.asdict(manifest))
    return manifest


def write_chunk(out: Path, number: int, rows: pd.DataFrame, vectors: np.ndarray, ok: np.ndarray) -> None:
    """One chunk file, atomically: `rows` (ROW_COLUMNS and sha256) with each image's vector."""
    table = pa.Table.from_pandas(rows.assign(ok=ok), preserve_index=False)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    table = table.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
    atomic_save(out / chunk_name(number), lambda p: pq.write_table(table, p))


def _embed_chunks(
    model_dir: str | Path,
    manifest: EmbeddingsManifest,
    rows: pd.DataFrame,
    out: Path,
    todo: list[int],
    ranks: Ranks,
    batch_size: int,
    progress: bool,
) -> None:
    model, model_manifest = load_model(model_dir)
    device = select_device("auto", ranks.local_rank, ranks.local_world)
    transform = manifest_transform(model_manifest)
    dim = model_manifest.embedding_dim
    size = manifest.chunk_size
    total = sum(len(rows.iloc[n * size : (n + 1) * size]) for n in todo)
    bar = tqdm(total=total, desc=f"embedding ({len(todo)} chunks)", unit="img", disable=not progress)
    for number in todo:
        part = rows.iloc[number * size : (number + 1) * size]
        paths = part["path"].tolist()
        embedded = embed_paths(model, paths, transform, batch_size, manifest.flip_tta, device=device, progress=False)
        for err in embedded.errors if progress else ():
            tqdm.write(f"warning: skipped {err}")
        vectors = np.zeros((len(part), dim), dtype=np.float32)
        vectors[embedded.ok] = embedded.vectors
        write_chunk(out, number, part.assign(**{DIGEST: file_digests(paths, False)}), vectors, embedded.ok)
        bar.update(len(part))
    bar.close()


class EmbeddingSet:
    """A finished embeddings folder, read chunk by chunk (never all vectors at once)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / MANIFEST).is_file():
            raise KenningError(f"{self.directory} is not an embeddings folder (no {MANIFEST}): run `kenning embed`")
        self.manifest = read_embeddings_manifest(self.directory)
        self._parts: dict[str, tuple[pd.Index, np.ndarray]] = {}  # lookup's parts, by path
        missing = [c for c in range(self.manifest.chunks) if not (self.directory / chunk_name(c)).is_file()]
        if missing:
            raise KenningError(
                f"{self.directory} is unfinished: {len(missing)} of {self.manifest.chunks} chunks missing "
                f"(first: {chunk_name(missing[0])}); run the same `kenning embed` again to finish it"
            )

    @property
    def dim(self) -> int:
        return int(self.manifest.model["embedding_dim"])

    def chunks(self, part: str, vectors: bool = True) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """(rows, vectors) of each chunk's readable images of `part`; `row` is each image's position.
        Without `vectors` only the rows are read (an empty array stands for the vectors); vectors are
        decoded only from chunks that hold some of `part`."""
        for number in range(self.manifest.chunks):
            path = self.directory / chunk_name(number)
            try:
                names = pq.read_schema(path).names
                columns = [*ROW_COLUMNS, DIGEST, "ok", *(c for c in METADATA if c in names)]
                rows = with_metadata(pq.read_table(path, columns=columns).to_pandas())
                keep = ((rows["part"] == part) & rows["ok"]).to_numpy()
                if not keep.any():
                    continue
                found = (
                    pq.read_table(path, columns=["vector"]).column("vector").combine_chunks().values.to_numpy()
                    if vectors
                    else np.zeros(0, np.float32)
                ).reshape(len(rows), -1)
            except Exception as exc:  # a damaged or foreign file surfaces as many exception types
                raise KenningError(f"cannot read embeddings chunk {path}: {str(exc).splitlines()[0]}") from None
            rows["row"] = number * self.manifest.chunk_size + np.arange(len(rows))  # position in rows.parquet
            yield rows[keep].reset_index(drop=True), found[keep]

    def table(self, part: str) -> pd.DataFrame:
        """Rows of `part` that were embedded (no vectors)."""
        tables = [rows for rows, _ in self.chunks(part, vectors=False)]
        empty = pd.DataFrame(columns=[*ROW_COLUMNS, DIGEST, "row", *METADATA])
        return pd.concat(tables, ignore_index=True) if tables else empty

    def lookup(self, paths: list[str], part: str = "holdout") -> Embedded:
        """Stored vectors by image path, as `embed_paths` would return them. The part is read once
        (calibration looks up the held-out images twice: enrolled, then queries)."""
        if part not in self._parts:
            read = list(self.chunks(part))
            rows = pd.concat([r for r, _ in read], ignore_index=True) if read else pd.DataFrame({"path": []})
            found = np.concatenate([v for _, v in read]) if read else np.zeros((0, self.dim), np.float32)
            first = ~rows["path"].duplicated().to_numpy()  # get_indexer needs unique paths
            self._parts[part] = (pd.Index(rows["path"][first]), found[first])
        index, found = self._parts[part]
        at = index.get_indexer(paths)
        ok = at >= 0
        errors = [
            f"{p}: not embedded (unreadable, or not in {self.directory})"
            for p, k in zip(paths, ok, strict=True)
            if not k
        ]
        return Embedded(found[at[ok]], ok, errors)
