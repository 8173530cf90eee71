"""The built-in demo set: procedurally drawn "landmarks", each photographed in several views.

Real photographs cannot ship and nothing may be downloaded, so Kenning draws its own. Every
identity is a scene (sky, ground, a building with its own blocks, facade textures, roofs and
ornaments) from one shared visual vocabulary, so that generic ImageNet features see them as
alike and only the details tell them apart. Each view changes perspective, scale, crop,
rotation, lighting, blur, noise and JPEG quality and adds occluders. The photographs that
scikit-image ships serve as extra identities, and non-landmark distractors are unlabelled.
Everything is deterministic by seed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from tqdm import tqdm

from kenning.atomic import atomic_save, atomic_write_text
from kenning.paths import holds_only

CANVAS = 320
ENROLL_PHOTOS = 5  # photos of a landmark in neither split: one to enrol, four to query
# scikit-image photographs bundled with the package (no download): real images as extra identities
SKIMAGE_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field",
    "immunohistochemistry", "moon", "coins", "clock", "retina", "cell",
)  # fmt: skip


@dataclass(frozen=True)
class DemoSpec:
    """Sizes of the demo set. The defaults make a set that trains in minutes on two CPU cores."""

    train_landmarks: int = 64
    test_landmarks: int = 24
    train_photos: int = 6  # skimage photographs used as train identities; the rest go to test
    min_views: int = 2
    max_views: int = 8
    distractors: int = 24
    image_size: int = 160
    seed: int = 0


DEMO_MARKER = ".kenning-demo"  # written first: a folder without it is a user's, however it looks


def is_demo_dir(directory: Path) -> bool:
    """A demo set written before (or a killed writer's start of one): its marker and only its files.
    A user's dataset with labels.csv and images/ looks the same without the marker."""
    return (directory / DEMO_MARKER).is_file() and holds_only(
        directory, {"images", "enroll", "labels.csv", DEMO_MARKER}
    )


def write_demo_set(out: str | Path, spec: DemoSpec | None = None) -> pd.DataFrame:
    """Write images and `labels.csv` (image,label,split) under `out`; also `enroll/` with a held-back
    landmark (new_landmark_0.jpg to enrol, the others to query). Returns the label table."""
    spec = spec or DemoSpec()
    out = Path(out)
    atomic_write_text(out / DEMO_MARKER, "a Kenning demo set: `kenning demo-data` may rewrite this folder\n")
    rng = np.random.default_rng(spec.seed)
    identities: list[tuple[str, str, Image.Image]] = []  # (label, split, canonical image)
    for i in range(spec.train_landmarks + spec.test_landmarks):
        split = "train" if i < spec.train_landmarks else "test"
        identities.append((f"landmark_{i:03d}", split, draw_landmark(rng)))
    for j, name in enumerate(_skimage_photos()):
        split = "train" if j < spec.train_photos else "test"
        identities.append((f"photo_{name[0]}", split, name[1]))

    rows: list[tuple[str, str, str]] = []
    jobs: list[tuple[str, str, str, Image.Image]] = []
    for label, split, scene in identities:
        n_views = int(rng.integers(spec.min_views, spec.max_views + 1))
        if split == "test" and rng.random() < 0.15:
            n_views = 1  # a landmark seen once: in leave-one-out evaluation it is a new one
        for v in range(n_views):
            jobs.append((f"images/{split}/{label}/{v}.jpg", label, split, scene))
    for d in range(spec.distractors):
        jobs.append((f"images/test/distractors/{d}.jpg", "", "test", draw_distractor(rng)))
    for d in range(ENROLL_PHOTOS):
        jobs.append((f"enroll/new_landmark_{d}.jpg", None, None, None))

    new_landmark = draw_landmark(rng)
    for rel, label, split, scene in tqdm(jobs, desc="demo images", unit="img"):
        view = render_view(scene if scene is not None else new_landmark, rng, spec.image_size)
        _save_jpeg(view, out / rel, quality=int(rng.integers(35, 92)))
        if label is not None:
            rows.append((rel, label, split))
    table = pd.DataFrame(rows, columns=["image", "label", "split"])
    atomic_save(out / "labels.csv", lambda p: table.to_csv(p, index=False))
    return table


def draw_landmark(rng: np.random.Generator) -> Image.Image:
    """One identity: a building of 1-3 blocks with roofs, on a transparent layer.

    Sky and ground are drawn anew for every view (weather, season, time of day), so only the
    building identifies the landmark, as in real photographs.
    """
    img = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    horizon = int(rng.integers(int(CANVAS * 0.65), int(CANVAS * 0.85)))
    img.info["horizon"] = horizon
    palette = _palette(rng)
    x = int(rng.integers(20, 90))
    for _ in range(int(rng.integers(1, 4))):
        width = int(rng.integers(50, 130))
        height = int(rng.integers(60, horizon - 30))
        if x + width > CANVAS - 10:
            break
        top = horizon - height
        facade = palette[int(rng.integers(len(palette)))]
        draw.rectangle([x, top, x + width, horizon], fill=facade, outline=_shade(facade, 0.6))
        _texture(draw, rng, (x, top, x + width, horizon), facade)
        _roof(draw, rng, (x, top, x + width), palette)
        if rng.random() < 0.4:  # rose window or clock
            r = int(rng.integers(8, max(9, width // 4)))
            cx, cy = x + width // 2, top + r + 6
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_shade(facade, 1.3), outline=(30, 30, 30))
        x += width + int(rng.integers(-15, 25))
    return img


def draw_distractor(rng: np.random.Generator) -> Image.Image:
    """A non-landmark photo: landscape without a building, or a close-up of a texture."""
    if rng.random() < 0.5:
        img = _sky_and_ground(rng, int(rng.integers(int(CANVAS * 0.65), int(CANVAS * 0.85))))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 10))):
            _occluder(draw, rng, CANVAS)
        return img
    noise = rng.integers(0, 255, size=(CANVAS // 16, CANVAS // 16, 3), dtype=np.uint8)
    img = Image.fromarray(noise).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 6))))


