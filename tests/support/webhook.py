"""A webhook receiver on 127.0.0.1 (a free port) for the alert tests: records what was POSTed, can refuse."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    """A webhook receiver on 127.0.0.1 recording every JSON body POSTed to it; ``fail`` answers 503."""

    def __init__(self) -> None:
        received, self.fail = [], threading.Event()
        fail = self.fail

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if fail.is_set():
                    self.send_response(503)
                else:
                    received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received: list[dict] = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self) -> list[tuple[str, str]]:
        """(status, key) of what arrived since the last call."""
        taken = [(body["status"], body["key"]) for body in self.received]
        self.received.clear()
        return taken

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
