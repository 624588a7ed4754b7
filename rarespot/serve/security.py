"""What keeps the review app safe beyond the loopback bind: ASGI middleware and
the uvicorn set-up.

Each request passes, outermost first:

1. :class:`SecurityHeaders`: CSP (scripts, styles, images and fetches from this
   server only; no framing), ``X-Frame-Options``, ``X-Content-Type-Options``,
   ``Referrer-Policy``, cross-origin isolation, and ``no-store`` on scan data;
2. :class:`HostCheck`: Starlette's ``TrustedHostMiddleware`` with the allowed
   names (DNS rebinding: a foreign page's name resolving to this machine gets 400);
3. :class:`TokenAuth`: with a token, every request needs it (HTTP Basic
   password, so a browser asks once, or ``Authorization: Bearer``);
4. :class:`OriginCheck`: state-changing requests (POST, ...) from a page of
   another origin get 403, and so does any cross-site request that is not a
   top-level navigation (``Sec-Fetch-Site``);
5. :class:`ClientIdentity`: who the scan cache and the per-client limits count:
   the client address plus a random browser cookie set with the page;
6. :class:`BodyGuard`: upload size (413), and time (408: a pause over
   ``body_idle_timeout_s`` or a whole upload over ``body_timeout_s``).

Request *headers* are timed at the protocol level (:func:`timed_h11_protocol`):
uvicorn has no such timeout of its own, so a connection that never finishes
its headers would stay open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse

from rarespot.serve.settings import LOOPBACK_NAMES, ServeSettings, is_loopback_host

CLIENT_COOKIE = "rarespot_client"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

#: The review page and the API docs load everything from this server; nothing may frame them.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
# Swagger UI sets style attributes on its elements; its page alone allows inline styles.
CSP_DOCS = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def allowed_host_names(settings: ServeSettings) -> list[str]:
    """Host names the server answers to: loopback names, the bound address, this machine's
    names when bound beyond loopback, and ``settings.allowed_hosts``."""
    names = list(LOOPBACK_NAMES) + ["[::1]"]
    host = settings.host.strip()
    if host and host not in ("0.0.0.0", "::", "[::]"):
        names.append(host)
    if not settings.is_loopback:
        for name in {socket.gethostname(), socket.getfqdn()}:
            if name:
                names.append(name)
    names += settings.allowed_hosts
    return list(dict.fromkeys(n.lower() for n in names if n))


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _state(scope) -> dict:
    return scope.setdefault("state", {})


class SecurityHeaders:
    """Adds the security headers to every HTTP response (errors included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        csp = CSP_DOCS if path == "/docs" else CSP
        api = path.startswith("/api/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                present = {k.lower() for k, _ in headers}
                extra = {
                    b"content-security-policy": csp.encode(),
                    b"x-frame-options": b"DENY",
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"no-referrer",
                    b"cross-origin-opener-policy": b"same-origin",
                    b"cross-origin-resource-policy": b"same-origin",
                    b"permissions-policy": b"camera=(), microphone=(), geolocation=(), usb=(), payment=()",
                }
                if scope.get("scheme") == "https":  # once on HTTPS, the browser never falls back to plain HTTP
                    extra[b"strict-transport-security"] = b"max-age=31536000"
                if api:  # scans are patient or passenger data: never kept in a browser or proxy cache
                    extra[b"cache-control"] = b"no-store"
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    present.discard(b"cache-control")
                headers += [(k, v) for k, v in extra.items() if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheck:
    """Starlette's TrustedHostMiddleware, answering in JSON and saying how to allow a name."""

    def __init__(self, app, allowed_hosts: list[str]):
        self.app = app
        self.allowed = allowed_hosts

        async def passed(scope, receive, send):
            _state(scope)["host_ok"] = True

        self.check = TrustedHostMiddleware(passed, allowed_hosts=allowed_hosts, www_redirect=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def discard(message):  # Starlette's plain-text refusal is replaced below
            pass

        await self.check(scope, receive, discard)
        if _state(scope).pop("host_ok", False):
            return await self.app(scope, receive, send)
        host = Headers(scope=scope).get("host", "")
        detail = (
            f"this server does not answer to the host name {host[:100]!r}; if operators reach it under that "
            f"name, add it to allowed_hosts in the server's settings"
        )
        await _json(400, detail)(scope, receive, send)


class TokenAuth:
    """Every request must carry the token: as the HTTP Basic password (any user name) or as a Bearer token."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    def _presented(self, headers: Headers) -> bytes | None:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip().encode()
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
            return decoded.partition(b":")[2]
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        presented = self._presented(Headers(scope=scope))
        if presented is not None and secrets.compare_digest(presented, self.token):
            return await self.app(scope, receive, send)
        detail = (
            "this server needs its access token: in a browser, give it as the password (any user name); "
            "from a script, send 'Authorization: Bearer <token>'"
        )
        await _json(401, detail, {"WWW-Authenticate": 'Basic realm="rarespot review", charset="UTF-8"'})(
            scope, receive, send
        )


class OriginCheck:
    """Refuses what a page of another site makes a browser send here.

    - a state-changing request (not GET/HEAD/OPTIONS) whose ``Origin`` is not this
      server's own (nor in ``allowed_origins``): 403; requests without ``Origin``
      come from scripts, not from a page, and pass (the token guards those);
    - any request a browser marks ``Sec-Fetch-Site: cross-site`` that is not a
      top-level navigation (e.g. an ``<img>`` of a render on a foreign page): 403.
    """

    def __init__(self, app, allowed_origins: list[str]):
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        method = scope.get("method", "GET")
        origin = headers.get("origin")
        if method not in SAFE_METHODS and origin is not None and not self._same_origin(origin, scope, headers):
            detail = f"requests from the web page {origin[:100]!r} are not accepted; open the review page itself"
            return await _json(403, detail)(scope, receive, send)
        site, mode = headers.get("sec-fetch-site"), headers.get("sec-fetch-mode")
        if site == "cross-site" and not (method == "GET" and mode == "navigate"):
            return await _json(403, "cross-site requests are not accepted")(scope, receive, send)
        return await self.app(scope, receive, send)

    def _same_origin(self, origin: str, scope, headers: Headers) -> bool:
        if origin.rstrip("/").lower() in self.allowed:
            return True
        theirs = _origin_key(origin)
        own = _origin_key(f"{scope.get('scheme', 'http')}://{headers.get('host', '')}")
        return theirs is not None and theirs == own


def _origin_key(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, the port filled in; None for "null" or anything odd."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname, port


class ClientIdentity:
    """Names the client for the scan cache and per-client limits: its address, plus a
    random cookie the page gets with ``/`` (so two browsers behind one proxy differ)."""

    def __init__(self, app, secure_cookie: bool = False):
        self.app = app
        self.secure_cookie = secure_cookie

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cookie = _cookie(Headers(scope=scope).get("cookie", ""), CLIENT_COOKIE)
        if cookie is not None and not _COOKIE_VALUE.match(cookie):
            cookie = None
        new_cookie = None
        if cookie is None and scope.get("path") == "/" and scope.get("method") == "GET":
            cookie = new_cookie = secrets.token_urlsafe(18)
        address = (scope.get("client") or ("unknown", 0))[0]
        _state(scope)["client"] = (str(address), cookie or "")

        async def send_cookie(message):
            if new_cookie and message["type"] == "http.response.start":
                flags = "; Secure" if self.secure_cookie or scope.get("scheme") == "https" else ""
                value = f"{CLIENT_COOKIE}={new_cookie}; Path=/; HttpOnly; SameSite=Strict{flags}"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", value.encode())]}
            await send(message)

        await self.app(scope, receive, send_cookie)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class BodyGuard:
    """Refuses request bodies over the size limit (413) or too slow to arrive (408), before they are parsed.

    Starlette spools multipart uploads to disk with no limit of its own, so the size
    is enforced here: by Content-Length up front, and by counting the bytes of
    bodies sent without one (chunked). A body that pauses longer than ``idle_s``, or
    takes longer than ``total_s`` in all, is cut off: a slow client cannot hold a
    connection and a spool file open.
    """

    def __init__(self, app, max_bytes: int, limit_text: str, idle_s: float, total_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.limit_text = limit_text
        self.idle_s = idle_s
        self.total_s = total_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            detail = f"upload of {int(length) / 2**20:.1f} MB is over the server's {self.limit_text} limit"
            return await _json(413, detail, {"Connection": "close"})(scope, receive, send)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_s
        seen = 0
        done = False

        async def guarded_receive():
            nonlocal seen, done
            if done:
                return await receive()
            wait = min(self.idle_s, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.001))
            except asyncio.TimeoutError:
                slow = "paused too long" if loop.time() < deadline else "took too long"
                # An HTTPException passes through FastAPI's body parsing unchanged; close: the rest is not read.
                raise HTTPException(
                    408, f"the upload {slow} (limits: {self.idle_s:g} s pause, {self.total_s:g} s in all)",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(
                        413, f"upload is over the server's {self.limit_text} limit", headers={"Connection": "close"}
                    )
                done = not message.get("more_body", False)
            return message

        return await self.app(scope, guarded_receive, send)


# ----------------------------------------------------------------- the server


def timed_h11_protocol(header_timeout_s: float):
    """uvicorn's h11 protocol with a deadline for each request's headers.

    uvicorn times idle kept-alive connections, but a client that keeps sending a
    byte now and then of headers it never finishes is never cut off. Here the
    clock starts when the connection opens (and again after each response) and
    only a complete request head stops it; then the connection gets 408 and is closed.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _head_timer: Any = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # the request head is in
                self._cancel_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm_head_timer()

        def connection_lost(self, exc):
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.cycle is None or self.cycle.response_complete:
                body = b"the request headers did not arrive in time"
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            self.transport.close()

    return TimedH11Protocol


def uvicorn_config(app, settings: ServeSettings, host: str | None = None, port: int | None = None, **kwargs):
    """The uvicorn configuration ``rarespot serve`` runs: header deadline, keep-alive,
    connection limit, no ``Server`` header."""
    import uvicorn

    from rarespot.errors import InputError

    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise InputError(settings.ssl_certfile or settings.ssl_keyfile, "TLS needs both ssl_certfile and ssl_keyfile")
    for path in (settings.ssl_certfile, settings.ssl_keyfile):
        if path is not None and not Path(path).is_file():
            raise InputError(path, "TLS file not found")
    if settings.tls:
        kwargs.update(ssl_certfile=str(settings.ssl_certfile), ssl_keyfile=str(settings.ssl_keyfile))
    return uvicorn.Config(
        app,
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        http=timed_h11_protocol(settings.header_timeout_s),
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        limit_concurrency=settings.max_connections,
        server_header=False,
        **kwargs,
    )


def check_exposure(settings: ServeSettings, token: str | None) -> str | None:
    """Refuse a bind beyond loopback without a token (InputError); a warning for one with a token."""
    from rarespot.errors import InputError

    if settings.is_loopback:
        return None
    if not token:
        raise InputError(
            None,
            f"--host {settings.host} makes the review app reachable from other machines, so it needs an access "
            f"token: put one in a file and pass --token-file FILE (or set RARESPOT_SERVE_TOKEN); "
            f"`python -c \"import secrets; print(secrets.token_urlsafe(24))\" > token.txt` makes one",
        )
    transport = (
        "traffic is encrypted (TLS)" if settings.tls
        else "traffic is plain HTTP: give --ssl-certfile/--ssl-keyfile, or put it behind a TLS proxy, on any "
        "network you do not trust"
    )
    return (
        f"warning: listening on {settings.host}: other machines can reach the review app. Every request needs the "
        f"token; {transport}. Host names accepted: {', '.join(allowed_host_names(settings))} "
        f"(add others with --allowed-host)."
    )


def is_loopback(host: str) -> bool:
    return is_loopback_host(host)
