import pandas as pd

from kenning.data.splits import catalogue_split


def table(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [i for i, _ in rows],
            "path": [i for i, _ in rows],
            "label": [lab for _, lab in rows],
            "split": "test",
        }
    )


def test_protocol_b_new_identities_and_first_sightings() -> None:
    labels = [f"id{i:02d}" for i in range(12)]  # sorted as strings: id00 .. id11
    rows = []
    for lab in labels:  # nyala-like: sighting 10 sorts after 9 by number, not as a string
        rows += [(f"{lab}/10_leftphoto.jpg", lab), (f"{lab}/10_rightphoto.jpg", lab), (f"{lab}/9_leftphoto.jpg", lab)]
        rows += [(f"{lab}/9_rightphoto.jpg", lab)]
    rows.append(("distractor.jpg", ""))
    enrolled, queries = catalogue_split(table(rows))
    new = {"id00", "id03", "id06", "id10"}  # i % 10 in {0, 3, 6}
    assert set(enrolled["label"]) == set(labels) - new
    assert set(enrolled["image_id"].str.split("/").str[1]) == {"9_leftphoto.jpg", "9_rightphoto.jpg"}  # both flanks
    assert len(enrolled) == 2 * 8 and len(enrolled) + len(queries) == len(rows)
    assert new <= set(queries["label"]) and "" in set(queries["label"])
    assert (queries[queries["label"].isin(new)].groupby("label").size() == 4).all()  # every image of a new one


def test_protocol_b_first_image_by_file_name_without_sightings() -> None:
    rows = [("b/Bea_Whiskers.jpg", "b"), ("b/Bea_Body.jpg", "b"), ("a/Ann_Ear.jpg", "a"), ("c/Cy_Face.jpg", "c")]
    enrolled, queries = catalogue_split(table(rows))
    assert enrolled["image_id"].tolist() == ["b/Bea_Body.jpg", "c/Cy_Face.jpg"]  # "a" is identity 0: new
    assert sorted(queries["image_id"]) == ["a/Ann_Ear.jpg", "b/Bea_Whiskers.jpg"]
