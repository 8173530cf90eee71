"""Issue 20, the service: who may call it, and what a call may cost. Real uvicorn, real requests
(httpx), and a page on another origin in headless Chromium attempting a write."""

from __future__ import annotations

import base64
import http.server
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from kenning.index import store
from kenning.index.gallery import GalleryIndex
from kenning.index.manifest import read_index_manifest
from kenning.serve.guard import ServeSettings
from tests.hostile.conftest import cli
from tests.hostile.corpus import png_of_zeros
from tests.serve.conftest import TOKEN, running
from tests.serve.test_api import _files
from tests.serve.test_page import CHROMIUM, FLAGS, _browser_or_skip

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVIL = "http://evil.example"


def _photo(local_demo: Path, n: int = 0) -> Path:
    return sorted((local_demo / "enroll").glob("*.jpg"))[n]


def _labels(url: str, search: str, headers: dict | None = None) -> int:
    return httpx.get(f"{url}/identities", params={"search": search}, headers=headers).json()["total"]


def test_writes_from_another_origin_or_host_are_refused(index_copy: Path, local_demo: Path) -> None:
    """Item 4: with no token (the loopback default) a form post from any web page enrolled, and a
    DNS-rebinding host read and deleted."""
    photo = _photo(local_demo)
    with running(index_copy, ServeSettings(token=None)) as url:
        port = url.rsplit(":", 1)[1]
        for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
            enrol = httpx.post(f"{url}/identities/intruder/images", files=_files(photo), headers=headers)
            assert enrol.status_code == 403 and "another web page" in enrol.json()["error"], enrol.text
            assert httpx.get(f"{url}/identities", headers=headers).status_code == 403  # no token: reads too
        rebinding = {"Host": f"evil.example:{port}"}
        assert httpx.get(f"{url}/identities", headers=rebinding).status_code == 403
        assert httpx.delete(f"{url}/images/0", headers=rebinding).status_code == 403
        assert _labels(url, "intruder") == 0
        same = {"Origin": url}  # the page itself
        assert httpx.post(f"{url}/identities/friend/images", files=_files(photo), headers=same).status_code == 200
        local = {"Host": f"localhost:{port}"}
        assert httpx.get(f"{url}/health", headers=local).status_code == 200


def test_with_a_token_other_pages_still_cannot_write(index_copy: Path, local_demo: Path) -> None:
    photo = _photo(local_demo)
    settings = ServeSettings(token=TOKEN, cors_origins=["https://app.example.org"])
    with running(index_copy, settings) as url:
        headers = {**AUTH, "Origin": EVIL}
        assert httpx.post(f"{url}/identities/x/images", files=_files(photo), headers=headers).status_code == 403
        assert httpx.get(f"{url}/identities", headers={"Origin": EVIL}).status_code == 200  # reads are open here
        allowed = {**AUTH, "Origin": "https://app.example.org"}
        assert httpx.post(f"{url}/identities/x/images", files=_files(photo), headers=allowed).status_code == 200


def test_reads_need_the_token_when_asked(index_copy: Path, local_demo: Path) -> None:
    """Item 6: with the README's network recipe anyone reachable listed labels and fetched photos."""
    with running(index_copy, ServeSettings(token=TOKEN, token_read=True)) as url:
        some = httpx.get(f"{url}/identities", headers=AUTH).json()["identities"][0]["ids"][0]
        for path in ("/identities", f"/images/{some}/thumbnail", "/metrics"):
            assert httpx.get(f"{url}{path}").status_code == 401, path
            assert httpx.get(f"{url}{path}", headers=AUTH).status_code == 200, path
        identify = httpx.post(f"{url}/identify", files=_files(_photo(local_demo)))
        assert identify.status_code == 401 and "read needs the service's token" in identify.json()["error"]
        assert httpx.get(f"{url}/health").status_code == 200  # liveness stays open


