"""Uploaded photos, checked before Kenning decodes them: size, content, pixels; and labels from URLs.

A service takes bytes from anyone who can reach it, so every check is on the content, never on
the name or the declared type the client sent: the format is sniffed by Pillow from the bytes, the
pixel count read from the header before any pixel is decoded (a decompression bomb is a few
hundred KB that expands to gigabytes), and the file name kept only as a display name.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image, ImageOps, UnidentifiedImageError

from kenning.data.images import max_pixels
from kenning.errors import first_line
from kenning.labels import label_problem, normalise_label

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif"}
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


class Refused(Exception):
    """A request the service will not carry out: an HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = {"Retry-After": "2"} if status == 429 else None


@dataclass
class Upload:
    """One checked photo: its bytes, the extension of its sniffed format, a safe display name."""

    data: bytes
    suffix: str
    name: str
    width: int
    height: int


def check_upload(data: bytes, filename: str | None, max_bytes: int) -> Upload:
    """The photo if it is an image Kenning will decode; else Refused (413 too big, 422 not an image)."""
    name = display_name(filename)
    if len(data) > max_bytes:
        raise Refused(413, f"{name} is {len(data)} bytes, over the upload limit of {max_bytes}")
    if not data:
        raise Refused(422, f"{name} is empty")
    limit = max_pixels()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if img.format not in FORMATS:
                raise Refused(422, f"{name} is a {img.format} image; accepted: {', '.join(FORMATS)}")
            if width * height > limit:
                raise Refused(413, f"{name} is {width} x {height} pixels, over the limit of {limit}")
            img.load()  # truncated or damaged data fails here, not in the middle of a query
            suffix = FORMATS[img.format]
    except Refused:
        raise
    except UnidentifiedImageError:
        raise Refused(422, f"{name} is not an image") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... for damaged files
        raise Refused(422, f"{name} is not a readable image: {first_line(exc)}") from None
    return Upload(data, suffix, name, width, height)


def display_name(filename: str | None) -> str:
    """The base name the client gave, stripped of directories and odd characters (never a path)."""
    base = PureWindowsPath(PurePosixPath(filename or "").name).name
    cleaned = _UNSAFE_NAME.sub("_", base).strip(" .")[:100]
    return cleaned or "upload"


def check_url_label(label: str) -> str:
    """A label arriving in a URL: Kenning's label rule, and nothing that reads as a path."""
    problem = label_problem(label)
    if problem is None and ("/" in label or "\\" in label or label in (".", "..")):
        problem = "looks like a path"
    if problem is not None:
        raise Refused(422, f"label {label!r} {problem}")
    return normalise_label(label)


def thumbnail(path: str | Path, side: int) -> bytes:
    """A JPEG at most `side` px on its longest side, upright per EXIF."""
    with Image.open(path) as img:
        width, height = img.size
        if width * height > max_pixels():
            raise Refused(422, f"the photo of this image is {width} x {height} pixels, over the limit")
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((side, side))
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85)
        return out.getvalue()
