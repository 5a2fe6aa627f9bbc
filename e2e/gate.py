"""A reverse proxy in front of the live server that can hold back the sync endpoints (refuse
them, leave them unanswered, or cut an answer off half-way) and tells which worker version sent
each push.

Playwright routes a service worker's requests only once it has attached to that worker, and a
worker that has just been installed can start sending before then (or, now and then, with its
requests left paused). A test about a new version taking over therefore holds and watches the
sync requests here, between the browser and the server, where every version's requests pass.
"""
from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, not the message.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade"}


class Gate:
    """Serves at `.url` what the live server serves; other attributes are the live server's."""

    def __init__(self, live_server):
        self.upstream = live_server
        self.held: set[str] = set()
        self.stalled: set[str] = set()
        self.to_cut: set[str] = set()
        self.cuts = 0
        self.pushed_by: list[str | None] = []
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __getattr__(self, name):
        if name == "upstream":  # not set yet: never look for it on itself
            raise AttributeError(name)
        return getattr(self.upstream, name)

    def hold(self, *paths: str) -> None:
        """Answer requests to these paths 503, as a server busy with a deploy would."""
        with self._lock:
            self.held.update(paths)

    def stall(self, *paths: str) -> None:
        """Leave requests to these paths unanswered, as a link lost mid-request does; once
        released they reach the server after all, and the browser is long gone."""
        with self._lock:
            self.stalled.update(paths)

    def cut(self, *paths: str) -> None:
        """Send the next answer to each of these paths only half-way, then close the
        connection: a link lost while the answer was on its way."""
        with self._lock:
            self.to_cut.update(paths)

    def cutting(self, path: str) -> bool:
        with self._lock:
            if path not in self.to_cut:
                return False
            self.to_cut.discard(path)
            self.cuts += 1
            return True

    def release(self) -> None:
        with self._released:
            self.held.clear()
            self.stalled.clear()
            self._released.notify_all()

    def is_held(self, path: str) -> bool:
        with self._lock:
            return path in self.held

    def wait_while_stalled(self, path: str) -> None:
        with self._released:
            self._released.wait_for(lambda: path not in self.stalled, timeout=300)

    def saw_push(self, body: bytes) -> None:
        try:
            version = json.loads(body)["telemetry"]["worker_version"]
        except (ValueError, KeyError, TypeError):
            version = None
        with self._lock:
            self.pushed_by.append(version)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(gate: Gate):
    class Forward(BaseHTTPRequestHandler):
        # One request per connection: a held answer or a streamed one ends with the connection.
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path = self.path.split("?", 1)[0]
            if self.command == "POST" and path == "/sync/v1/push":
                gate.saw_push(body or b"")
            gate.wait_while_stalled(path)
            if gate.is_held(path):
                answer = json.dumps({"error": "unavailable",
                                     "message": "The server is being updated."}).encode()
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                return
            upstream = http.client.HTTPConnection("127.0.0.1", int(gate.upstream.url.rsplit(":", 1)[1]),
                                                  timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                except OSError:
                    self.send_error(502)
                    return
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.end_headers()
                if gate.cutting(path):
                    whole = response.read()
                    self.wfile.write(whole[:len(whole) // 2])
                    self.wfile.flush()
                    return
                # Streamed as it comes: the live-update stream never ends on its own.
                while chunk := response.read1(65536):
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                upstream.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    return Forward