def test_forgetting_removes_kept_photos_but_not_shared_or_foreign_ones(tmp_path: Path) -> None:
    """Item 5, at the store: a kept photo is deleted once no live image names it; a user's file in
    the photos folder (its bytes not its name's) never is."""
    from tests.index.test_store import _index, _unit

    index_dir, photos = tmp_path / "index", tmp_path / "index-photos"
    _index().save(index_dir)
    from kenning.photos import keep

    kept, _ = keep(photos, b"photo bytes", ".jpg")
    foreign = photos / ("0" * 64 + ".jpg")
    foreign.write_bytes(b"the user's file, named like a kept one")
    store.enroll(index_dir, _unit(3, 9), ["a", "b", "c"], ["x", "y", "z"], [str(kept), str(kept), str(foreign)])
    done = store.forget(index_dir, ["x"], photos_dir=photos)
    assert done.photos_deleted == [] and kept.exists()  # image "b" still names it
    done = store.forget(index_dir, ["y", "z"], photos_dir=photos)
    assert done.photos_deleted == [kept.name] and not kept.exists() and foreign.exists()


def test_forget_on_the_command_line_removes_the_kept_photos(index_copy: Path, local_demo: Path) -> None:
    """Item 5: `kenning forget` kept the uploads in INDEX-photos forever."""
    with running(index_copy) as url:
        enrol = httpx.post(f"{url}/identities/visitor/images", files=_files(_photo(local_demo)), headers=AUTH)
        assert enrol.status_code == 200, enrol.text
    photos = index_copy.parent / "photos"
    assert len(list(photos.iterdir())) == 1
    run = cli("forget", "--index", index_copy, "--label", "visitor", "--photos", photos)
    assert run.exit_code == 0 and "deleted 1 kept photo(s)" in run.stdout, run.stdout + run.stderr
    assert list(photos.iterdir()) == []


def test_a_request_has_a_pixel_budget_and_heavy_requests_a_queue(index_copy: Path, local_demo: Path) -> None:
    """Item 7: 32 photos of 9400 x 9400 in one 351 KB request took 28.9 s and +350 MB, no token."""
    big = png_of_zeros(index_copy.parent / "big.png", 9000, 9000)  # under the per-photo limit, alone
    files = [("files", (f"{i}.png", big.read_bytes(), "image/png")) for i in range(3)]
    settings = ServeSettings(token=TOKEN, max_heavy_requests=1, max_waiting_requests=0)
    with running(index_copy, settings) as url:
        response = httpx.post(f"{url}/identify", files=files, timeout=60)
        assert response.status_code == 413 and "over 150000000 pixels together" in response.json()["error"]
        photo = _photo(local_demo).read_bytes()
        barrier = threading.Barrier(6)

        def identify(_: int) -> httpx.Response:
            barrier.wait()
            return httpx.post(f"{url}/identify", files=[("files", ("p.jpg", photo, "image/jpeg"))], timeout=120)

        with ThreadPoolExecutor(6) as pool:
            statuses = [(r.status_code, r.headers.get("retry-after")) for r in pool.map(identify, range(6))]
    assert (200, None) in statuses and all(s in ((200, None), (429, "2")) for s in statuses), statuses
    assert any(s == 429 for s, _ in statuses), statuses


def test_errors_name_no_server_path_and_huge_ids_are_refused(index_copy: Path, local_demo: Path) -> None:
    """Items 8 and 19: messages carried the photos folder, FAISS source paths and C++ signatures;
    /images/9223372036854775808/thumbnail was a 500."""
    with running(index_copy) as url:
        for too_big in ("9223372036854775808", "99999999999999999999999"):
            assert httpx.get(f"{url}/images/{too_big}/thumbnail").status_code == 422
            assert httpx.delete(f"{url}/images/{too_big}", headers=AUTH).status_code == 422
        label = httpx.get(f"{url}/identities").json()["identities"][0]["label"]
        base = index_copy / read_index_manifest(index_copy).base_file
        base.write_bytes(base.read_bytes()[:-10])  # damaged under the running service
        gone = httpx.delete(f"{url}/identities/{label}", headers=AUTH)
    assert gone.status_code == 422 and "is damaged" in gone.json()["error"]
    assert str(index_copy.parent) not in gone.text and "/" not in gone.json()["error"], gone.text
    from kenning.serve.guard import public_message

    faiss = (
        "Error in virtual faiss::Index* faiss::read_index(IOReader*, int) at /project/faiss/impl/index_read.cpp:42: x"
    )
    assert public_message(f"index /srv/kenning/idx is damaged: {faiss}") == "index idx is damaged: x"


