"""`kenning serve`: the HTTP API and the browser page over one served index (FastAPI on uvicorn).

Routes (OpenAPI at /docs, its page served from the swagger-ui-bundle package): POST /identify,
POST /identities/{label}/images, DELETE /identities/{label}, DELETE /images/{id}, GET /identities,
GET /images/{id}/thumbnail, GET /health, GET /metrics, and the page at /. Every error is JSON
`{"error": "one line"}`, never a traceback, and never names a server path.

Who may call (`Guard`): writes need the token when one is set, and reads too with `token_read`.
Whatever the token, a browser must not be turned against the service by another web page: a
request whose Host is not one the service answers to (DNS rebinding) is refused, and so is any
request but a plain read from another origin (a cross-site form post needs no CORS preflight), and
with no token every request from another origin. Heavy requests (identify, enrol) are bounded in
pixels and in how many run at once (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi import Path as UrlPath
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path

from kenning.errors import KenningError, first_line
from kenning.serve.catalogue import ServedIndex
from kenning.serve.uploads import Refused, Upload, check_upload

STATIC = resources.files("kenning.serve") / "static"
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]
MAX_ID = 2**63 - 1  # index ids are int64
ImageId = Annotated[int, UrlPath(ge=0, le=MAX_ID, description="index id")]
log = logging.getLogger("kenning.serve")


@dataclass
class ServeSettings:
    token: str | None = None  # required by write endpoints when set (and by reads with token_read)
    max_upload_bytes: int = 20 * 1024 * 1024  # per photo
    max_files: int = 32  # photos per request
    cors_origins: list[str] = field(default_factory=list)  # none: browsers allow same-origin pages only
    token_read: bool = False  # reads (identify, list, thumbnails, metrics) need the token too
    allowed_hosts: list[str] = field(default_factory=lambda: list(LOOPBACK_NAMES))  # Host names answered; "*": any
    max_request_pixels: int = 150_000_000  # decoded pixels of all the photos of one request together
    max_heavy_requests: int = 2  # identify / enrol requests decoding and embedding at once
    max_waiting_requests: int = 14  # more wait for their turn; beyond these, 429 with Retry-After

    @property
    def max_request_bytes(self) -> int:
        return self.max_upload_bytes * self.max_files + 64 * 1024  # the multipart framing around them


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None, token_read: bool = False) -> None:
    """Refuse to serve writes to a network without a token."""
    if token_read and not token:
        raise KenningError("--token-read protects reads with the token: give --token or set KENNING_TOKEN")
    if not token and not _is_loopback(host):
        raise KenningError(f"refusing to listen on {host} without a token: give --token or set KENNING_TOKEN")


def serve_settings(
    host: str,
    port: int,
    token: str | None,
    max_upload_mb: float,
    cors_origins: list[str],
    token_read: bool = False,
    allowed_hosts: list[str] | None = None,
    max_request_pixels: int = 150_000_000,
) -> ServeSettings:
    """The settings of `kenning serve`, every number checked (one line when out of range). The Host
    names answered: the loopback names on loopback; else the address listened on, plus `allowed_hosts`
    (a name clients use, or "*" for any when listening on all addresses behind a token)."""
    check_exposure(host, token, token_read)
    if not 1 <= port <= 65_535:
        raise KenningError(f"--port must be in [1, 65535], got {port}")
    if not (math.isfinite(max_upload_mb) and 0 < max_upload_mb <= 1024):
        raise KenningError(f"--max-upload-mb must be a number in (0, 1024], got {max_upload_mb}")
    if not 1 <= max_request_pixels <= 10**10:
        raise KenningError(f"--max-request-pixels must be in [1, 1e10], got {max_request_pixels}")
    for origin in cors_origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or origin == "*":
            raise KenningError(f"--cors-origin must be an origin such as https://app.example.org, got {origin!r}")
    hosts = list(LOOPBACK_NAMES) if _is_loopback(host) else [host.strip("[]")]
    if host in ("0.0.0.0", "::") and not allowed_hosts:
        hosts = ["*"]  # any name this machine is reached by; the token guards every write
    return ServeSettings(
        token,
        int(max_upload_mb * 1024 * 1024),
        cors_origins=list(cors_origins),
        token_read=token_read,
        allowed_hosts=[*hosts, *(allowed_hosts or [])],
        max_request_pixels=max_request_pixels,
    )


_FAISS_LOCATION = re.compile(r"Error in .*? at \S+:\d+: ")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s/'\"]+)+/([^\s/'\":]+)")


def public_message(text: str) -> str:
    """A message for a client: FAISS's C++ source locations dropped, every absolute path reduced
    to its last part (the photos folder, the index folder and temporaries are the server's own)."""
    return _ABSOLUTE_PATH.sub(r"\1", _FAISS_LOCATION.sub("", text))


def _hostname(host_header: str) -> str:
    """The name in a Host header or an origin's netloc, without port ("[::1]:8000" -> "::1")."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """Host, origin and token checks of one request (see the module's docstring)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings

    def host_refusal(self, request: Request) -> str | None:
        allowed = self.settings.allowed_hosts
        host = request.headers.get("host", "")
        if "*" in allowed or _hostname(host).lower() in (a.lower() for a in allowed):
            return None
        return f"this service does not answer to the host name {host!r}"

    def origin_refusal(self, request: Request) -> str | None:
        """A request another web page's script or form made, when it may not."""
        origin = request.headers.get("origin")
        site = request.headers.get("sec-fetch-site")
        if origin is not None:
            same = urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()
            if same or origin in self.settings.cors_origins:
                return None
        elif site in (None, "same-origin", "none"):
            return None  # not from a browser, the page itself, or the user typing the URL
        plain_read = request.method in ("GET", "HEAD", "OPTIONS")
        if plain_read and self.settings.token:
            return None  # a page elsewhere cannot read the answer (no CORS), and must show the token
        return f"requests from another web page ({origin or site}) are refused"

    def token_refusal(self, request: Request, write: bool) -> str | None:
        token = self.settings.token
        if not token or not (write or self.settings.token_read):
            return None
        authorization = request.headers.get("authorization") or ""
        if hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
            return None
        return f"this {'write' if write else 'read'} needs the service's token: Authorization: Bearer TOKEN"


class HeavyRequests:
    """At most `running` heavy requests decode and embed at once, `waiting` more wait their turn; one
    more is refused at once (429): a burst of huge uploads must not hold the service's cores and
    memory. Counted on the event loop's one thread, so plain integers suffice."""

    def __init__(self, running: int, waiting: int):
        self._slots = asyncio.Semaphore(running)
        self._admitted = 0
        self._limit = running + waiting

    async def __aenter__(self) -> HeavyRequests:
        if self._admitted >= self._limit:
            raise Refused(429, "the service is busy with other photos: try again in a moment")
        self._admitted += 1
        try:
            await self._slots.acquire()
        except BaseException:
            self._admitted -= 1
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._slots.release()
        self._admitted -= 1


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by their Content-Length or as they stream."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await _refuse(scope, receive, send, 413, f"the request is over the limit of {self.limit} bytes")
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _refuse(scope, receive, send, 413, f"the request is over the limit of {self.limit} bytes")


async def _refuse(scope: dict, receive: Any, send: Any, status: int, message: str) -> None:
    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)


class Metrics:
    """Prometheus series of one app (its own registry: several apps in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kenning_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "kenning_request_seconds", "Request latency by route", ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.gallery = Gauge("kenning_gallery_images", "Images the served index answers from", registry=self.registry)


PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_POLICY = PAGE_POLICY.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")  # Swagger UI's loader


def create_app(served: ServedIndex, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    metrics = Metrics()
    guard = Guard(settings)
    heavy = HeavyRequests(settings.max_heavy_requests, settings.max_waiting_requests)
    app = FastAPI(
        title="Kenning",
        summary="Identify, confirm and enrol instances: which one is this?",
        docs_url=None,
        redoc_url=None,
    )

    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    if settings.cors_origins:
        origins = settings.cors_origins
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])

    @app.middleware("http")
    async def guarded(request: Request, call_next: Any) -> Response:
        """Before the body is read: a request from the wrong host or another page is refused."""
        refusal = guard.host_refusal(request) or guard.origin_refusal(request)
        if refusal:
            response: Response = JSONResponse({"error": refusal}, status_code=403)
        else:
            response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        docs = request.url.path.startswith("/docs")
        response.headers["Content-Security-Policy"] = DOCS_POLICY if docs else PAGE_POLICY
        return response

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        """Outermost: refused requests are counted too."""
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": public_message(exc.message)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(KenningError)
    async def kenning_error(_: Request, exc: KenningError) -> JSONResponse:
        return JSONResponse({"error": public_message(first_line(exc))}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, _BodyTooLarge):
            return JSONResponse({"error": "the request is over the size limit"}, status_code=413)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # The details (a library's message, a C++ signature, a path) go to the server's log, not to the client.
        log.error("internal error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error (the service's log says more)"}, status_code=500)

    def reader(request: Request) -> None:
        refusal = guard.token_refusal(request, write=False)
        if refusal:
            raise Refused(401, refusal)

    def writer(request: Request) -> None:
        refusal = guard.token_refusal(request, write=True)
        if refusal:
            raise Refused(401, refusal)

    async def read_uploads(files: list[UploadFile]) -> list[Upload]:
        if not files:
            raise Refused(422, "no photo in the request (multipart field 'files')")
        if len(files) > settings.max_files:
            raise Refused(413, f"{len(files)} photos in one request, over the limit of {settings.max_files}")
        uploads, pixels = [], 0
        for f in files:
            data = await f.read(settings.max_upload_bytes + 1)
            upload = check_upload(data, f.filename, settings.max_upload_bytes)
            pixels += upload.width * upload.height
            if pixels > settings.max_request_pixels:  # before the next photo is decoded
                raise Refused(
                    413,
                    f"the photos of this request hold over {settings.max_request_pixels} pixels together: "
                    "send fewer or smaller photos per request",
                )
            uploads.append(upload)
        return uploads

    read = [Depends(reader)]
    write = [Depends(writer)]

    @app.post(
        "/identify",
        summary="Top-5 answers per photo, the unknown decision, and the nearest gallery photos",
        dependencies=read,
    )
    async def identify(files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        async with heavy:
            uploads = await read_uploads(files)
            results = await run_in_threadpool(served.identify, uploads)
        return {"results": [{"name": r.name, **r.result} for r in results]}

    @app.post(
        "/identities/{label:path}/images", summary="Enrol photos under a label (new or existing)", dependencies=write
    )
    async def enroll(label: str, files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        async with heavy:
            uploads = await read_uploads(files)
            return await run_in_threadpool(served.enroll, label, uploads)

    @app.delete(
        "/identities/{label:path}",
        summary="Forget an identity and all its images (and the photos kept for them)",
        dependencies=write,
    )
    async def forget_identity(label: str) -> dict[str, Any]:
        return await run_in_threadpool(served.forget, label, None)

    @app.delete("/images/{image}", summary="Forget one image by its index id", dependencies=write)
    async def forget_image(image: ImageId) -> dict[str, Any]:
        return await run_in_threadpool(served.forget, None, image)

    @app.get("/identities", summary="Labels with their image counts, paged", dependencies=read)
    async def identities(
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        search: Annotated[str, Query(max_length=200)] = "",
    ) -> dict[str, Any]:
        return await run_in_threadpool(served.identities, offset, limit, search)

    @app.get(
        "/images/{image}/thumbnail",
        summary="A JPEG thumbnail of a gallery image",
        response_class=Response,
        dependencies=read,
    )
    async def image_thumbnail(image: ImageId) -> Response:
        data = await run_in_threadpool(served.thumbnail, image)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return await run_in_threadpool(served.health)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, dependencies=read)
    async def prometheus() -> Response:
        metrics.gallery.set((await run_in_threadpool(served.health))["images"])
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Kenning API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    return app
