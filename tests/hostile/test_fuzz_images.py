"""Randomised damage to real JPEG and PNG files: truncations, flipped bytes, overwritten runs,
inserted bytes, and well-formed headers that claim another size (often billions of pixels).
Through the image loader and the query path, the only exception ever raised is Kenning's own
one-line error (issue 11, the randomised test)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kenning.data.images import load_image
from kenning.decision.voting import Prediction
from kenning.errors import KenningError
from kenning.recognizer import Recognizer
from tests.hostile.conftest import cli

MUTANTS_PER_FORMAT = 150


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(5)
    if kind == 4:  # a well-formed header that claims another size, often billions of pixels
        return _claim_size(buf, int(rng.integers(1, 65536)), int(rng.integers(1, 65536)))
    if kind == 0:  # truncated anywhere, the header included
        return bytes(buf[: rng.integers(0, len(buf))])
    if kind == 1:  # a few bytes flipped
        for at in rng.integers(0, len(buf), size=rng.integers(1, 20)):
            buf[at] ^= int(rng.integers(1, 256))
        return bytes(buf)
    if kind == 2:  # a run overwritten with random bytes (often inside the header: sizes, lengths)
        start = int(rng.integers(0, len(buf)))
        run = rng.integers(0, 256, size=min(int(rng.integers(1, 64)), len(buf) - start), dtype=np.uint8)
        buf[start : start + len(run)] = run.tobytes()
        return bytes(buf)
    at = int(rng.integers(0, len(buf)))  # random bytes inserted
    return (
        bytes(buf[:at])
        + rng.integers(0, 256, size=int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
        + bytes(buf[at:])
    )


def _claim_size(buf: bytearray, width: int, height: int) -> bytes:
    if buf.startswith(b"\x89PNG"):  # IHDR: width, height at bytes 16-23, its CRC at 29-32
        buf[16:24] = struct.pack(">II", width, height)
        buf[29:33] = struct.pack(">I", zlib.crc32(bytes(buf[12:29])) & 0xFFFFFFFF)
    else:  # JPEG start of frame: length, precision, height, width
        at = buf.find(b"\xff\xc0")
        buf[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(buf)


@pytest.fixture(scope="module")
def mutants(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("mutants")
    photo = next((demo_dir / "images" / "test").glob("landmark_*/0.jpg"))
    png = out / "source.png"
    Image.open(photo).save(png)
    rng = np.random.default_rng(20261124)
    paths = []
    for source in (photo, png):
        data = source.read_bytes()
        for i in range(MUTANTS_PER_FORMAT):
            path = out / f"{source.stem}-{i}{source.suffix}"
            path.write_bytes(_mutate(data, rng))
            paths.append(path)
    return paths


def test_loader_raises_only_kenning_errors(mutants: list[Path]) -> None:
    outcomes = {"loaded": 0, "refused": 0}
    for path in mutants:
        try:
            image = load_image(path)
        except KenningError as exc:
            assert "\n" not in str(exc), str(exc)
            outcomes["refused"] += 1
        else:
            assert image.mode == "RGB" and min(image.size) > 0
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 20 and outcomes["loaded"] > 20, outcomes  # both outcomes were exercised


def test_query_path_answers_or_names_each_damaged_file(mutants: list[Path], built_index: Path) -> None:
    recognizer = Recognizer.open(built_index, progress=False)
    answers = recognizer.query([str(p) for p in mutants])
    assert len(answers) == len(mutants)
    for path, answer in zip(mutants, answers, strict=True):
        assert isinstance(answer, Prediction) or (isinstance(answer, str) and str(path) in answer)


def test_query_command_on_damaged_files(mutants: list[Path], built_index: Path) -> None:
    picked = mutants[::25]
    run = cli("query", *picked, "--index", built_index, "--json")
    assert "Traceback" not in run.stderr
    results = json.loads(run.stdout)
    assert [r["image"] for r in results] == [str(p) for p in picked]
    failed = [r for r in results if "error" in r]
    assert all(("predictions" in r) != ("error" in r) for r in results)
    assert run.exit_code == (2 if failed else 0)
