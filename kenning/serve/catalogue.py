"""The index a service answers from: loaded once, caught up with every commit, written under its lock.

Reads run concurrently on one Recognizer; a commit (by this service or by `kenning enroll` /
`forget` in another process) is picked up before the next answer by building a refreshed
Recognizer beside the old one and swapping the reference, so a query already running finishes on
the gallery it started with and none waits for a write. Writes go through the index store
(its file lock and atomic manifest commit), one at a time within the process.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from kenning import photos
from kenning.answers import answer_record
from kenning.data.metadata import check_metadata, from_name
from kenning.decision.encounters import combine
from kenning.index import curation, store
from kenning.index.history import read_history
from kenning.index.manifest import read_index_manifest
from kenning.recognizer import Matches, Recognizer
from kenning.serve.uploads import Refused, Upload, check_url_label, thumbnail

NEAREST_PER_ANSWER = 3  # gallery photos shown beside each answer
SEARCH_WIDTH = 50  # global neighbours searched per query: where each answer's nearest photos are found
THUMBNAIL_SIDE = 256
MAX_MATCH_LINES = 60  # keypoint pairs sent for the page to draw between a photo and its best match


class ServedIndex:
    def __init__(self, index_dir: Path, photos_dir: Path, model_dir: Path | None = None):
        self.index_dir = Path(index_dir)
        self.photos_dir = Path(photos_dir)
        self.model_dir = model_dir
        self._recognizer = Recognizer.open(self.index_dir, model_dir, progress=False)
        self._swap = threading.Lock()
        self._write = threading.Lock()

    # -- reading --

    def current(self) -> Recognizer:
        """The recognizer of the latest committed generation (a manifest read per call: ~0.1 ms). An
        index rebuilt in its folder (a new uid) is opened anew, model included: its ids, labels and
        model may all differ from the one served so far."""
        recognizer = self._recognizer
        if read_index_manifest(self.index_dir).generation == recognizer.index.manifest.generation:
            return recognizer
        with self._swap:
            manifest = read_index_manifest(self.index_dir)
            served = self._recognizer.index.manifest
            if manifest.uid != served.uid:
                self._recognizer = Recognizer.open(self.index_dir, self.model_dir, progress=False)
            elif manifest.generation != served.generation:
                self._recognizer = self._recognizer.refreshed()
            return self._recognizer

    def identify(
        self, uploads: Sequence[Upload], viewpoint: str = "", encounter: bool = False, candidates: int = 5
    ) -> dict[str, Any]:
        """The first `candidates` answers per photo, the decision (match / review / new), and each
        answer's nearest gallery photos; with `encounter`, also one answer for all the photos
        (decision/encounters.py). `viewpoint`: of every photo (default: what each photo's name states)."""
        recognizer = self.current()
        views = [viewpoint.strip().lower() or from_name(u.name)[0] for u in uploads]
        check_metadata(set(views), "viewpoint")
        with tempfile.TemporaryDirectory(prefix="kenning-serve-") as tmp:
            paths = _write_temporaries(Path(tmp), uploads)
            probes = recognizer.read(paths)
            failed = [(u, p) for u, p, ok in zip(uploads, paths, probes.ok, strict=True) if not ok]
            # the temporary's path is the server's: the client knows the photo by its own name
            errors = [e.replace(p, u.name) for e, (u, p) in zip(probes.errors, failed, strict=True)]
            if len(probes.vectors) == 0:
                return {"results": [{"name": u.name, "error": e} for u, e in zip(uploads, errors, strict=True)]}
            readable = [v for v, ok in zip(views, probes.ok, strict=True) if ok]
            matches = recognizer.match(probes.vectors, probes.local, width=SEARCH_WIDTH, views=readable)
            ranked = recognizer.rank(matches)
            answers = recognizer.answer(ranked, top=candidates)
        errors = iter(errors)
        rows = iter(range(len(answers)))
        out = []
        for upload, ok in zip(uploads, probes.ok, strict=True):
            if not ok:
                out.append({"name": upload.name, "error": next(errors)})
                continue
            i = next(rows)
            answer = _answer(recognizer, matches, i, answers[i], probes.local)
            out.append({"name": upload.name, **answer, "viewpoint": readable[i]})  # what it was matched against
        if not encounter:
            return {"results": out}
        combined = recognizer.answer([combine(ranked, readable)])[0]
        return {"results": out, "encounter": answer_record(combined, recognizer.rule, recognizer.unknown_label)}

    def identities(self, offset: int, limit: int, search: str = "") -> dict[str, Any]:
        table = self.current().index.table
        if search:
            table = table[table["label"].str.contains(search, case=False, regex=False)]
        grouped = table.groupby("label", sort=True)["id"]
        labels = list(grouped.groups)[offset : offset + limit]
        return {
            "total": grouped.ngroups,
            "offset": offset,
            "identities": [
                {"label": lab, "images": len(ids), "ids": [int(i) for i in ids[:NEAREST_PER_ANSWER]]}
                for lab, ids in ((lab, grouped.get_group(lab).to_numpy()) for lab in labels)
            ],
        }

    def images_of(self, label: str) -> dict[str, Any]:
        """Every image of an identity (index id and image id): what the page moves to another identity."""
        table = self.current().index.table
        mine = table[table["label"] == self._known(label)]
        pairs = zip(mine["id"], mine["image_id"], strict=True)
        return {"label": label, "images": [{"id": int(i), "image_id": n} for i, n in pairs]}

    def history(self) -> dict[str, Any]:
        return {"history": read_history(self.index_dir)}

    def thumbnail(self, image: int) -> bytes:
        path = str(self.current().index.paths_of(np.array([image], np.int64))[0])
        if not path:
            raise Refused(404, f"no image {image} in the index")
        try:
            return _thumbnail(path, Path(path).stat().st_mtime_ns)
        except FileNotFoundError:
            raise Refused(404, f"the photo of image {image} is no longer where it was enrolled from") from None
        except (OSError, SyntaxError, ValueError):
            raise Refused(422, f"the photo of image {image} cannot be read") from None

    def health(self) -> dict[str, Any]:
        manifest = self.current().index.manifest
        return {"status": "ok", "images": manifest.count, "generation": manifest.generation}

    # -- writing --

    def enroll(self, label: str, uploads: Sequence[Upload], viewpoint: str = "", encounter: str = "") -> dict[str, Any]:
        """Keep the photos (content-addressed, in the photos folder: thumbnails and compaction need
        them later) and enrol them under `label` in one commit, with their viewpoint and encounter."""
        label = check_url_label(label)
        metadata = {"viewpoint": viewpoint.strip().lower(), "encounter": encounter.strip()}
        for key, value in metadata.items():
            check_metadata([value], key)
        recognizer = self.current()
        with self._write:
            paths, created = [], []
            for upload in uploads:
                path, new = photos.keep(self.photos_dir, upload.data, upload.suffix)
                created += [path] if new else []
                paths.append(str(path))
            try:
                result = recognizer.enroll(paths, label, [u.name for u in uploads], metadata)
            except BaseException:
                for path in created:  # ours, made a moment ago for this request: nothing else names them
                    path.unlink(missing_ok=True)
                raise
            for upload in uploads:  # a `kenning forget` in another process may have deleted a shared copy
                photos.keep(self.photos_dir, upload.data, upload.suffix)
        fresh = self.current()
        return {
            "label": label,
            "added": result.added,
            "already": [image_id for _, image_id in result.already],
            "errors": result.errors,
            "images": fresh.index.manifest.count,
        }

    def forget(self, label: str | None = None, image: int | None = None) -> dict[str, Any]:
        """Forget an identity or one image (by index id); 404 when the index has no such thing."""
        index = self.current().index
        labels, image_ids = [], []
        if label is not None:
            labels = [self._known(label)]
        if image is not None:
            name = str(index.image_ids_of(np.array([image], np.int64))[0])
            if not name:
                raise Refused(404, f"no image {image} in the index")
            image_ids = [name]
        with self._write:
            forgotten = store.forget(self.index_dir, labels, image_ids, self.photos_dir)
        return {
            "removed": forgotten.count,
            "photos_deleted": len(forgotten.photos_deleted),
            "images": self.current().index.manifest.count,
        }

    def rename(self, label: str, to: str) -> dict[str, Any]:
        label = self._known(label)
        with self._write:
            return self._curated(curation.rename(self.index_dir, label, check_url_label(to)))

    def merge(self, label: str, others: Sequence[str], into: str) -> dict[str, Any]:
        labels = [self._known(x) for x in (label, *others)]
        with self._write:
            return self._curated(curation.merge(self.index_dir, labels, check_url_label(into or label)))

    def split(self, label: str, images: Sequence[int], into: str) -> dict[str, Any]:
        """Move images (by index id) of `label` to `into`, a new identity or an existing one."""
        label = self._known(label)
        index = self.current().index
        names = index.image_ids_of(np.asarray(images, np.int64))
        absent = [i for i, name in zip(images, names, strict=True) if not name]
        if absent:
            raise Refused(404, f"no image {absent[0]} in the index")
        with self._write:
            return self._curated(curation.split(self.index_dir, label, [str(n) for n in names], check_url_label(into)))

    def _known(self, label: str) -> str:
        """A label from a URL or a body that a live identity has (404 otherwise: like forget)."""
        label = check_url_label(label)
        if not (self.current().index.table["label"] == label).any():
            raise Refused(404, f"no identity {label!r} in the index")
        return label

    def _curated(self, done: curation.Curated) -> dict[str, Any]:
        return {
            "operation": done.operation,
            "labels": done.labels,
            "into": done.into,
            "moved": done.images,
            "joined_existing": done.joined_existing,
            "images": self.current().index.manifest.count,
        }


@lru_cache(maxsize=2048)
def _thumbnail(path: str, mtime_ns: int) -> bytes:
    """Cached by path and modification time: a replaced file is thumbnailed again."""
    return thumbnail(path, THUMBNAIL_SIDE)


def _write_temporaries(folder: Path, uploads: Sequence[Upload]) -> list[str]:
    paths = []
    for i, upload in enumerate(uploads):
        path = folder / f"{i}{upload.suffix}"
        path.write_bytes(upload.data)
        paths.append(str(path))
    return paths


def _answer(recognizer: Recognizer, matches: Matches, i: int, prediction, local) -> dict[str, Any]:
    """One photo's answer record (answers.py) with each answer's nearest gallery photos and, with
    local matching, the keypoint pairs between the photo and the first answer's best-matching gallery photo."""
    n = matches.neighbours
    found = n.ids[i] >= 0
    ids, sims, labels = n.ids[i][found], n.similarities[i][found], n.labels[i][found]
    scores = matches.local[i] if matches.local is not None else None
    record = answer_record(prediction, recognizer.rule, recognizer.unknown_label)
    for answer in record["answers"]:
        answer["nearest"] = (
            [] if answer["unknown"] else _nearest(recognizer, answer["label"], ids, sims, labels, scores)
        )
    record["matches"] = _keypoint_lines(recognizer, record["answers"], scores, local[i] if local else None)
    return record


def _nearest(recognizer: Recognizer, label: str, ids, sims, labels, scores) -> list[dict[str, Any]]:
    mine = np.flatnonzero(labels == label)[:NEAREST_PER_ANSWER]
    chosen = [(int(ids[j]), round(float(sims[j]), 4)) for j in mine]
    if not chosen and scores is not None:  # found by local matching alone, beyond the global neighbours
        local_ids = scores.image_ids[recognizer.index.labels_of(scores.image_ids) == label][:NEAREST_PER_ANSWER]
        chosen = [(int(g), None) for g in local_ids]
    names = recognizer.index.image_ids_of(np.array([g for g, _ in chosen], np.int64))
    return [{"id": g, "image_id": str(name), "similarity": s} for (g, s), name in zip(chosen, names, strict=True)]


def _keypoint_lines(recognizer: Recognizer, answers: list[dict], scores, query) -> dict[str, Any] | None:
    """Pairs of matched keypoints, as fractions of each image's width and height."""
    if scores is None or query is None or not answers or answers[0]["unknown"]:
        return None
    label = answers[0]["label"]
    shown = [g for g in scores.matches if recognizer.index.labels_of(np.array([g]))[0] == label]
    if not shown:
        return None
    gallery_id = shown[0]
    gallery = recognizer.index.local_of(np.array([gallery_id]))[0]
    pairs = scores.matches[gallery_id][:MAX_MATCH_LINES]
    qw, qh = query.size
    gw, gh = gallery.size
    lines = [
        [
            round(float(query.keypoints[q, 0] / qw), 4),
            round(float(query.keypoints[q, 1] / qh), 4),
            round(float(gallery.keypoints[g, 0] / gw), 4),
            round(float(gallery.keypoints[g, 1] / gh), 4),
        ]
        for q, g in pairs
    ]
    return {"id": int(gallery_id), "label": label, "lines": lines, "total": len(scores.matches[gallery_id])}
