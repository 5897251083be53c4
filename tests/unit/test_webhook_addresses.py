"""Where a webhook delivery connects: a host name on FORGETD_WEBHOOK_ALLOWED_HOSTS is resolved
at every send, and an answer with a loopback, private or link-local address is refused (DNS
rebinding) unless FORGETD_WEBHOOK_ALLOW_PRIVATE_ADDRESSES is set. An IP literal on the list is
allowed as named. Uses a real HTTP receiver on 127.0.0.1 and the resolver of this machine
("localhost" resolves to loopback)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from app.services.errors import InvalidInput
from app.settings import get_settings


class _Receiver(BaseHTTPRequestHandler):
    hits: list[str] = []  # noqa: RUF012

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _Receiver.hits.append(self.headers.get("host", ""))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.hits.clear()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _settings(monkeypatch: pytest.MonkeyPatch, hosts: str, allow_private: bool = False) -> None:
    monkeypatch.setenv("FORGETD_WEBHOOK_ALLOWED_HOSTS", hosts)
    monkeypatch.setenv("FORGETD_WEBHOOK_ALLOW_PRIVATE_ADDRESSES", str(allow_private).lower())
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    yield
    get_settings.cache_clear()


def test_a_host_name_that_resolves_to_loopback_is_refused_at_delivery(
    monkeypatch: pytest.MonkeyPatch, receiver: int
) -> None:
    from worker.webhooks import post

    _settings(monkeypatch, "localhost")
    outcome = post(f"http://localhost:{receiver}/hook", "whsec_" + "A" * 44, "msg_1", {"a": 1})
    assert not outcome.ok
    assert "non-public" in (outcome.error or "") and "localhost" in (outcome.error or "")
    assert _Receiver.hits == []


def test_the_setting_or_an_ip_literal_allows_a_local_receiver(
    monkeypatch: pytest.MonkeyPatch, receiver: int
) -> None:
    from worker.webhooks import post

    secret = "whsec_" + "A" * 44
    _settings(monkeypatch, "localhost", allow_private=True)
    assert post(f"http://localhost:{receiver}/hook", secret, "msg_1", {"a": 1}).ok
    # Sent to the address that was checked, with the name the URL gave as its Host.
    assert _Receiver.hits == [f"localhost:{receiver}"]
    _settings(monkeypatch, "127.0.0.1")
    assert post(f"http://127.0.0.1:{receiver}/hook", secret, "msg_2", {"a": 1}).ok


@pytest.mark.parametrize(
    ("resolved", "refused"),
    [
        (["127.0.0.1"], True),
        (["10.1.2.3"], True),
        (["169.254.169.254"], True),
        (["::1"], True),
        (["::ffff:127.0.0.1"], True),
        (["93.184.215.14", "192.168.1.1"], True),  # one bad answer is enough
        (["93.184.215.14"], False),
    ],
)
def test_every_resolved_address_must_be_public(
    monkeypatch: pytest.MonkeyPatch, resolved: list[str], refused: bool
) -> None:
    import socket

    def fake(host: str, port: int, *_: object, **__: object) -> list[tuple]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in resolved]

    from app.services.webhooks import delivery_address

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    url = "https://hooks.example.com/in"
    if refused:
        with pytest.raises(InvalidInput, match="non-public"):
            delivery_address(url, ["hooks.example.com"], allow_private=False)
        assert delivery_address(url, ["hooks.example.com"], allow_private=True)
    else:
        assert delivery_address(url, ["hooks.example.com"], allow_private=False) == resolved[0]
