"""The dashboard's web server: the standard library's ``ThreadingHTTPServer``, read-only (GET and HEAD; every other
method is answered 405), bound to 127.0.0.1 unless told otherwise.

Routes: ``/`` the page, ``/plotly.min.js`` plotly.js from the installed plotly package (nothing from the network),
``/api/state`` the current state as JSON with its version as ``ETag`` (``If-None-Match`` with the current version
answers 304). Bound to a loopback address, the server answers only requests whose ``Host`` names a loopback host,
so that another site cannot read it through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import socketserver
import sys
import threading
import urllib.parse
from collections.abc import Callable
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

from plotly.offline import get_plotlyjs

from ..results import ResultsError
from . import page
from .state import Live
from .watch import watch

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_INTERVAL = 2.0
ALLOWED = "GET, HEAD"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
                               "connect-src 'self'; frame-ancestors 'none'",
}


@cache
def plotly_js() -> bytes:
    text: str = get_plotlyjs()
    return text.encode()


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DashboardServer(ThreadingHTTPServer):
    """Serves the state of ``live``; the page polls every ``live.interval`` seconds."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], live: Live) -> None:
        self.live = live
        self._page: tuple[str, bytes] = ("", b"")
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the address up in the DNS (socket.getfqdn): not needed here
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def page(self) -> bytes:
        """The page of the current snapshot, rendered once per version."""
        snap = self.live.snapshot
        version, body = self._page
        if version != snap.version:
            body = page.render(snap, self.live.interval)
            self._page = (snap.version, body)
        return body

    @property
    def loopback_only(self) -> bool:
        return is_loopback(str(self.server_address[0]))

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"
    server_version = "kubetune-dashboard"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def __getattr__(self, name: str) -> Callable[[], None]:
        if name.startswith("do_"):  # POST, PUT, DELETE, PATCH, OPTIONS, anything else: read-only
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send(405, b"405 method not allowed: the dashboard is read-only\n", "text/plain; charset=utf-8",
                   body=True, extra={"Allow": ALLOWED})

    def _answer(self, body: bool) -> None:
        if self.server.loopback_only and not is_loopback(self._host()):
            self._send(403, b"403 this dashboard answers only to localhost\n", "text/plain; charset=utf-8", body)
            return
        path = urllib.parse.urlsplit(self.path).path
        live = self.server.live
        if path in ("/", "/index.html"):
            self._send(200, self.server.page(), "text/html; charset=utf-8", body,
                       {"Cache-Control": "no-store"})
        elif path == "/" + page.PLOTLY_PATH:
            self._send(200, plotly_js(), "text/javascript; charset=utf-8", body,
                       {"Cache-Control": "public, max-age=3600"})
        elif path == "/" + page.STATE_PATH:
            snap = live.snapshot
            etag = f'"{snap.version}"'
            headers = {"ETag": etag, "Cache-Control": "no-cache"}
            if etag in [t.strip() for t in (self.headers.get("If-None-Match") or "").split(",")]:
                self._send(304, b"", "", body=False, extra=headers)
            else:
                self._send(200, snap.body, "application/json", body, headers)
        else:
            self._send(404, b"404 not found\n", "text/plain; charset=utf-8", body)

    def _host(self) -> str:
        host = (self.headers.get("Host") or "").strip()
        if host.startswith("["):
            return host[:host.find("]") + 1]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    def _send(self, status: int, data: bytes, ctype: str, body: bool, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        if status != 304:
            self.send_header("Content-Length", str(len(data)))
        for k, v in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if body and status != 304:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per poll would drown the terminal


def serve(source: str, address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT,
          interval: float = DEFAULT_INTERVAL, out: IO[str] | None = None,
          ready: Callable[[DashboardServer], None] | None = None, *, kubeconfig: str | None = None,
          context: str | None = None) -> int:
    """``kubetune dashboard``: serve until Ctrl-C (or SIGTERM); 0 then, 2 for an unreadable source, 1 when the
    address cannot be bound. ``ready`` is called with the server once it listens."""
    err = out or sys.stderr
    try:
        live = Live(watch(source, running_period=max(10.0, 5 * interval), kubeconfig=kubeconfig, context=context),
                    interval)
        live.refresh()
    except ResultsError as e:
        print(f"cannot show: {e}", file=err)
        return 2
    try:
        server = DashboardServer((address, port), live)
    except (OSError, OverflowError) as e:
        print(f"cannot listen on {address}:{port}: {e}", file=err)
        return 1
    stop = threading.Event()
    refresher = threading.Thread(target=live.run, args=(stop,), name="kubetune-dashboard-refresh", daemon=True)
    saved = None
    if threading.current_thread() is threading.main_thread():
        saved = signal.signal(signal.SIGTERM, _interrupt)
    try:
        refresher.start()
        snap = live.snapshot
        print(f"dashboard of {snap.name} ({snap.trials} trials, from {snap.source}) at {server.url} "
              f"(read-only; Ctrl-C to stop)", file=err, flush=True)
        print(server.url, flush=True)
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
        refresher.join(timeout=30)
        if saved is not None:
            signal.signal(signal.SIGTERM, saved)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
