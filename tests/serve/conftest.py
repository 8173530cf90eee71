"""A real uvicorn server on a free loopback port, over a small index with local matching."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from kenning.serve.app import create_app
from kenning.serve.catalogue import ServedIndex
from kenning.serve.guard import ServeSettings
from tests.conftest import build_local_index

TOKEN = "test-token"


@pytest.fixture(scope="session")
def local_index(local_model: Path, local_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serve-index") / "index"
    build_local_index(local_model, local_demo, out, "sift")
    return out


@pytest.fixture
def index_copy(local_index: Path, tmp_path: Path) -> Path:
    """A test's own copy of the index: it may write to it."""
    return Path(shutil.copytree(local_index, tmp_path / "index"))


@contextmanager
def running(index: Path, settings: ServeSettings | None = None) -> Iterator[str]:
    """`kenning serve`'s app on uvicorn in a thread; yields its base URL."""
    app = create_app(ServedIndex(index, index.parent / "photos"), settings or ServeSettings(token=TOKEN))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
