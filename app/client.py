"""A small HTTP client for the forgetd API (the `forgetd requests` commands and the demo)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

TERMINAL = frozenset({"completed", "failed", "rejected", "cancelled", "denied"})


class ApiError(RuntimeError):
    """A 4xx/5xx answer: the problem+json detail, or the transport failure."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ForgetdClient:
    def __init__(self, url: str, key: str | None, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> ForgetdClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach {self.http.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(f"{response.status_code}: {detail}", response.status_code)
        return response

    def submit(
        self,
        model: str,
        *,
        files: list[str] | None = None,
        classes: list[str] | None = None,
        method: str | None = None,
        external_id: str | None = None,
        deadline_days: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": int(model) if model.isdigit() else model}
        if files:
            body["filenames"] = files
        if classes:
            body["class_names"] = classes
        for name, value in (
            ("method", method),
            ("external_id", external_id),
            ("deadline_days", deadline_days),
        ):
            if value is not None:
                body[name] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self.call("POST", "/v1/deletion-requests", json=body, headers=headers).json())

    def get(self, request_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/deletion-requests/{request_id}").json())

    def events(self, request_id: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/v1/deletion-requests/{request_id}/events").json()["events"])

    def list(self, **params: Any) -> dict[str, Any]:
        query = {k: v for k, v in params.items() if v is not None}
        return dict(self.call("GET", "/v1/deletion-requests", params=query).json())

    def report(self, request_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/deletion-requests/{request_id}/report").json())

    def report_html(self, request_id: str) -> str:
        path = f"/v1/deletion-requests/{request_id}/report"
        return self.call("GET", path, headers={"Accept": "text/html"}).text

    def watch(
        self,
        request_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        *,
        interval_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the request ends (completed, failed, ...); returns its last state."""
        began = time.monotonic()
        while True:
            body = self.get(request_id)
            if on_update is not None:
                on_update(body)
            if body["status"] in TERMINAL:
                return body
            if timeout_s is not None and time.monotonic() - began > timeout_s:
                raise ApiError(
                    f"request {request_id} is still {body['status']} after {timeout_s} s"
                )
            time.sleep(interval_s)