def render_view(scene: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """A photo of `scene`: perspective, crop and scale, rotation, lighting, occluders, blur, noise."""
    if scene.mode == "RGBA":  # a drawn landmark: put it under this view's sky
        img = _sky_and_ground(rng, scene.info["horizon"])
        img.paste(scene, (0, 0), scene)
    else:
        img = scene.resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
    w, h = img.size
    jitter = 0.12 * w
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    moved = [(cx + rng.uniform(-jitter, jitter), cy + rng.uniform(-jitter, jitter)) for cx, cy in corners]
    img = img.transform(
        img.size,
        Image.Transform.PERSPECTIVE,
        _perspective_coeffs(moved, corners),
        Image.Resampling.BICUBIC,
        fillcolor=tuple(int(c) for c in rng.integers(0, 255, 3)),
    )
    img = img.rotate(
        float(rng.uniform(-10, 10)),
        Image.Resampling.BICUBIC,
        expand=False,
        fillcolor=tuple(int(c) for c in rng.integers(0, 255, 3)),
    )
    frac = math.sqrt(rng.uniform(0.45, 1.0))
    cw, ch = int(w * frac), int(h * frac * rng.uniform(0.85, 1.15))
    ch = min(ch, h)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((left, top, left + cw, top + ch)).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        _occluder(draw, rng, size)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.55, 1.45))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.4, 1.5))
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.8, 1.2, size=3)  # colour cast of the light
    arr += rng.normal(0, rng.uniform(0, 10), size=arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.6))))


def _sky_and_ground(rng: np.random.Generator, horizon: int) -> Image.Image:
    top, bottom = rng.integers(60, 255, 3), rng.integers(120, 255, 3)
    t = np.linspace(0, 1, CANVAS)[:, None, None]
    sky = (top * (1 - t) + bottom * t).repeat(CANVAS, axis=1)
    sky[horizon:] = rng.integers(40, 160, 3)
    return Image.fromarray(sky.astype(np.uint8))


# building colours come from a few shared stones and paints, so colour alone rarely identifies one
BASE_COLOURS = (
    (200, 190, 170),
    (170, 120, 90),
    (150, 160, 175),
    (210, 200, 140),
    (130, 140, 120),
    (190, 150, 150),
    (120, 130, 170),
    (220, 220, 215),
)


def _palette(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    base = np.array(BASE_COLOURS[int(rng.integers(len(BASE_COLOURS)))])
    return [tuple(int(c) for c in np.clip(base + rng.integers(-30, 30, 3), 0, 255)) for _ in range(3)]


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * factor)) for c in color)


