from pathlib import Path

import pytest
import torch
from PIL import Image

from kenning.data.images import ImageDataset, collate_skipping_bad, load_image
from kenning.errors import KenningError


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: a viewer shows it 20 wide, 40 tall
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    Image.new(mode, (8, 8)).save(path)
    assert load_image(path).mode == "RGB"


def test_bad_files_raise_one_line_errors(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (0, 128, 0)).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(KenningError, match="image not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(KenningError, match="not an image"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(KenningError, match="unreadable image") as info:
        load_image(tmp_path / "truncated.jpg")
    assert "\n" not in str(info.value)


def test_dataset_skips_bad_files(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("broken")
    ds = ImageDataset([str(tmp_path / "a.png"), str(tmp_path / "b.png")], lambda im: torch.zeros(3, 4, 4))
    images, idx, errors = collate_skipping_bad([ds[0], ds[1]])
    assert images.shape == (1, 3, 4, 4)
    assert idx.tolist() == [0]
    assert len(errors) == 1 and "b.png" in errors[0]
