from pathlib import Path

import numpy as np
from PIL import Image

from kenning.data.demo import DemoSpec, write_demo_set
from kenning.data.readers import read_dataset

SPEC = DemoSpec(
    train_landmarks=3, test_landmarks=2, train_photos=1, min_views=2, max_views=3, distractors=2, image_size=48, seed=5
)


def test_demo_set_is_deterministic_and_well_formed(tmp_path: Path) -> None:
    a = write_demo_set(tmp_path / "a", SPEC)
    b = write_demo_set(tmp_path / "b", SPEC)
    assert a.equals(b)
    first = a["image"].iloc[0]
    pixels = [np.asarray(Image.open(tmp_path / run / first)) for run in ("a", "b")]
    assert np.array_equal(*pixels)

    df = read_dataset(tmp_path / "a")
    labelled = df[df["label"] != ""]
    train_ids = set(labelled[labelled["split"] == "train"]["label"])
    test_ids = set(labelled[labelled["split"] == "test"]["label"])
    assert train_ids and test_ids and not train_ids & test_ids  # identities never cross splits
    assert (df["label"] == "").sum() == SPEC.distractors  # distractors are unlabelled
    assert any(label.startswith("photo_") for label in train_ids)  # scikit-image photographs join in
    assert len(list((tmp_path / "a" / "enroll").glob("*.jpg"))) == 5
    assert Image.open(df["path"].iloc[0]).size == (48, 48)


def test_views_of_one_landmark_differ(tmp_path: Path) -> None:
    table = write_demo_set(tmp_path, SPEC)
    views = table[table["label"] == table["label"].iloc[0]]["image"].tolist()
    pixels = [np.asarray(Image.open(tmp_path / v), dtype=np.float32) for v in views[:2]]
    assert np.abs(pixels[0] - pixels[1]).mean() > 10