def test_the_api_page_and_the_page_load_nothing_from_elsewhere(local_index: Path) -> None:
    """Item 23: /docs loaded Swagger UI from a CDN; the page had no X-Frame-Options or CSP."""
    with running(local_index) as url:
        docs = httpx.get(f"{url}/docs")
        assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert "cdn." not in docs.text and "https://" not in docs.text
        assert httpx.get(f"{url}/docs-assets/swagger-ui-bundle.js").status_code == 200
        page = httpx.get(f"{url}/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self';" in page.headers["content-security-policy"]


def test_a_rebuilt_index_is_reopened_and_old_ids_name_nothing(
    built_index: Path, trained_model: Path, demo_dir: Path, tmp_path: Path
) -> None:
    """Item 2: after a rebuild the running service answered `DELETE /images/0` by removing another
    identity's photo (ids restarted at 0)."""
    index = Path(shutil.copytree(built_index, tmp_path / "index"))
    old = GalleryIndex.load(index)
    old_id = int(old.base_table["id"].iloc[0])
    with running(index) as url:
        assert httpx.get(f"{url}/health").json()["images"] == len(old)
        run = cli(
            "build-index", "--model", trained_model, "--data", demo_dir, "--split", "test", "--out", index,
            "--threshold", "0.5",
        )  # fmt: skip
        assert run.exit_code == 0, run.stderr
        assert httpx.get(f"{url}/health").json()["images"] == len(old)
        assert httpx.delete(f"{url}/images/{old_id}", headers=AUTH).status_code == 404
        fresh = GalleryIndex.load(index)
        assert np.all(fresh.base_table["id"].to_numpy() >= old.manifest.next_id)


@contextmanager
def _another_origin(page: str) -> Iterator[str]:
    """A web page on another origin (another port of 127.0.0.1), served from memory."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def test_a_page_on_another_origin_cannot_write_in_a_browser(index_copy: Path, local_demo: Path) -> None:
    """Item 4, as it happens: a page the user visits posts a photo to the local service with fetch
    (no-cors) and with a plain HTML form. Before, both enrolled; now both are refused (403)."""
    sync_playwright = _browser_or_skip()
    photo = base64.b64encode(_photo(local_demo).read_bytes()).decode()
    with running(index_copy, ServeSettings(token=None)) as url:
        attack = f"""<!doctype html><html><body><form id="f" method="post" enctype="multipart/form-data"
            action="{url}/identities/form-intruder/images" target="sink"><input type="file" name="files" id="file">
            </form><iframe name="sink"></iframe><script>
            const bytes = Uint8Array.from(atob("{photo}"), c => c.charCodeAt(0));
            const photo = new File([bytes], "p.jpg", {{type: "image/jpeg"}});
            const form = new FormData(); form.append("files", photo);
            fetch("{url}/identities/fetch-intruder/images", {{method: "POST", body: form, mode: "no-cors"}})
              .finally(() => {{
                const list = new DataTransfer(); list.items.add(photo);
                document.getElementById("file").files = list.files;
                document.getElementById("f").submit();
                document.title = "sent";
              }});
            </script></body></html>"""
        with _another_origin(attack) as evil, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page()
            page.goto(evil)
            page.wait_for_function("document.title === 'sent'", timeout=30_000)
            page.wait_for_timeout(1500)  # the form's post lands in the iframe
            browser.close()
        metrics = httpx.get(f"{url}/metrics").text
        assert _labels(url, "intruder") == 0
    refused = [line for line in metrics.splitlines() if 'method="POST"' in line and 'status="403"' in line]
    assert refused and sum(float(line.split()[-1]) for line in refused) >= 2, metrics


def test_the_host_names_a_service_answers_to_follow_where_it_listens() -> None:
    from kenning.serve.guard import serve_settings

    assert serve_settings("127.0.0.1", 8000, None, 20, []).allowed_hosts == ["localhost", "127.0.0.1", "::1"]
    assert serve_settings("0.0.0.0", 8000, "t", 20, []).allowed_hosts == ["*"]  # the token guards every write
    named = serve_settings("10.0.0.5", 8000, "t", 20, [], allowed_hosts=["kenning.lan"])
    assert named.allowed_hosts == ["10.0.0.5", "kenning.lan"] and not named.token_read
    assert serve_settings("::1", 8000, "t", 20, [], token_read=True).token_read
