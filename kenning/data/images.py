"""Image loading that honours EXIF orientation, gives RGB, and never lets one bad file end a long job."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from kenning.errors import KenningError


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, upright per its EXIF tag; raise KenningError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise KenningError(f"image not found: {path}")
    try:
        with Image.open(path) as img, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()  # a truncated file fails here, not later inside a batch
            img = ImageOps.exif_transpose(img)
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise KenningError(f"not an image: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise KenningError(f"unreadable image {path}: {exc}") from None


class ImageDataset(torch.utils.data.Dataset):
    """Paths -> (tensor, position). A file that fails to load yields (None, position) instead of raising."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str | None]:
        try:
            return self.transform(load_image(self.paths[i])), i, None
        except KenningError as exc:
            return None, i, str(exc)


def collate_skipping_bad(
    batch: list[tuple[torch.Tensor | None, int, str | None]],
) -> tuple[torch.Tensor | None, torch.Tensor, list[str]]:
    """Stack the images that loaded; return their positions and the error line of each that did not."""
    good = [(x, i) for x, i, _ in batch if x is not None]
    errors = [err for x, _, err in batch if x is None]
    if not good:
        return None, torch.empty(0, dtype=torch.long), errors
    xs, idx = zip(*good, strict=True)
    return torch.stack(xs), torch.tensor(idx, dtype=torch.long), errors
