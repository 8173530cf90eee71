"""The HTTP API of `kenning serve`, over a real uvicorn server on loopback (httpx)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from kenning.errors import KenningError
from kenning.serve.guard import ServeSettings, check_exposure
from tests.hostile.conftest import assert_refused, cli
from tests.hostile.corpus import png_of_zeros
from tests.serve.conftest import TOKEN, running

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _gallery_photo(local_demo: Path) -> tuple[Path, str]:
    path = sorted((local_demo / "images" / "test").glob("landmark_*/*.jpg"))[0]
    return path, path.parent.name


def _files(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def _another_photo_of(path: Path) -> bytes:
    """A new photo of the same thing: cropped, resized, brighter, re-encoded (different bytes)."""
    with Image.open(path) as img:
        w, h = img.size
        img = img.convert("RGB").crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((w, h))
        img = img.point(lambda v: min(255, int(v * 1.08)))
        out = io.BytesIO()
        img.save(out, "JPEG", quality=90)
        return out.getvalue()


def _identify(url: str, name: str, data: bytes) -> dict:
    response = httpx.post(f"{url}/identify", files=[("files", (name, data, "image/jpeg"))], timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_identify_gives_five_answers_with_parts_and_nearest_photos(local_index: Path, local_demo: Path) -> None:
    photo, label = _gallery_photo(local_demo)
    enrolled = sorted((local_demo / "enroll").glob("*.jpg"))[0]
    with running(local_index) as url:
        response = httpx.post(f"{url}/identify", files=_files(photo, enrolled), timeout=60)
        assert response.status_code == 200, response.text
        first, second = response.json()["results"]
        health = httpx.get(f"{url}/health").json()
    assert [first["name"], second["name"]] == [photo.name, enrolled.name]
    for result in (first, second):
        assert len(result["answers"]) == 5
        assert result["unknown"] == result["answers"][0]["unknown"]
        assert result["score"] == "fused probability"
        for answer in result["answers"]:
            if answer["unknown"]:
                assert answer["confidence"] is None and answer["nearest"] == []
                continue
            assert 0 <= answer["confidence"] <= 1
            assert set(answer["scores"]) == {"global", "local", "probability"}
            assert 1 <= len(answer["nearest"]) <= 3
            assert all(0 <= n["id"] < health["images"] for n in answer["nearest"])
    # a gallery photo itself: its own identity first, its nearest photo itself, keypoints drawn
    top = first["answers"][0]
    assert top["label"] == label and not first["unknown"]
    assert top["nearest"][0]["image_id"].endswith(f"{label}/{photo.name}")
    assert top["nearest"][0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    assert first["matches"]["label"] == label and len(first["matches"]["lines"]) > 10
    assert all(0 <= v <= 1 for line in first["matches"]["lines"] for v in line)


def test_enrol_then_identify_then_forget(index_copy: Path, local_demo: Path) -> None:
    newcomer = sorted((local_demo / "enroll").glob("*.jpg"))[0]
    with running(index_copy) as url:
        before = httpx.get(f"{url}/health").json()["images"]
        assert httpx.post(f"{url}/identities/Hut on the ridge/images", files=_files(newcomer)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.post(f"{url}/identities/x/images", files=_files(newcomer), headers=wrong).status_code == 401
        response = httpx.post(
            f"{url}/identities/Hut on the ridge/images", files=_files(newcomer), headers=AUTH, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json()["added"] == [newcomer.name] and response.json()["images"] == before + 1
        again = httpx.post(f"{url}/identities/Hut on the ridge/images", files=_files(newcomer), headers=AUTH)
        assert again.json()["added"] == [] and again.json()["already"] == [newcomer.name]

        result = _identify(url, "other.jpg", _another_photo_of(newcomer))
        assert result["answers"][0]["label"] == "Hut on the ridge", result["answers"]
        new_id = result["answers"][0]["nearest"][0]["id"]
        thumb = httpx.get(f"{url}/images/{new_id}/thumbnail")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumb.content)).size[0] <= 256
        listed = httpx.get(f"{url}/identities", params={"search": "ridge"}).json()
        assert listed["identities"] == [{"label": "Hut on the ridge", "images": 1, "ids": [new_id]}]
        assert len(list((index_copy.parent / "photos").iterdir())) == 1  # the upload, kept for thumbnails

        assert httpx.delete(f"{url}/identities/Hut on the ridge").status_code == 401
        gone = httpx.delete(f"{url}/identities/Hut on the ridge", headers=AUTH)
        assert gone.status_code == 200 and gone.json() == {"removed": 1, "photos_deleted": 1, "images": before}
        assert list((index_copy.parent / "photos").iterdir()) == []  # issue 20 item 5: the person's photo too
        assert httpx.delete(f"{url}/identities/Hut on the ridge", headers=AUTH).status_code == 404
        after = _identify(url, "other.jpg", _another_photo_of(newcomer))
        assert "Hut on the ridge" not in [a["label"] for a in after["answers"]]
        assert httpx.get(f"{url}/images/{new_id}/thumbnail").status_code == 404

        some = httpx.get(f"{url}/identities", params={"limit": 1}).json()["identities"][0]
        one = httpx.delete(f"{url}/images/{some['ids'][0]}", headers=AUTH)
        assert one.status_code == 200 and one.json()["removed"] == 1
        assert httpx.delete(f"{url}/images/{some['ids'][0]}", headers=AUTH).status_code == 404


def test_a_write_by_another_process_is_seen_before_the_next_answer(index_copy: Path, local_demo: Path) -> None:
    newcomer = sorted((local_demo / "enroll").glob("*.jpg"))[1]
    with running(index_copy) as url:
        before = httpx.get(f"{url}/health").json()
        assert cli("enroll", newcomer, "--index", index_copy, "--label", "from the command line").exit_code == 0
        after = httpx.get(f"{url}/health").json()
        result = _identify(url, "other.jpg", _another_photo_of(newcomer))
        assert cli("forget", "--index", index_copy, "--label", "from the command line").exit_code == 0
        listed = httpx.get(f"{url}/identities", params={"search": "command line"}).json()
    assert after["images"] == before["images"] + 1 and after["generation"] > before["generation"]
    assert result["answers"][0]["label"] == "from the command line"
    assert listed["total"] == 0


def test_concurrent_reads_answer_like_sequential_ones(local_index: Path, local_demo: Path) -> None:
    photos = sorted((local_demo / "images" / "test").glob("landmark_*/*.jpg"))[:4]
    with running(local_index) as url:
        alone = [_identify(url, p.name, p.read_bytes()) for p in photos]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda p: _identify(url, p.name, p.read_bytes()), photos * 2))
    assert together == alone * 2


def _refusal(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in response.text
    for needle in needles:
        assert needle in body["error"], (needle, body["error"])


def test_refusals(index_copy: Path, local_demo: Path, tmp_path: Path) -> None:
    photo = sorted((local_demo / "enroll").glob("*.jpg"))[0]
    bomb = png_of_zeros(tmp_path / "bomb.png", 30_000, 30_000)  # 900 megapixels in a few hundred KB
    truncated = photo.read_bytes()[: len(photo.read_bytes()) // 2]
    settings = ServeSettings(token=TOKEN, max_upload_bytes=200_000, max_files=3)
    with running(index_copy, settings) as url:
        before = httpx.get(f"{url}/health").json()

        def identify(name: str, data: bytes) -> httpx.Response:
            return httpx.post(f"{url}/identify", files=[("files", (name, data, "image/jpeg"))], timeout=60)

        _refusal(identify("big.jpg", b"\xff\xd8" + b"0" * 300_000), 413, "big.jpg", "upload limit")
        _refusal(identify("bomb.png", bomb.read_bytes()), 413, "bomb.png", "30000 x 30000 pixels")
        _refusal(identify("cat.jpg", b"#!/bin/sh\nrm -rf /\n"), 422, "cat.jpg is not an image")
        _refusal(identify("half.jpg", truncated), 422, "half.jpg")
        _refusal(identify("../../etc/passwd", b"root:x:0:0"), 422, "passwd is not an image")
        _refusal(httpx.post(f"{url}/identify", files=_files(*[photo] * 4)), 413, "over the limit of 3")
        too_long = httpx.post(f"{url}/identify", content=b"x" * 1_000_000, headers={"content-type": "text/plain"})
        _refusal(too_long, 413, "over the limit")
        _refusal(httpx.post(f"{url}/identify"), 422, "invalid request")
        for label in ("../../etc", "a/b", "..", "tab\there", " padded"):
            encoded = quote(label, safe="").replace(".", "%2E")  # as the page sends it; no client normalising
            enrol = httpx.post(f"{url}/identities/{encoded}/images", files=_files(photo), headers=AUTH)
            _refusal(enrol, 422, "label")
            _refusal(httpx.delete(f"{url}/identities/{encoded}", headers=AUTH), 422, "label")
        _refusal(httpx.post(f"{url}/identities/unknown/images", files=_files(photo), headers=AUTH), 422, "unknown")
        _refusal(httpx.post(f"{url}/identities/bomb/images", files=_files(bomb), headers=AUTH), 413, "pixels")
        _refusal(httpx.get(f"{url}/images/999999/thumbnail"), 404, "no image 999999")
        _refusal(httpx.get(f"{url}/images/..%2F..%2Fetc%2Fpasswd/thumbnail"), 404)
        _refusal(httpx.get(f"{url}/images/abc/thumbnail"), 422, "invalid request")
        _refusal(httpx.delete(f"{url}/images/999999", headers=AUTH), 404, "no image 999999")
        _refusal(httpx.get(f"{url}/no-such-route"), 404)
        after = httpx.get(f"{url}/health").json()
    assert after == before  # nothing refused was written
    assert not (index_copy.parent / "photos").exists() or not any((index_copy.parent / "photos").iterdir())


def test_metrics_count_requests_by_route_and_status(local_index: Path, local_demo: Path) -> None:
    photo, _ = _gallery_photo(local_demo)
    with running(local_index) as url:
        _identify(url, photo.name, photo.read_bytes())
        httpx.get(f"{url}/images/999999/thumbnail")
        images = httpx.get(f"{url}/health").json()["images"]
        text = httpx.get(f"{url}/metrics").text
    assert 'kenning_requests_total{method="POST",route="/identify",status="200"} 1.0' in text
    assert 'kenning_requests_total{method="GET",route="/images/{image}/thumbnail",status="404"} 1.0' in text
    assert 'kenning_request_seconds_count{route="/identify"} 1.0' in text
    assert f"kenning_gallery_images {float(images)}" in text


def test_docs_and_page_are_served(local_index: Path) -> None:
    with running(local_index) as url:
        spec = httpx.get(f"{url}/openapi.json").json()
        page = httpx.get(f"{url}/")
        script = httpx.get(f"{url}/static/app.js")
    assert {"/identify", "/identities", "/health", "/metrics", "/images/{image}/thumbnail"} <= set(spec["paths"])
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    assert script.status_code == 200 and "identifyAll" in script.text
    assert "access-control-allow-origin" not in page.headers  # CORS off by default


def test_a_network_address_needs_a_token(local_index: Path) -> None:
    with pytest.raises(KenningError, match="without a token"):
        check_exposure("0.0.0.0", None)
    check_exposure("0.0.0.0", "secret")
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    assert_refused(cli("serve", "--index", local_index, "--host", "0.0.0.0"), "--token")


def test_after_a_write_the_served_index_keeps_its_base_descriptor_index(index_copy: Path, local_demo: Path) -> None:
    """An enrolment costs the service a search of the new photo's descriptors, not a rebuild of the
    base's descriptor index (seconds at a thousand photos); a compaction (a new base) rebuilds it."""
    from kenning.serve.catalogue import ServedIndex

    served = ServedIndex(index_copy, index_copy.parent / "photos")
    photo, _ = _gallery_photo(local_demo)
    before = served.current()
    before.query([str(photo)])
    base_index = before.matcher.index
    newcomer = sorted((local_demo / "enroll").glob("*.jpg"))[0]
    assert cli("enroll", newcomer, "--index", index_copy, "--label", "newcomer").exit_code == 0
    after = served.current()
    assert after is not before and after.query([str(newcomer)])[0].labels[0] == "newcomer"
    assert after.matcher.index is base_index and after.matcher.tail is not None
    assert cli("build-index", "--compact", "--out", index_copy).exit_code == 0
    compacted = served.current()
    assert compacted.query([str(newcomer)])[0].labels[0] == "newcomer"
    assert compacted.matcher.index is not base_index and compacted.matcher.tail is None


