"""Does the foreground map help the *global* descriptor? ImageNet EfficientNet-Lite0, no training.

Issue 12 asks for the foreground (the classifier's class activation map, `kenning/local/foreground.py`)
to be measured for global pooling too. Each evaluation image is described by GeM (p=3) pooling of
the backbone's last feature map, in these forms:

- full224 / full384: the whole image (224 px is Kenning's untrained baseline);
- soft384: GeM weighted by the map (a masked GeM: sum w x^p / sum w);
- hard384: GeM over the cells where the map is at least 0.3 of its peak (the local stage's rule);
- crop224 / crop288: the image cropped to the box of those cells (one cell of margin), re-embedded;
- cropsoft288: the crop, pooled with its own map as weights.

Scored by cosine nearest neighbour: protocol A Recall@1 / @5 (own sighting left out, as
`eval --protocol reid`), and protocol B's known queries' closed-set Recall@1 (the nearest enrolled
first sighting; the hard part of protocol B). No setting is chosen from it.

    python benchmarks/foreground_global.py --dataset nyala

Writes benchmarks/results/foreground_global_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F
from common import RESULTS, SHARED
from PIL import Image
from tqdm import tqdm

from kenning.data.images import load_image
from kenning.data.readers import read_dataset, select_split
from kenning.data.splits import catalogue_split, sighting_key
from kenning.data.transforms import eval_transform
from kenning.local.foreground import Foreground

KEEP = 0.3  # share of the map's peak that counts as foreground (LocalConfig.foreground's default)
FORMS = ("full224", "full384", "soft384", "hard384", "crop224", "crop288", "cropsoft288")


def gem(features: torch.Tensor, weights: torch.Tensor | None = None, p: float = 3.0) -> torch.Tensor:
    """(1, c, h, w) -> (1, c); `weights` (1, h, w) turns it into a weighted (masked) GeM."""
    x = features.clamp(min=1e-6).pow(p)
    if weights is None:
        return x.mean((-2, -1)).pow(1 / p)
    w = weights[:, None]
    return ((x * w).sum((-2, -1)) / w.sum((-2, -1)).clamp(min=1e-6)).pow(1 / p)


class Describer:
    """The classifier network of the foreground map, reused for its features and its CAM."""

    def __init__(self) -> None:
        self.foreground = Foreground()
        self.model = self.foreground.model
        data = timm.data.resolve_data_config({}, model=self.model)
        self.transforms = {s: eval_transform(s, tuple(data["mean"]), tuple(data["std"])) for s in (224, 288, 384)}

    def features_and_map(self, image: Image.Image, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.foreground.features_and_maps(self.transforms[size](image)[None])

    @torch.no_grad()
    def describe(self, image: Image.Image) -> dict[str, torch.Tensor]:
        features, cam = self.features_and_map(image, 384)
        out = {"full384": gem(features), "soft384": gem(features, cam), "hard384": gem(features, (cam >= KEEP).float())}
        out["full224"] = gem(self.model.forward_features(self.transforms[224](image)[None]))
        crop = image.crop(box(cam[0].numpy(), image.size))
        out["crop224"] = gem(self.model.forward_features(self.transforms[224](crop)[None]))
        crop_features, crop_cam = self.features_and_map(crop, 288)
        out["crop288"], out["cropsoft288"] = gem(crop_features), gem(crop_features, crop_cam)
        return out


def box(cam: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel box of the map's cells at or above KEEP, one cell of margin (the map squashes the image)."""
    ys, xs = np.nonzero(cam >= KEEP)
    (h, w), (width, height) = cam.shape, size
    x0, x1 = max(0.0, (xs.min() - 0.5) / w * width), min(width, (xs.max() + 1.5) / w * width)
    y0, y1 = max(0.0, (ys.min() - 0.5) / h * height), min(height, (ys.max() + 1.5) / h * height)
    return int(x0), int(y0), round(x1), round(y1)


def scores(vectors: np.ndarray, table, enrolled_rows: np.ndarray, known_rows: np.ndarray) -> dict[str, float]:
    labels = table["label"].to_numpy().astype(str)
    sightings = np.array([f"{lab}|{sighting_key(i)}" for lab, i in zip(labels, table["image_id"], strict=True)])
    sim = vectors @ vectors.T
    own = sightings[:, None] == sightings[None, :]
    scored = np.flatnonzero(((labels[:, None] == labels[None, :]) & ~own).any(1))
    order = np.argsort(-np.where(own, -np.inf, sim), axis=1)[:, :5]
    hits = labels[order[scored]] == labels[scored, None]
    nearest = enrolled_rows[sim[np.ix_(known_rows, enrolled_rows)].argmax(1)]
    return {
        "A_recall@1": round(float(hits[:, 0].mean()), 3),
        "A_recall@5": round(float(hits.any(1).mean()), 3),
        "A_queries": len(scored),
        "B_known_closed_recall@1": round(float((labels[nearest] == labels[known_rows]).mean()), 3),
        "B_known_queries": len(known_rows),
    }


def vectors(rows: list[dict[str, torch.Tensor]], form: str) -> np.ndarray:
    return F.normalize(torch.cat([r[form] for r in rows]), dim=1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="nyala", choices=["nyala", "lions"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    table = select_split(read_dataset(SHARED / args.dataset), "eval").reset_index(drop=True)
    describer = Describer()
    started = time.perf_counter()
    rows = [describer.describe(load_image(p)) for p in tqdm(table["path"], desc="describe", unit="img")]
    seconds = time.perf_counter() - started
    enrolled, queries = catalogue_split(table)
    enrolled_rows = enrolled.index.to_numpy()
    known_rows = queries.index[queries["label"].isin(set(enrolled["label"]))].to_numpy()
    result = {
        "dataset": args.dataset,
        "images": len(table),
        "seconds": round(seconds, 1),
        "forms": {form: scores(vectors(rows, form), table, enrolled_rows, known_rows) for form in FORMS},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"foreground_global_{args.dataset}.json").write_text(json.dumps(result, indent=2))
    head = "| form | A recall@1 | A recall@5 | B known, closed-set recall@1 |\n|---|---|---|---|\n"
    body = "".join(
        f"| {f} | {s['A_recall@1']:.3f} | {s['A_recall@5']:.3f} | {s['B_known_closed_recall@1']:.3f} |\n"
        for f, s in result["forms"].items()
    )
    first = result["forms"][FORMS[0]]
    md = (
        f"# Foreground map and the global descriptor on {args.dataset} (ImageNet EfficientNet-Lite0, no training)\n\n"
        f"{len(table)} evaluation images; protocol A over {first['A_queries']} queries (own sighting left out), "
        f"protocol B over its {first['B_known_queries']} known queries.\n\n{head}{body}\n"
        f"Reproduce: `python benchmarks/foreground_global.py --dataset {args.dataset}`\n"
    )
    (RESULTS / f"foreground_global_{args.dataset}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
