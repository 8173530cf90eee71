"""Images -> embeddings, batched, with optional flip test-time augmentation."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from kenning.data.images import ImageDataset, collate_skipping_bad
from kenning.data.transforms import eval_transform
from kenning.embeddings.checkpoint import ModelManifest
from kenning.embeddings.model import EmbeddingNet

Transform = Callable[[Image.Image], torch.Tensor]


@dataclass
class Embedded:
    vectors: np.ndarray  # (n_ok, dim) float32, L2-normalised
    ok: np.ndarray  # (n,) bool: which input paths loaded; vectors hold only those, in order
    errors: list[str]


@torch.no_grad()
def embed_paths(
    model: EmbeddingNet,
    paths: Sequence[str],
    transform: Transform,
    batch_size: int = 32,
    flip_tta: bool = False,
    device: torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> Embedded:
    """Embed images; unreadable ones are skipped and listed in `errors`. With `progress`, a bar and one
    warning line per skipped image go to stderr (stdout stays clean for --json)."""
    device = device or next(model.parameters()).device
    model.eval().to(device)
    loader = torch.utils.data.DataLoader(
        ImageDataset(paths, transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_skipping_bad,
    )
    out = np.zeros((len(paths), model.embedding_dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    errors: list[str] = []
    bar = tqdm(total=len(paths), desc="embedding", unit="img", disable=not progress)
    for images, idx, batch_errors in loader:
        for err in batch_errors if progress else ():
            tqdm.write(f"warning: skipped {err}", file=sys.stderr)
        errors.extend(batch_errors)
        if images is not None:
            out[idx.numpy()] = embed_batch(model, images.to(device), flip_tta).cpu().numpy()
            ok[idx.numpy()] = True
        bar.update(len(idx) + len(batch_errors))
    bar.close()
    if errors and progress:
        tqdm.write(f"warning: {len(errors)} of {len(paths)} images could not be read and were skipped", file=sys.stderr)
    return Embedded(out[ok], ok, errors)


def manifest_transform(manifest: ModelManifest) -> Transform:
    """The eval transform the model in `manifest` expects."""
    return eval_transform(manifest.image_size, tuple(manifest.mean), tuple(manifest.std))


def embed_batch(model: EmbeddingNet, images: torch.Tensor, flip_tta: bool) -> torch.Tensor:
    with torch.autocast(images.device.type, enabled=images.device.type == "cuda"):
        emb = model(images).float()
        if flip_tta:
            emb = torch.nn.functional.normalize(emb + model(images.flip(-1)).float(), dim=-1)
    return emb