def test_viewpoints_and_encounters_through_the_api(index_copy: Path, local_demo: Path) -> None:
    """Enrol with a viewpoint and an encounter (stored), identify several photos as one encounter,
    and a right flank never finds the left flank enrolled."""
    from kenning.index.gallery import GalleryIndex

    newcomer = sorted((local_demo / "enroll").glob("*.jpg"))[0]
    with running(index_copy) as url:
        enrolled = httpx.post(
            f"{url}/identities/Hut on the ridge/images",
            files=_files(newcomer),
            data={"viewpoint": "Left", "encounter": "e42"},
            headers=AUTH,
            timeout=60,
        )
        assert enrolled.status_code == 200, enrolled.text
        row = GalleryIndex.load(index_copy).table.query("label == 'Hut on the ridge'").iloc[0]
        assert (row["viewpoint"], row["encounter"]) == ("left", "e42")
        photos = [("files", ("a.jpg", _another_photo_of(newcomer), "image/jpeg"))] * 2
        left = httpx.post(f"{url}/identify", files=photos, data={"viewpoint": "left", "encounter": "true"}, timeout=60)
        assert left.status_code == 200, left.text
        assert (
            len(left.json()["results"]) == 2 and left.json()["encounter"]["answers"][0]["label"] == "Hut on the ridge"
        )
        right = httpx.post(f"{url}/identify", files=photos[:1], data={"viewpoint": "right"}, timeout=60).json()
        assert "Hut on the ridge" not in [a["label"] for a in right["results"][0]["answers"]]
        assert "encounter" not in right


