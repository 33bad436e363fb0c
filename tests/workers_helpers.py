"""A real ``simpletuner server`` and real ``simpletuner worker`` processes on loopback, for the e2e tests and
``bench/workers.py``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from jobs_helpers import wait_for

from simpletuner_core.jobs.store import SQLiteStore

FAST = {"worker_heartbeat_interval_s": 1.0, "worker_offline_after_s": 15.0}


def preset(home: Path, **settings: Any) -> None:
    """Store settings before the server starts (the timeouts the tests shorten)."""
    store = SQLiteStore(home / "state.db")
    for key, value in {**FAST, **settings}.items():
        store.set_setting(key, value)
    store.close()


def admin_key(base: str) -> str:
    from simpletuner_server.walkthrough import Api, session, setup_admin

    async def main() -> str:
        async with session(base) as http:
            return await setup_admin(Api(http, lambda line: None))

    return asyncio.run(main())


class Client:
    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base, self.headers = base, headers

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={**self.headers, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                text = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as exc:
            text, status = exc.read().decode(), exc.code
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def ok(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        status, answer = self.call(method, path, body)
        assert status in expect, (method, path, status, answer)
        return answer


def start_worker(base: str, token: str, home: Path, name: str, *extra: str,
                 persistent: bool = True) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home.parent / f"{name}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "simpletuner_core.cli", "worker", "--orchestrator-url", base, "--worker-token",
             token, "--name", name, "--home", str(home), *(["--persistent"] if persistent else []), *extra],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SIMPLETUNER_PROGRESS": "0"})


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(check: Any, timeout: float = 120.0, every: float = 0.2) -> Any:
    return wait_for(check, timeout=timeout, every=every)


def job_state(api: Client, job_id: str) -> dict[str, Any]:
    return api.ok("GET", f"/api/training/status?job_id={job_id}")


def events(api: Client, job_id: str) -> list[dict[str, Any]]:
    return api.ok("GET", f"/api/training/events?job_id={job_id}&limit=10000")["events"]


def finished(api: Client, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
    return wait_until(lambda: (s := job_state(api, job_id))["state"] in
                      ("completed", "failed", "stopped", "cancelled") and s, timeout)
