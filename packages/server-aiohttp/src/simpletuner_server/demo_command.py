"""``simpletuner api-demo``: the README's main job. Starts ``simpletuner server`` on a free loopback port,
runs the tutorial's walkthrough against it (admin, API key, uploads, environment, validate, start, follow),
prints where the weights are, and stops the server gracefully. Light at import: the plugin loads it eagerly."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", default="demo-home", help="state directory for the demo (default %(default)s)")
    parser.add_argument("--steps", type=int, default=150, help="training steps (default %(default)s)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``simpletuner server`` as a child process; returns once ``/health`` answers."""
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "simpletuner_core.cli", "server", "--port", str(port),
                                 "--home", str(home)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "SIMPLETUNER_PROGRESS": "0"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server did not answer within 60 s; see {log_path}")


def stop_server(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)  # graceful: streams closed, trainers (none left) untouched
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


async def _walk(base: str, home: Path, steps: int) -> dict[str, object]:
    from simpletuner_server.walkthrough import Api, pixart_example, session, setup_admin

    async with session(base) as http:
        api = Api(http, print)
        await setup_admin(api)
        print("admin and API key ready")
        result = await pixart_example(api, str(home.resolve()), steps=steps)
        result["calls"] = len(api.calls)
        return result


def run(args: argparse.Namespace) -> int:
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(home / "output" / "pixart-api-demo", ignore_errors=True)  # re-runs train from scratch
    port = free_port()
    proc = start_server(home, port, home / "server.log")
    base = f"http://127.0.0.1:{port}"
    print(f"server up at {base} (state in {home}; log {home / 'server.log'})", flush=True)
    try:
        result = asyncio.run(_walk(base, home, args.steps))
    finally:
        code = stop_server(proc)
        print(f"server stopped (exit {code})", flush=True)
    status = result["status"]
    state = status["state"] if isinstance(status, dict) else status
    print(f"{result['calls']} API calls answered as the tutorial says; job {result['job_id']} {state}")
    losses = status.get("losses", []) if isinstance(status, dict) else []
    if len(losses) >= 8:
        window = max(1, min(20, len(losses) // 4))
        first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
        print(f"loss: mean of first {window} steps {first:.4f} -> mean of last {window} steps {last:.4f}")
    print(f"checkpoints: {len(result['checkpoints'])}")  # type: ignore[arg-type]
    print(f"trained weights (diffusers layout): {result['output_dir']}")
    return 0 if state == "completed" else 1
