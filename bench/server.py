"""Server benchmarks: cold start, RSS at ready, status latency under 8 concurrent clients, start → first step.

Runs a real ``simpletuner server`` subprocess on a loopback port with a fresh state directory; the clients are
aiohttp in this process, so on a small machine they share the CPU with the server (the numbers are a floor for
the server). Print-only; record results in docs/benchmarks.md.

    python bench/server.py                 # everything (about a minute on 2 cores)
    python bench/server.py --skip-train    # without the training start measurement
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from simpletuner_core.demo_data import write_demo_dataset
from simpletuner_server.demo_command import free_port, stop_server

ADMIN = {"email": "admin@example.com", "username": "admin", "password": "benchmark password"}


def launch(home: Path) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start the server; return (process, port, seconds from Popen to the first 200 of /health)."""
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "simpletuner_core.cli", "server", "--home", str(home),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "SIMPLETUNER_PROGRESS": "0"})
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc, port, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}") from None
            time.sleep(0.002)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def admin_key(base: str) -> str:
    async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.post("/api/cloud/auth/setup/first-admin", json=ADMIN) as resp:
            assert resp.status == 201, await resp.text()
        async with s.post("/api/cloud/auth/api-keys", json={"name": "bench"}) as resp:
            return (await resp.json())["key"]


async def load(base: str, key: str, clients: int, seconds: float) -> tuple[list[float], float]:
    """``clients`` keep-alive clients each issuing authenticated GET /api/training/status back to back."""
    latencies: list[float] = []
    headers = {"X-API-Key": key}

    async def client(session: aiohttp.ClientSession, stop_at: float) -> None:
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            async with session.get("/api/training/status", headers=headers) as resp:
                await resp.read()
                assert resp.status == 200
            latencies.append(time.perf_counter() - t)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base_url=base, connector=connector) as session:
        for _ in range(50):  # warm-up: connections open, caches filled
            async with session.get("/api/training/status", headers=headers) as resp:
                await resp.read()
        start = time.perf_counter()
        await asyncio.gather(*(client(session, start + seconds) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return latencies, len(latencies) / elapsed


async def start_to_first_step(base: str, key: str, env: str) -> float:
    """POST /api/training/start (tiny PixArt, demo images) → first ``training.status`` event seen. The first
    call for ``env`` creates it (cold caches); later calls reuse its latent and text-embed caches."""
    headers = {"X-API-Key": key}
    async with aiohttp.ClientSession(base_url=base, headers=headers) as s:
        async with s.post("/api/configs/environments", json={"name": env, "example": "tiny-pixart"}) as resp:
            assert resp.status in (201, 409), await resp.text()
        async with s.put(f"/api/configs/{env}?mode=merge", json={"config": {"--max_train_steps": 5,
                                                                            "--validation_step_interval": 0}}) as resp:
            assert resp.status == 200, await resp.text()
        async with s.post(f"/api/configs/{env}/activate") as resp:
            assert resp.status == 200
        t0 = time.perf_counter()
        async with s.post("/api/training/start") as resp:
            body = await resp.json()
            assert resp.status in (200, 202), body
        job = body["job_id"]
        since = 0
        while True:
            async with s.get(f"/api/training/events?job_id={job}&since_index={since}") as resp:
                page = await resp.json()
            if any(e["type"] == "training.progress" for e in page["events"]):
                elapsed = time.perf_counter() - t0
                break
            if any(e["type"] == "training.status" and e["status"] in ("error", "cancelled") for e in page["events"]):
                raise SystemExit(f"job failed: {page['events'][-1]}")
            since = page["next_index"]
            await asyncio.sleep(0.01)
        while True:  # let it finish so the next measurement has the CPU to itself
            async with s.get("/api/training/status") as resp:
                if (await resp.json())["state"] in ("completed", "failed", "stopped", "cancelled"):
                    return elapsed
            await asyncio.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=5, help="cold starts to time (median reported)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the latency run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="st-bench-server-"))
    try:
        starts, rss = [], []
        for i in range(args.starts):
            proc, _, took = launch(root / f"cold-{i}")
            starts.append(took)
            time.sleep(0.3)
            rss.append(rss_mb(proc.pid))
            stop_server(proc)
        print(f"cold start → first 200 of /health: median {statistics.median(starts):.3f} s "
              f"(min {min(starts):.3f}, max {max(starts):.3f}, n={len(starts)})   target ≤ 1 s")
        print(f"RSS when ready: median {statistics.median(rss):.1f} MB   target ≤ 100 MB")

        home = root / "main"
        proc, port, _ = launch(home)
        base = f"http://127.0.0.1:{port}"
        try:
            key = asyncio.run(admin_key(base))
            latencies, rps = asyncio.run(load(base, key, args.clients, args.seconds))
            ms = sorted(x * 1000 for x in latencies)
            p50, p95 = ms[len(ms) // 2], ms[int(len(ms) * 0.95)]
            print(f"GET /api/training/status, {args.clients} clients, {args.seconds:.0f} s: p50 {p50:.2f} ms, "
                  f"p95 {p95:.2f} ms, {rps:.0f} rps (n={len(ms)}); RSS after {rss_mb(proc.pid):.1f} MB   "
                  f"target p50 ≤ 5 ms, ≥ 1500 rps")
            if not args.skip_train:
                write_demo_dataset(home / "datasets" / "pixart-demo", count=16, size=64)
                results: dict[str, Any] = {}
                for label in ("cold caches", "warm caches"):
                    results[label] = asyncio.run(start_to_first_step(base, key, "bench"))
                print("POST /api/training/start → first training.status: "
                      + ", ".join(f"{k} {v:.2f} s" for k, v in results.items()) + "   target ≤ 6.5 s")
        finally:
            stop_server(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
