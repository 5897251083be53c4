"""A real HTTP webhook receiver for tests: it checks every Standard Webhooks signature and
keeps what arrived, in order; it can answer a planned series of status codes first."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError


class Receiver:
    """A real HTTP endpoint that checks each signature and keeps what arrived, in order."""

    def __init__(self, port: int, secret: str, answers: list[int] | None = None) -> None:
        self.port, self.verifier = port, Verifier(secret)
        self.answers = list(answers or [])
        self.hits = 0
        self.arrivals: list[tuple[str, dict[str, Any]]] = []
        self.bad_signatures = 0
        self.raw_bodies: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.hits += 1
                if receiver.answers:
                    self.send_response(receiver.answers.pop(0))
                    self.end_headers()
                    return
                try:
                    payload = receiver.verifier.verify(body, dict(self.headers.items()))
                except WebhookVerificationError:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.arrivals.append((self.headers["webhook-id"], payload))
                receiver.raw_bodies.append(body.decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def first_arrivals(self) -> dict[str, list[str]]:
        """Per request, the event types in order of first arrival (duplicates dropped)."""
        seen: set[str] = set()
        order: dict[str, list[str]] = {}
        for message_id, payload in self.arrivals:
            if message_id in seen:
                continue
            seen.add(message_id)
            order.setdefault(payload["data"]["request_id"], []).append(payload["type"])
        return order
