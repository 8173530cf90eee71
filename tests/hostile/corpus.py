"""A corpus of hostile input, generated: bad images of every kind, bombs, duplicates, hostile labels,
malformed CSVs and paths of the wrong kind. Every file is made here, in a few hundred milliseconds."""

from __future__ import annotations

import os
import random
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
    garbage = random.Random(0).randbytes(300)  # seeded: fresh random bytes sometimes parse as a PNG chunk
    bad("garbage_png_body", "garbage.png", png.read_bytes()[:33] + garbage)
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


# -- second pass (issue 20) --

LOOK_ALIKE_LABELS = {  # kind -> label that would display as "Cafe"/"Café" while being another string
    "zero_width_space": "Caf\u200be",
    "zero_width_joiner": "Caf\u200de",
    "word_joiner": "Caf\u2060e",
    "byte_order_mark": "\ufeffCafe",
    "soft_hyphen": "Ca\u00adfe",
    "hangul_filler": "Cafe\u3164",
}
NFC_LABEL, NFD_LABEL = "Caf\u00e9", "Cafe\u0301"  # one identity, two spellings

HOSTILE_INDEX_TYPES = {  # --index-type -> what the one line must say
    "HNSW0": "needs a number in [2, 256]",
    "IDMap,Flat": "not a component Kenning builds",
    "IVF99999999,Flat": "needs a number in [1, 1048576]",
    "PQ0": "needs a number in [1, 4096]",
    "Flat;rm -rf": "not a component Kenning builds",
}
HOSTILE_ANNOY_TYPES = {"trees=99999999": "N in [1, 1024]", "trees=0": "N in [1, 1024]", "trees=-3": "N in [1, 1024]"}

# index manifest key -> (tampered value, what the one line must say)
TAMPERED_INDEX_MANIFEST = {
    "generation": ("1", "generation '1' is not int"),
    "next_id": (-1, "next_id -1 is negative"),
    "count": ("40", "count '40' is not int"),
    "embedding_dim": ("64", "embedding_dim '64' is not int"),
    "unknown_label": ("a\nb", "control character U+000A"),
    "base_file": ("../../etc/passwd.faiss", "not the name of an index file"),
    "threshold": (float("nan"), "threshold nan is not float"),
}
# case -> (model manifest key, tampered value, what the one line must say)
TAMPERED_MODEL_MANIFEST = {
    "image_size_zero": ("image_size", 0, "model.image_size' must be in [32, 4096], got 0"),
    "image_size_string": ("image_size", "224", "image_size '224' is not int"),
    "image_size_huge": ("image_size", 100_000, "must be in [32, 4096], got 100000"),
    "mean_empty": ("mean", [], "one value per colour channel"),
    "std_zero": ("std", [0.0, 0.0, 0.0], "out of range"),
    "backbone_hub": ("backbone", "hf-hub:timm/resnet18", "hub models are downloaded"),
}


def batch_folder(root: Path, photo: Path) -> tuple[Path, dict[str, Path]]:
    """A batch folder with a good photo and an entry of every other kind named like an image,
    plus a file that is not named like one. Returns the folder and kind -> entry."""
    folder = root / "batch-kinds"
    folder.mkdir()
    entries = {"good": folder / "good.jpg", "text": folder / "notes.txt"}
    entries["good"].write_bytes(photo.read_bytes())
    entries["text"].write_text("not a photo")
    entries["dangling"] = folder / "dangling.jpg"
    os.symlink(folder / "nowhere.jpg", entries["dangling"])
    entries["fifo"] = folder / "fifo.jpg"
    os.mkfifo(entries["fifo"])
    entries["device"] = folder / "zero.jpg"
    os.symlink("/dev/zero", entries["device"])
    return folder, entries
