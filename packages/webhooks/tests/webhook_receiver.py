"""A real aiohttp receiver on 127.0.0.1 (own loop, own thread) that records every webhook request.

Shared by the webhooks tests and the end-to-end training tests. It answers scripted statuses (then 200, or
``always`` for every request) and keeps JSON bodies, multipart parts and headers for assertions.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from email import policy
from email.parser import BytesParser
from typing import Any

from aiohttp import web


class Receiver:
    def __init__(self, statuses: list[int] | None = None, hold: bool = False, always: int | None = None) -> None:
        self.posts: list[dict[str, Any]] = []  # JSON bodies of accepted (2xx) requests
        self.requests: list[dict[str, Any]] = []  # every request: headers, content type, raw body, parts
        self.content_types: list[str] = []
        self.hits = 0
        self.statuses = deque(statuses or [])
        self.always = always
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port: int = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def _start(self) -> int:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return int(self._runner.addresses[0][1])

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        record: dict[str, Any] = {"headers": request.headers.copy(), "content_type": request.content_type,
                                  "raw": raw, "parts": {}}
        if request.content_type == "multipart/form-data":  # parsed by the stdlib's MIME parser, not ours
            head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
            message = BytesParser(policy=policy.HTTP).parsebytes(head + raw)
            for part in message.iter_parts():
                record["parts"][part.get_param("name", header="content-disposition")] = {
                    "filename": part.get_filename(), "data": part.get_payload(decode=True),
                    "content_type": part.get_content_type()}
            body: Any = json.loads(record["parts"]["payload_json"]["data"]) if "payload_json" in record["parts"] \
                else None
        else:
            body = json.loads(raw)
        record["json"] = body
        with self._cond:
            self.hits += 1
            self._cond.notify_all()
        while not self.release.is_set():
            await asyncio.sleep(0.005)
        with self._cond:
            status = self.statuses.popleft() if self.statuses else (self.always or 200)
            record["status"] = status
            self.requests.append(record)
            if status < 300:
                self.posts.append(body)
                self.content_types.append(request.content_type)
            self._cond.notify_all()
        return web.json_response({"ok": status < 300}, status=status)

    def wait_hits(self, n: int, timeout: float = 30.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.hits >= n, timeout)

    def wait_for_type(self, kind: str, timeout: float = 30.0) -> bool:
        """Until an accepted post of type ``kind`` arrived (deliveries are in order, so all before it did too)."""
        with self._cond:
            return self._cond.wait_for(lambda: any(p.get("event_type") == kind for p in self.posts), timeout)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
