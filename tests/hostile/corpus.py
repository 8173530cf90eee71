"""A corpus of hostile input, generated: bad images of every kind, bombs, duplicates, hostile labels,
malformed CSVs and paths of the wrong kind. Every file is made here, in a few hundred milliseconds."""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

BOMB_SIDE = 30_000  # 900 million pixels; the PNG is about 110 KB


def png_of_zeros(path: Path, width: int, height: int) -> Path:
    """A 1-bit greyscale PNG of `width` x `height` black pixels, written row by row: never held in
    memory, so a decompression bomb costs kilobytes to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the bits
    packer = zlib.compressobj(9)
    rows_per_piece = max(1, 4_000_000 // len(row))
    body = []
    for start in range(0, height, rows_per_piece):
        body.append(packer.compress(row * min(rows_per_piece, height - start)))
    body.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")
    )
    return path


@dataclass
class Corpus:
    root: Path
    good: list[Path] = field(default_factory=list)  # readable photos
    bad: dict[str, Path] = field(default_factory=dict)  # kind -> a path no command may decode
    hostile_labels: dict[str, str] = field(default_factory=dict)  # kind -> label every command refuses
    csvs: dict[str, Path] = field(default_factory=dict)  # kind -> a malformed dataset folder


def make_corpus(root: Path, photos: list[Path]) -> Corpus:
    """`photos`: four real JPEGs of different identities, none of them in the test index, to copy and damage."""
    root.mkdir(parents=True, exist_ok=True)
    c = Corpus(root)
    for i, photo in enumerate(photos[:3]):
        good = root / f"good{i}.jpg"
        good.write_bytes(photo.read_bytes())
        c.good.append(good)
    jpeg = photos[0].read_bytes()
    png = root / "good.png"
    Image.open(photos[3]).save(png)
    c.good.append(png)

    def bad(kind: str, name: str, data: bytes | None = None) -> Path:
        path = root / name
        if data is not None:
            path.write_bytes(data)
        c.bad[kind] = path
        return path

    bad("missing", "missing.jpg")
    bad("empty", "empty.jpg", b"")
    bad("text", "text.jpg", b"this is not an image\n")
    bad("truncated_jpeg", "truncated.jpg", jpeg[: len(jpeg) // 2])
    bad("truncated_png", "truncated.png", png.read_bytes()[:200])
    bad("header_only_jpeg", "header.jpg", jpeg[:20])
    bad("garbage_png_body", "garbage.png", png.read_bytes()[:33] + os.urandom(300))
    png_of_zeros(bad("bomb", "bomb.png"), BOMB_SIDE, BOMB_SIDE)
    bad("folder", "folder.jpg").mkdir()
    fifo = bad("fifo", "fifo.jpg")
    os.mkfifo(fifo)
    c.bad["device"] = Path("/dev/zero")
    loop = bad("symlink_loop", "loop.jpg")
    os.symlink(loop.name, loop)  # points at itself

    c.hostile_labels = {
        "newline": "a\nb",
        "tab": "a\tb",
        "nul": "a\x00b",
        "escape": "\x1b[31mred",
        "bidi_override": "abc\u202edef",
        "line_separator": "a\u2028b",
        "too_long": "x" * 300,
        "leading_space": " x",
    }

    def dataset(kind: str, text: bytes) -> None:
        folder = root / f"csv-{kind}"
        folder.mkdir()
        (folder / "labels.csv").write_bytes(text)
        c.csvs[kind] = folder

    dataset("missing_columns", b"file,class\na.jpg,x\n")
    dataset("not_utf8", b"image,label\n\xff\xfe.jpg,\xe9\n")
    dataset("empty", b"")
    dataset("binary", os.urandom(256))
    dataset("ragged", b'image,label\na.jpg,x,extra,more\n"unclosed,y\n')
    dataset("control_label", b"image,label\ngood0.jpg,a\x07b\n")
    return c
