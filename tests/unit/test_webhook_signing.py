"""Webhook URLs, secrets and signatures (pure: no database, no network)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError

from app.services.errors import InvalidInput
from app.services.webhooks import check_secret, check_url
from worker.webhooks import signed_headers

ALLOWED = ["hooks.example.com", "127.0.0.1:9000"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://hooks.example.com/x", "http"),
        ("file:///etc/passwd", "http"),
        ("hooks.example.com/x", "http"),
        ("http://user:pw@hooks.example.com/", "credentials"),
        ("http://10.0.0.1/", "FORGETD_WEBHOOK_ALLOWED_HOSTS"),
        ("http://169.254.169.254/latest", "FORGETD_WEBHOOK_ALLOWED_HOSTS"),
        ("http://127.0.0.1:9001/", "FORGETD_WEBHOOK_ALLOWED_HOSTS"),
        ("http://hooks.example.com:99999/", "not a valid URL"),
    ],
)
def test_urls_outside_the_allowed_hosts_are_refused(url: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says) as refused:
        check_url(url, ALLOWED)
    assert refused.value.extra["field"] == "url"


def test_allowed_urls_pass_and_an_empty_list_allows_none() -> None:
    assert check_url("https://HOOKS.example.com/in", ALLOWED)
    assert check_url("http://127.0.0.1:9000/hook", ALLOWED)
    with pytest.raises(InvalidInput, match="empty: no webhook host"):
        check_url("https://hooks.example.com/in", [])


def test_secrets_are_generated_or_checked() -> None:
    generated = check_secret(None)
    assert generated.startswith("whsec_")
    assert len(base64.b64decode(generated.removeprefix("whsec_"))) == 32
    assert check_secret(generated) == generated
    raw = base64.b64encode(b"x" * 24).decode()
    assert check_secret(raw) == "whsec_" + raw
    for bad in ("whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(InvalidInput):
            check_secret(bad)


def test_signatures_follow_standard_webhooks() -> None:
    secret = check_secret(None)
    body = '{"type":"deletion_request.completed"}'
    headers = signed_headers(secret, "msg_1", body, datetime.now(UTC))
    assert headers["webhook-signature"].startswith("v1,")
    assert Verifier(secret).verify(body, headers) == {"type": "deletion_request.completed"}
    with pytest.raises(WebhookVerificationError):
        Verifier(check_secret(None)).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(body.replace("completed", "failed"), headers)