def test_rename_merge_split_and_history_through_the_api(index_copy: Path, local_demo: Path) -> None:
    """Curation with the token (not without), each answered as the index then answers; local
    features follow their images (the index matches them)."""
    with running(index_copy) as url:
        listed = httpx.get(f"{url}/identities").json()["identities"]
        a, b, c = (i["label"] for i in listed[:3])
        count = httpx.get(f"{url}/health").json()["images"]
        assert httpx.patch(f"{url}/identities/{a}", json={"label": "Renamed"}).status_code == 401
        renamed = httpx.patch(f"{url}/identities/{a}", json={"label": "Renamed"}, headers=AUTH)
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["moved"] == listed[0]["images"] and renamed.json()["images"] == count

        photo_of_b = sorted((local_demo / "images" / "test" / b).glob("*.jpg"))[0]
        merged = httpx.post(f"{url}/identities/{c}/merge", json={"labels": [b]}, headers=AUTH)
        assert merged.status_code == 200 and merged.json()["into"] == c, merged.text
        answer = _identify(url, "b.jpg", _another_photo_of(photo_of_b))
        assert answer["answers"][0]["label"] == c and "local" in str(answer)  # b's photo now answers c

        images = httpx.get(f"{url}/identities/{c}/images").json()["images"]
        assert len(images) == listed[1]["images"] + listed[2]["images"]
        moved = [images[0]["id"]]
        split = httpx.post(f"{url}/identities/{c}/split", json={"images": moved, "into": "Split off"}, headers=AUTH)
        assert split.status_code == 200 and split.json()["moved"] == 1, split.text
        assert [i["id"] for i in httpx.get(f"{url}/identities/Split off/images").json()["images"]] == moved

        generation = httpx.get(f"{url}/health").json()["generation"]
        for method, path, body, status in [
            ("PATCH", "/identities/nobody", {"label": "x"}, 404),
            ("PATCH", f"/identities/{c}", {"label": "Split off"}, 422),  # a rename never joins two identities
            ("PATCH", f"/identities/{c}", {"label": "a/b"}, 422),  # a label no URL can name
            ("POST", f"/identities/{c}/merge", {"labels": ["nobody"]}, 404),
            ("POST", f"/identities/{c}/split", {"images": [2**40], "into": "x"}, 404),
            ("POST", f"/identities/{c}/split", {"images": moved, "into": "x"}, 422),  # not c's any more
        ]:
            response = httpx.request(method, f"{url}{path}", json=body, headers=AUTH)
            assert response.status_code == status, (path, body, response.text)
            assert "\n" not in response.json()["error"]
        assert httpx.get(f"{url}/health").json()["generation"] == generation  # no refusal changed anything
        history = httpx.get(f"{url}/history").json()["history"]
        assert [h["operation"] for h in history] == ["rename", "merge", "split"]
        assert httpx.get(f"{url}/health").json()["images"] == count
