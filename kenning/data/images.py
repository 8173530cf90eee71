"""Image loading that honours EXIF orientation, gives RGB, and never lets one bad file end a long job.

Decompression bombs (a few hundred KB on disk, gigabytes of pixels) are refused from the header,
before any pixel is decoded, at a limit the user sets (`kenning --max-pixels N`, or the
KENNING_MAX_PIXELS environment variable). Pillow's own check is switched off: it warns in several
lines below twice its limit, raises its own error type above, and its limit is one global.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from kenning.errors import KenningError
from kenning.paths import require_file

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default: about 256 MiB of RGB, a 9459 x 9459 photo
Image.MAX_IMAGE_PIXELS = None  # Kenning checks the size itself, in load_image
_limit = {"max_pixels": DEFAULT_MAX_PIXELS}


def set_max_pixels(max_pixels: int) -> None:
    """The largest image (width x height) this process decodes; larger ones are refused."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise KenningError(f"the pixel limit must be a whole number of at least 1, not {max_pixels!r}")
    _limit["max_pixels"] = max_pixels


def max_pixels() -> int:
    return _limit["max_pixels"]


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, upright per its EXIF tag; raise KenningError naming the problem."""
    path = require_file(path, "image")
    limit = max_pixels()
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > limit:
                raise KenningError(
                    f"image too large: {path} is {width} x {height} pixels, over the limit of {limit} "
                    "(raise it with kenning --max-pixels N)"
                )
            img.load()  # a truncated file fails here, not later inside a batch
            img = ImageOps.exif_transpose(img)
            return img.convert("RGB")
    except KenningError:
        raise
    except UnidentifiedImageError:
        raise KenningError(f"not an image: {path}") from None
    except Exception as exc:  # a damaged file raises OSError, SyntaxError, ValueError, struct.error, ...
        raise KenningError(f"unreadable image {path}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


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
