"""The agent's HTTP client, on the standard library: a few JSON calls a second at most, one long-lived SSE
stream and blob downloads need no extra dependency in core (urllib + a small SSE line reader)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

TOKEN_HEADER = "X-Worker-Token"


class HttpError(Exception):
    """The orchestrator answered with an error status; ``message`` is its JSON error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


@attrs.frozen
class Message:
    id: int
    type: str
    data: dict[str, Any]


class Orchestrator:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                 ) -> urllib.request.Request:
        return urllib.request.Request(self.url + path, data=body, method=method,
                                      headers={TOKEN_HEADER: self.token, **(headers or {})})

    def _open(self, request: urllib.request.Request, timeout: float | None = None) -> Any:
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text[:500]
            raise HttpError(exc.code, message) from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body, default=str).encode()
        request = self._request(method, path, data, {"Content-Type": "application/json"} if data else None)
        with self._open(request) as resp:
            text = resp.read()
        return json.loads(text) if text else {}

    def stream(self, path: str, last_id: int, read_timeout: float) -> Iterator[Message | None]:
        """SSE messages; None for each heartbeat comment, so the caller can check its flags between them."""
        request = self._request("GET", path, headers={"Accept": "text/event-stream",
                                                      "Last-Event-ID": str(last_id)})
        with self._open(request, timeout=read_timeout) as resp:
            fields: dict[str, str] = {}
            for raw in resp:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if "data" in fields:
                        yield Message(int(fields.get("id") or 0), fields.get("event", "message"),
                                      json.loads(fields["data"]))
                    fields = {}
                elif line.startswith(":"):
                    yield None
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value

    def download(self, path: str, dest: Path, sha256: str) -> int:
        """Fetch a blob into ``dest`` (atomically, verified against ``sha256``); returns its size."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as fh, self._open(self._request("GET", path)) as resp:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
            if digest.hexdigest() != sha256:
                raise HttpError(409, f"blob {sha256} arrived with another hash: it changed on the orchestrator")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size

    def upload(self, path: str, source: Path) -> dict[str, Any]:
        with open(source, "rb") as fh:
            request = self._request("POST", path, fh.read(), {"Content-Type": "application/octet-stream"})
        with self._open(request, timeout=max(self.timeout, 600)) as resp:
            return json.loads(resp.read())
