"""Images -> embeddings (and local features) -> index -> candidates -> ranked labels -> answers.

The one query path: `query`, `enroll`, `eval`, the protocols and the build-time calibration all go
through `Recognizer.read` (images -> probes), `match` (probes -> neighbours and candidate
identities with each stage's score) and `rank` (the decision layer: k-NN votes, or with local
matching the fused probability). A Recognizer loads the model and the index once, so a batch of
queries (or a long-lived process) pays for neither again. Reading images is reader.py's stage,
adding photos to the index enrolment.py's.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kenning.config import LocalConfig, check_value
from kenning.data.metadata import UNKNOWN, from_name, parse_compatible
from kenning.decision.fusion import INLIERS, MATCHES, Candidates
from kenning.decision.review import decision
from kenning.decision.rules import Rule
from kenning.decision.threshold import Calibration
from kenning.decision.voting import Neighbours, Prediction, RankedLabels, place_unknown
from kenning.embeddings.checkpoint import ModelManifest, load_model
from kenning.embeddings.inference import Embedded
from kenning.embeddings.model import EmbeddingNet
from kenning.enrolment import EnrollResult, enroll_probes
from kenning.errors import KenningError
from kenning.index.gallery import GalleryIndex
from kenning.index.manifest import check_model, index_model_dir
from kenning.index.views import compatible_mask, filters, search_compatible
from kenning.labels import check_enrol_label
from kenning.local.extractor import Matcher, matcher_class
from kenning.local.featureset import FeatureSet, LocalFeatures, LocalScores, concat
from kenning.local.glue import Glue, create_glue
from kenning.local.spatial import inliers
from kenning.reader import Probes, Reader, StoredReader
from kenning.timing import StageTimes

GLOBAL_CANDIDATES = 100  # with local matching: global neighbours whose identities are candidates
VERIFIED_IMAGES = 2  # gallery images per candidate identity checked pairwise (its best by LNBNN)


@dataclass
class Matches:
    neighbours: Neighbours  # the global nearest gallery images, as many as were asked for
    candidates: list[Candidates] | None  # with local matching: identities of either stage, with their scores
    local: list[LocalScores] | None  # with local matching: each query's local scores (matched keypoints)


class Recognizer:
    def __init__(
        self,
        model: EmbeddingNet | None,
        model_manifest: ModelManifest,
        index: GalleryIndex,
        index_dir: Path | None = None,
        batch_size: int = 32,
        progress: bool = True,
        reader: StoredReader | None = None,
    ):
        """`model` may be None only with a `reader` of stored vectors."""
        if reader is None and model is None:
            raise ValueError("a Recognizer needs the model, or stored vectors to read")
        self.reader = reader or Reader(model, model_manifest, index.manifest, batch_size, progress)
        self.model_manifest = model_manifest
        self.index = index
        self.index_dir = index_dir
        self.use_local = bool(index.manifest.local)
        self.votes, self.fused = index.manifest.votes(), index.manifest.fused()
        self.viewpoints = index.manifest.viewpoints  # compatible: match only compatible viewpoints; any
        self._matcher: Matcher | None = None
        self._previous_matcher: Matcher | None = None  # a refresh's predecessor: its base index may be reused
        self._matcher_lock = threading.Lock()
        self._view_matchers: dict[str, Matcher] = {}  # per query viewpoint: over compatible gallery images
        self.times = StageTimes()  # seconds per stage of the query path (query --json)

    @classmethod
    def open(cls, index_dir: str | Path, model_dir: str | Path | None = None, progress: bool = True) -> Recognizer:
        """Load an index and its model (the one recorded in the index, unless `model_dir` is given)."""
        index = GalleryIndex.load(index_dir)
        model, manifest = load_model(model_dir or index_model_dir(Path(index_dir), index.manifest))
        return cls(model, manifest, index, Path(index_dir), progress=progress)

    def with_index(self, index: GalleryIndex) -> Recognizer:
        """The same model over another (in-memory) index: calibration's catalogue."""
        other = copy.copy(self)
        other.index, other.index_dir, other._matcher = index, None, None
        other._previous_matcher, other._matcher_lock, other._view_matchers = None, threading.Lock(), {}
        return other

    def refreshed(self) -> Recognizer:
        """A Recognizer over the latest commit of this index's directory, sharing the model; this one
        is left as it was, so queries still running on it finish on a consistent gallery."""
        if self.index_dir is None:
            raise KenningError("only an index saved in a directory can be refreshed")
        index = copy.copy(self.index)
        index.refresh(self.index_dir)
        check_model(index.manifest, self.model_manifest)
        other = copy.copy(self)
        other.index, other._matcher, other._matcher_lock, other._view_matchers = index, None, threading.Lock(), {}
        other._previous_matcher = self._matcher  # reused by the matcher only if the base is unchanged
        other.use_local = self.use_local and bool(index.manifest.local)
        other.votes = dataclasses.replace(index.manifest.votes(), k=self.votes.k, power=self.votes.power)
        other.fused = index.manifest.fused()
        return other

    def configure(
        self,
        k: int | None = None,
        power: float | None = None,
        search_params: str | None = None,
        local: bool | None = None,
        viewpoints: str | None = None,
    ) -> None:
        """Voting, search and local-matching settings for this session only; the saved index keeps its own."""
        if k is not None:
            self.votes = dataclasses.replace(self.votes, k=check_value("index.k", k))
        if power is not None:
            self.votes = dataclasses.replace(self.votes, power=check_value("index.power", float(power)))
        if search_params is not None:
            self.index.set_search_params(search_params)
        if viewpoints is not None:
            self.viewpoints = check_value("index.viewpoints", viewpoints)
        if local is not None:
            if local:
                self.index.manifest.require_local()
            self.use_local = local

    @property
    def unknown_label(self) -> str:
        return self.index.manifest.unknown_label

    @property
    def rule(self) -> Rule:
        """The answer rule of the path in use: k-NN votes, or with local matching the fused probability."""
        if not self.use_local:
            return self.votes
        if self.fused is None:
            raise KenningError("this index's local matching was never calibrated: rebuild it with held-out identities")
        return self.fused

    @property
    def threshold(self) -> float | None:
        """The unknown threshold of the path in use: a similarity, or with local matching a fused probability."""
        return self.rule.threshold

    @property
    def calibration(self) -> Calibration | None:
        """How the threshold in use was chosen, with its curve; None: set by hand, or none."""
        return self.rule.calibration

    def embed(self, paths: Sequence[str]) -> Embedded:
        return self.reader.embed(paths)

    def read(self, paths: Sequence[str]) -> Probes:
        """The images as probes for the path in use (local features only with local matching)."""
        with self.times("read"):
            return self.reader.read(paths, self.use_local)

    def neighbours(
        self,
        vectors: np.ndarray,
        k: int | None = None,
        exclude: np.ndarray | None = None,
        views: Sequence[str] | None = None,
    ) -> Neighbours:
        """The k nearest gallery images; with `views` (each query's viewpoint), only compatible ones."""
        k = k or self.votes.k
        with self.times("search"):
            if filters(views, self.index, self.viewpoints):
                pairs = parse_compatible(self.index.manifest.compatible_viewpoints)
                sims, ids = search_compatible(self.index, vectors, k, views, pairs, exclude)
            else:
                sims, ids = self.index.search(vectors, k, exclude)
            return Neighbours(sims, self.index.labels_of(ids), ids)

    @property
    def _local_settings(self) -> LocalConfig:
        return self.index.manifest.require_local()

    @property
    def matcher(self) -> Matcher:
        """The family's matcher (SIFT: LNBNN) over the gallery's local features, built on first use;
        after a refresh that left the base as it was, the base's descriptor index is reused and only
        enrolments are new."""
        with self._matcher_lock:  # concurrent first queries (a service) build it once
            if self._matcher is None:
                cfg = self._local_settings
                base, tail, dead = self.index.local_layout()
                matcher = matcher_class(self.index.manifest.extractor.matcher)
                labels = self.index.labels_of(_ids(base, tail))
                self._matcher = matcher(
                    base, labels, cfg.k, cfg.max_descriptors, dead, self._previous_matcher, tail, **_scoring(cfg)
                )
                self._previous_matcher = None
            return self._matcher

    def match(
        self,
        vectors: np.ndarray,
        local: Sequence[LocalFeatures] | None = None,
        width: int | None = None,
        exclude: np.ndarray | None = None,
        views: Sequence[str] | None = None,
    ) -> Matches:
        """Nearest gallery images (`width`, at least the index's k) and, with local matching, each
        query's candidate identities with their global and local scores. `exclude`: (n,) or (n, m)
        gallery ids each query must not match (itself, its own sighting), -1 padded. `views`: each
        query's viewpoint; both stages then score only compatible gallery images (index/views.py)."""
        k = self.votes.k
        wanted = max(width or k, k)
        if not self.use_local:
            if self.votes.norm is not None:  # each query's cohort: the identities of its deeper neighbours
                wanted = max(wanted, GLOBAL_CANDIDATES)
            return Matches(self.neighbours(vectors, wanted, exclude, views), None, None)
        if local is None or len(local) != len(vectors):
            raise KenningError("local matching needs each query's local features")
        neighbours = self.neighbours(vectors, max(wanted, GLOBAL_CANDIDATES), exclude, views)
        excluded = _as_rows(exclude, len(vectors))
        shortlist = self._local_settings.shortlist
        by_view = filters(views, self.index, self.viewpoints)
        scores = []
        with self.times("lnbnn"):
            for i, features in enumerate(local):
                ids = neighbours.ids[i]
                matcher = self._matcher_for(views[i]) if by_view else self.matcher
                scores.append(matcher.score(features, excluded[i][excluded[i] >= 0], ids[ids >= 0][:shortlist]))
        candidates = [_candidates(neighbours, i, s) for i, s in enumerate(scores)]
        settings = self._local_settings
        glue = create_glue(settings.method) if settings.glue else None
        for features, found, cand in zip(local, scores, candidates, strict=True):
            if settings.verify:
                with self.times("verify"):
                    cand.scores[INLIERS] = self._checked(features, found, cand, settings.verify, _inliers)
            if glue is not None:
                with self.times("glue"):
                    cand.scores[MATCHES] = self._checked(features, found, cand, settings.glue, _glued(glue, found))
        shown = Neighbours(
            neighbours.similarities[:, :wanted], neighbours.labels[:, :wanted], neighbours.ids[:, :wanted]
        )
        return Matches(shown, candidates, scores)

    def _matcher_for(self, view: str) -> Matcher:
        """The family's matcher over the local features of the gallery images compatible with `view`
        (all of them for an unknown viewpoint), built on first use."""
        if view == UNKNOWN:
            return self.matcher
        with self._matcher_lock:
            if view not in self._view_matchers:
                cfg = self._local_settings
                base, tail, dead = self.index.local_layout()
                pairs = parse_compatible(self.index.manifest.compatible_viewpoints)
                ids = _ids(base, tail)
                off = ~compatible_mask([view], self.index.column_of(ids, "viewpoint")[None, :], pairs)[0]
                off[dead] = True
                matcher = matcher_class(self.index.manifest.extractor.matcher)
                parts = [base] if tail is None else [base, tail]
                if sum(p.descriptor_count for p in parts) <= cfg.max_descriptors:  # one structure: copying is cheap
                    subset = concat(parts, self.index.manifest.descriptor_layout).select(~off)
                    built = matcher(
                        subset, self.index.labels_of(subset.ids), cfg.k, cfg.max_descriptors, **_scoring(cfg)
                    )
                else:  # shortlist matching: the incompatible rows are skipped like forgotten ones
                    labels, skipped = self.index.labels_of(ids), np.flatnonzero(off)
                    built = matcher(base, labels, cfg.k, cfg.max_descriptors, skipped, None, tail, **_scoring(cfg))
                self._view_matchers[view] = built
            return self._view_matchers[view]

    def _checked(
        self,
        query: LocalFeatures,
        found: LocalScores,
        candidates: Candidates,
        count: int,
        pair_score: Callable[[LocalFeatures, LocalFeatures, int], float],
    ) -> np.ndarray:
        """A pairwise check (RANSAC inliers, the learned matcher) of the `count` candidates LNBNN
        scored highest: each one's best `pair_score` over its best-scoring gallery images (up to
        VERIFIED_IMAGES); 0 for the rest."""
        out = np.zeros(len(candidates.labels))
        top = np.argsort(-candidates.scores["local"], kind="stable")[:count]
        image_labels = self.index.labels_of(found.image_ids)
        for i in top[candidates.scores["local"][top] > 0]:
            images = found.image_ids[image_labels == candidates.labels[i]][:VERIFIED_IMAGES]
            scores = (pair_score(query, g, int(j)) for g, j in zip(self.index.local_of(images), images, strict=True))
            out[i] = max(scores, default=0)
        return out

    def rank(self, matches: Matches) -> list[RankedLabels]:
        """The decision of the rule in use (decision/rules.py)."""
        with self.times("decide"):
            return self.rule.rank(matches.neighbours, matches.candidates)

    def answer(
        self, ranked: Sequence[RankedLabels], threshold: float | str | None = "index", top: int = 5
    ) -> list[Prediction]:
        """The first `top` answers, each decided match / review / new; threshold "index" is the
        calibrated one of the path in use (with its review band), None never answers unknown."""
        band = self.calibration.review if threshold == "index" and self.calibration else None
        threshold = self.threshold if threshold == "index" else threshold
        predictions = [place_unknown(r, threshold, self.unknown_label, top) for r in ranked]
        return [dataclasses.replace(p, decision=decision(p.best_similarity, threshold, band)) for p in predictions]

    def predict(
        self, probes: Probes, exclude: np.ndarray | None = None, views: Sequence[str] | None = None
    ) -> list[Prediction]:
        return self.answer(self.rank(self.match(probes.vectors, probes.local, exclude=exclude, views=views)))

    def query(self, paths: Sequence[str], views: Sequence[str] | None = None) -> list[Prediction | str]:
        """One answer per path, or the error line for a path that could not be read. `views`: each
        photo's viewpoint (by default, what its file name states; "" where it states none)."""
        probes = self.read(paths)
        views = [from_name(p)[0] for p in paths] if views is None else list(views)
        readable = [v for v, ok in zip(views, probes.ok, strict=True) if ok]
        predictions = iter(self.predict(probes, views=readable)) if len(probes.vectors) else iter(())
        errors = iter(probes.errors)
        return [next(predictions) if ok else next(errors) for ok in probes.ok]

    def enroll(
        self,
        paths: Sequence[str],
        label: str,
        image_ids: Sequence[str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> EnrollResult:
        """Add photos of `label` to the saved index (its side index: no rebuild, no retraining). This
        Recognizer is left as it was (queries running on it finish undisturbed); `refreshed()` gives
        one that answers with the new identity."""
        if self.index_dir is None:
            raise KenningError("enroll needs an index saved in a directory")
        label = check_enrol_label(label, self.unknown_label)
        probes = self.reader.read(paths, bool(self.index.manifest.local))
        return enroll_probes(self.index_dir, probes, paths, label, image_ids, metadata)


def _scoring(cfg: LocalConfig) -> dict[str, int | float | str]:
    """How the matcher turns votes into identity scores (the same for every matcher of an index)."""
    return {
        "spatial": cfg.spatial,
        "tolerance": cfg.spatial_tolerance,
        "identity_score": cfg.identity_score,
        "whiten": cfg.whiten,
    }


def _ids(base: FeatureSet, tail: FeatureSet | None) -> np.ndarray:
    """Gallery ids of a matcher's rows: the base's, then the enrolments'."""
    return base.ids if tail is None else np.concatenate([base.ids, tail.ids])


def _as_rows(exclude: np.ndarray | None, n: int) -> np.ndarray:
    if exclude is None:
        return np.full((n, 1), -1, np.int64)
    exclude = np.asarray(exclude, np.int64)
    return exclude[:, None] if exclude.ndim == 1 else exclude


def _candidates(neighbours: Neighbours, i: int, local: LocalScores) -> Candidates:
    """Identities among query i's global neighbours and its local matches. A label's global score is
    its nearest neighbour's similarity; one found only locally gets the lowest similarity searched
    (its own is at most that)."""
    sims, labels = neighbours.similarities[i], neighbours.labels[i]
    found = np.isfinite(sims)
    nearest: dict[str, float] = {}
    for sim, lab in zip(sims[found], labels[found], strict=True):
        nearest.setdefault(str(lab), float(sim))
    floor = float(sims[found].min()) if found.any() else -1.0
    names = list(nearest) + [lab for lab in local.labels if lab not in nearest]
    local_of = dict(zip(local.labels, local.label_scores, strict=True))
    return Candidates(
        names,
        {
            "global": np.array([nearest.get(n, floor) for n in names], np.float64),
            "local": np.array([local_of.get(n, 0.0) for n in names], np.float64),
        },
    )


def _inliers(query: LocalFeatures, gallery: LocalFeatures, _: int) -> float:
    return inliers(query, gallery)


def _glued(glue: Glue, found: LocalScores) -> Callable[[LocalFeatures, LocalFeatures, int], float]:
    """The learned matcher's score of a pair; its matches replace LNBNN's votes for that gallery
    image in `found`, so the page and the report draw what the matcher kept."""

    def score(query: LocalFeatures, gallery: LocalFeatures, image_id: int) -> float:
        confidence, pairs = glue.match(query, gallery)
        found.matches[image_id] = pairs
        return confidence

    return score