def _texture(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[int, int, int, int], facade: tuple[int, int, int]
) -> None:
    x0, y0, x1, y1 = box
    kind = int(rng.integers(4))
    dark = _shade(facade, float(rng.uniform(0.3, 0.7)))
    if kind == 0:  # grid of windows
        rows, cols = int(rng.integers(2, 7)), int(rng.integers(2, 6))
        cw, rh = (x1 - x0) / cols, (y1 - y0) / rows
        arched = rng.random() < 0.5
        for r in range(rows):
            for c in range(cols):
                wx0, wy0 = x0 + c * cw + cw * 0.25, y0 + r * rh + rh * 0.2
                wx1, wy1 = x0 + (c + 1) * cw - cw * 0.25, y0 + (r + 1) * rh - rh * 0.2
                if arched:
                    draw.ellipse([wx0, wy0, wx1, wy0 + (wx1 - wx0)], fill=dark)
                    wy0 = min(wy0 + (wx1 - wx0) / 2, wy1)
                draw.rectangle([wx0, wy0, wx1, wy1], fill=dark)
    elif kind == 1:  # columns
        n = int(rng.integers(3, 9))
        for c in range(n):
            cx = x0 + (c + 0.5) * (x1 - x0) / n
            draw.rectangle([cx - 2, y0 + 6, cx + 2, y1], fill=dark)
    elif kind == 2:  # brick courses
        step = int(rng.integers(5, 12))
        for y in range(y0 + step, y1, step):
            draw.line([x0, y, x1, y], fill=dark, width=1)
    # kind 3: plain facade; the door still tells it apart
    door_w = int(rng.integers(8, max(9, (x1 - x0) // 3)))
    cx = int(rng.uniform(x0 + door_w, x1 - door_w))
    draw.rectangle([cx - door_w // 2, y1 - door_w * 1.6, cx + door_w // 2, y1], fill=_shade(dark, 0.6))


def _roof(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, span: tuple[int, int, int], palette: list[tuple[int, int, int]]
) -> None:
    x0, top, x1 = span
    color = _shade(palette[int(rng.integers(len(palette)))], float(rng.uniform(0.5, 1.1)))
    kind = int(rng.integers(4))
    if kind == 0:  # gable
        draw.polygon([(x0 - 4, top), (x1 + 4, top), ((x0 + x1) / 2, top - rng.uniform(15, 50))], fill=color)
    elif kind == 1:  # dome
        r = (x1 - x0) / 2 * rng.uniform(0.5, 0.95)
        cx = (x0 + x1) / 2
        draw.pieslice([cx - r, top - r, cx + r, top + r], 180, 360, fill=color)
    elif kind == 2:  # spires
        for _ in range(int(rng.integers(1, 4))):
            sx = rng.uniform(x0 + 5, x1 - 5)
            draw.polygon([(sx - 6, top), (sx + 6, top), (sx, top - rng.uniform(30, 80))], fill=color)
    # kind 3: flat roof with a parapet
    draw.rectangle([x0 - 2, top - 4, x1 + 2, top], fill=_shade(color, 0.8))


def _occluder(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    x, y = rng.uniform(0, size), rng.uniform(size * 0.3, size)
    s = rng.uniform(0.05, 0.2) * size
    if rng.random() < 0.5:  # tree
        draw.rectangle([x - s * 0.1, y, x + s * 0.1, y + s], fill=(int(rng.integers(60, 110)), 60, 30))
        green = (int(rng.integers(20, 80)), int(rng.integers(90, 170)), int(rng.integers(20, 80)))
        draw.ellipse([x - s / 2, y - s, x + s / 2, y + s * 0.2], fill=green)
    else:  # person, car, sign
        draw.rectangle([x - s / 3, y - s, x + s / 3, y], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))


def _perspective_coeffs(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> list[float]:
    """Coefficients PIL's PERSPECTIVE transform needs to map output corners `dst` to input `src`."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(rows, dtype=np.float64)
    b = np.array(src, dtype=np.float64).reshape(8)
    return np.linalg.solve(a, b).tolist()


def _skimage_photos() -> list[tuple[str, Image.Image]]:
    import skimage.data

    photos = []
    for name in SKIMAGE_PHOTOS:
        arr = getattr(skimage.data, name)()
        photos.append((name, Image.fromarray(arr).convert("RGB")))
    return photos


def _save_jpeg(img: Image.Image, path: Path, quality: int) -> None:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda p: p.write_bytes(buf.getvalue()))
