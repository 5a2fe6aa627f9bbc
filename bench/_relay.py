"""The ceiling of the latency benchmark: the same trip, page -> server -> other page, with
nothing but the transport. One page POSTs a value; the server hands it at once to every open
Server-Sent Events stream; the other page writes it into its DOM. No database, no worker, no
encryption, no render. Standard library only; run as `python _relay.py PORT`.
"""
from __future__ import annotations

import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = b"""<!doctype html><meta charset="utf-8"><title>relay</title>
<table><tr data-code="relay"><td class="value">-</td></tr></table>
<script>
const source = new EventSource("/events");
source.addEventListener("poke", (e) => { document.querySelector("td.value").textContent = e.data; });
window.relayWrite = (value) => fetch("/write", { method: "POST", body: String(value) }).then((r) => r.status);
</script>"""

streams: set[queue.Queue] = set()
lock = threading.Lock()


class Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            inbox: queue.Queue = queue.Queue()
            with lock:
                streams.add(inbox)
            try:
                self.wfile.write(b"retry: 2000\n\n")
                self.wfile.flush()
                while True:
                    try:
                        value = inbox.get(timeout=15)
                    except queue.Empty:
                        self.wfile.write(b": keepalive\n\n")
                    else:
                        self.wfile.write(b"event: poke\ndata: " + value + b"\n\n")
                    self.wfile.flush()
            except OSError:
                pass
            finally:
                with lock:
                    streams.discard(inbox)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def do_POST(self):
        value = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:
            for inbox in streams:
                inbox.put(value)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Relay)
    server.daemon_threads = True
    server.serve_forever()
