"""Who may call `kenning serve`, and what one call may cost.

Writes need the token when one is set, and reads too with `token_read`. Whatever the token, a
browser must not be turned against the service by another web page: a request whose Host is not
one the service answers to (DNS rebinding) is refused, and so is any request but a plain read from
another origin (a cross-site form post needs no CORS preflight), and with no token every request
from another origin. Heavy requests (identify, enrol) are bounded in pixels and in how many run at
once (429 with Retry-After); bodies in bytes. Messages to clients never name a server path.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse

from kenning.errors import KenningError, without_source_location
from kenning.serve.uploads import Refused

LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]


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

    @property
    def notice(self) -> str | None:
        """What a person starting the service should know about who may use it."""
        if not self.token:
            return "no --token: anyone on this machine can enrol and forget"
        if not self.token_read:
            return "reads (identify, the list of labels, thumbnails) need no token; --token-read protects them"
        return None


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


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s/'\"]+)+/([^\s/'\":]+)")


def public_message(text: str) -> str:
    """A message for a client: FAISS's C++ source locations dropped, every absolute path reduced
    to its last part (the photos folder, the index folder and temporaries are the server's own)."""
    return _ABSOLUTE_PATH.sub(r"\1", without_source_location(text))


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


class BodyTooLarge(Exception):
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
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await _refuse(scope, receive, send, 413, f"the request is over the limit of {self.limit} bytes")


async def _refuse(scope: dict, receive: Any, send: Any, status: int, message: str) -> None:
    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
