"""Dashboard benchmark: the job page of a job with 10,000 events in its log, in headless Chromium.

A real ``simpletuner server`` subprocess serves a state directory holding one finished job whose log has
10,000 events (training.status for every step, stages, checkpoints, eval metrics, validation images). Each
round opens the job page in a fresh browser context (empty cache) and reads, from the page itself, the time
from navigation start to the first complete render (chart drawn, events tail, validation grid and checkpoints
listed: ``body[data-ready]``) and the bytes transferred (Resource Timing ``transferSize`` of the document and
every sub-resource). Side by side, the same browser fetches the whole log through ``/api/training/events``
(what a page that replays the log would need before drawing). Print-only; record results in
docs/benchmarks.md.

    python bench/ui.py [--events 10000] [--rounds 5]

Needs Debian's chromium (or SIMPLETUNER_CHROMIUM) and the playwright package (no Playwright browser download).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from PIL import Image

from simpletuner_core.events import Event
from simpletuner_core.jobs import models as m
from simpletuner_core.jobs.store import SQLiteStore
from simpletuner_server.demo_command import free_port, start_server, stop_server

ADMIN = {"email": "bench@example.com", "username": "bench", "password": "bench password 1"}
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def seed_job(home: Path, events: int) -> str:
    """A completed job with ``events`` events, as a long run leaves it (written straight into the store)."""
    store = SQLiteStore(home / "state.db")
    out = home / "output" / "bench"
    job = store.create_job(m.Job(id=m.new_job_id(), config={"--output_dir": str(out)}, state=m.COMPLETED,
                                 env="bench", user=ADMIN["username"], output_dir=str(out), created_at=time.time(),
                                 started_at=time.time() - 3600, finished_at=time.time()))
    extra = 0
    steps = events
    with store.transaction():
        for stage in ("init_data_backend", "init_load_base_model", "init_vae_cache", "init_prepare_models"):
            for status in ("running", "completed"):
                store.append_event(Event("job.stage", job.id, {"stage": stage, "status": status, "label": stage}))
                extra += 1
        for prompt in ("validation", "unconditional"):
            for step in (0, 2000, 4000, 6000, 8000):
                path = out / "validation" / f"step-{step}-{prompt}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 64), (step % 255, 90, 160)).save(path)
                store.append_event(Event("validation.image", job.id, {
                    "title": f"Validation (step {step})", "body": prompt, "step": step, "global_step": step,
                    "prompt": prompt, "prompt_name": prompt, "validation_type": "final", "path": str(path),
                    "resolution": [64, 64], "images": [{"src": "data:image/png;base64," + "A" * 4000}]}))
                extra += 1
        for step in range(1000, 10001, 1000):
            ckpt = out / f"checkpoint-{step}"
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / "weights.bin").write_bytes(b"\0" * 4096)
            store.append_event(Event("checkpoint.saved", job.id, {"step": step, "path": str(ckpt)}))
            store.append_event(Event("training.metric", job.id, {"step": step, "metrics": {"eval_loss": 0.3}}))
            extra += 2
        steps = events - extra - 1
        for step in range(1, steps + 1):
            store.append_event(Event("training.status", job.id, {
                "step": step, "total": steps, "epoch": step // 100, "percent": 100 * step / steps,
                "loss": 0.2 + math.exp(-step / 2000) + 0.05 * math.sin(step), "lr": 1e-4, "rate": 5.0,
                "eta_seconds": (steps - step) / 5}))
        store.append_event(Event("job.completed", job.id, {"step": steps, "output_dir": str(out)}))
    total = store.last_event_id(job.id)
    store.close()
    print(f"seeded job {job.id}: {total} events")
    return job.id


def post(base: str, path: str, body: dict) -> None:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()


TRANSFER = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  return {bytes: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0), requests: 1 + res.length};
}"""
REPLAY = """async (jobId) => {
  const t0 = performance.now();
  let since = 0, bytes = 0, count = 0;
  for (;;) {
    const resp = await fetch(`/api/training/events?job_id=${jobId}&since_index=${since}&limit=1000`);
    const text = await resp.text();
    bytes += text.length;
    const body = JSON.parse(text);
    count += body.events.length;
    if (!body.events.length) break;
    since = body.next_index;
  }
  return {ms: performance.now() - t0, bytes, count};
}"""


def open_job(browser: Any, base: str, job_id: str) -> Any:
    """The job page, signed in, in a new browser context, once its first render is done."""
    context = browser.new_context(base_url=base)
    context.request.post("/api/cloud/auth/login", data={"username": ADMIN["username"],
                                                         "password": ADMIN["password"]})
    page = context.new_page()
    page.goto(f"/jobs/{job_id}")
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("needs chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(home, port, home / "server.log")
    try:
        post(base, "/api/cloud/auth/setup/first-admin", ADMIN)
        warmup_id = seed_job(home, 200)
        job_id = seed_job(home, args.events)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=FLAGS)
            renders, transfers, replays = [], [], []
            open_job(browser, base, warmup_id).context.close()  # the browser's own start-up, not the server's
            for _ in range(args.rounds):
                page = open_job(browser, base, job_id)  # a fresh context each time: an empty cache
                renders.append(int(page.locator("body").get_attribute("data-ready-ms") or 0))
                transfers.append(page.evaluate(TRANSFER))
                replays.append(page.evaluate(REPLAY, job_id))
                page.context.close()
            browser.close()
    finally:
        stop_server(server)
        shutil.rmtree(home, ignore_errors=True)
    render = statistics.median(renders)
    transfer = statistics.median(t["bytes"] for t in transfers)
    replay_ms = statistics.median(r["ms"] for r in replays)
    replay_bytes = statistics.median(r["bytes"] for r in replays)
    print(f"job page, {args.events} events, {args.rounds} cold rounds (median):")
    print(f"  first render (navigation start -> chart, tail, grid, checkpoints): {render:.0f} ms "
          f"(all: {renders}); target <= 300 ms")
    print(f"  the first round, with the server's per-job caches cold: {renders[0]} ms")
    print(f"  transferred: {transfer / 1024:.1f} KB in {transfers[0]['requests']} requests; target <= 300 KB")
    print(f"  side by side, replaying the whole log through /api/training/events: {replay_ms:.0f} ms, "
          f"{replay_bytes / 1024:.0f} KB ({replays[0]['count']} events) -> the page is "
          f"{replay_ms / render:.1f}x faster and {replay_bytes / transfer:.1f}x smaller")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
