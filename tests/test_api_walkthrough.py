"""The tutorial end to end over HTTP: a real ``simpletuner server`` process on a loopback port, the walkthrough
client making the tutorial's calls (each answer checked), a real trainer process, then ``--env`` autostart and a
server restart that re-attaches to a trainer it did not start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.plugins import get_registry

pytest.importorskip("simpletuner_server")
from simpletuner_server.demo_command import free_port, start_server, stop_server
from simpletuner_server.walkthrough import Api, kontext_example, pixart_example, session, setup_admin

needs_pixart = pytest.mark.skipif("pixart_sigma" not in get_registry().families, reason="needs the pixart plugin")


def _get(base: str, path: str, key: str) -> Any:
    request = urllib.request.Request(base + path, headers={"X-API-Key": key})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


async def _walk(base: str, home: Path, steps: int) -> tuple[str, dict[str, Any], list[tuple[str, str, int]]]:
    async with session(base) as http:
        api = Api(http, lambda line: None)
        key = await setup_admin(api)
        result = await pixart_example(api, str(home), steps=steps)
        async with http.get(f"/api/training/events/stream?job_id={result['job_id']}", headers=api.headers) as sse:
            text = await sse.text()  # the job is over: the stream replays and ends
        assert sse.status == 200 and "event: training.status" in text and "id: " in text
        return key, result, api.calls


@pytest.mark.slow
@needs_pixart
def test_tutorial_pixart_walkthrough_then_env_autostart_and_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(home, port, tmp_path / "server.log")
    try:
        key, result, calls = asyncio.run(_walk(base, home, steps=24))
    finally:
        assert stop_server(server) == 0, (tmp_path / "server.log").read_text()[-3000:]

    status = result["status"]
    assert status["state"] == "completed", status
    losses = status["losses"]
    assert len(losses) == 24 and sum(losses[-6:]) < sum(losses[:6]), losses
    assert {path for _, path, _ in calls} >= {"/api/configs/environments", "/api/training/validate",
                                             "/api/training/start", "/api/datasets/upload/zip"}
    output = Path(result["output_dir"])
    assert (output / "model_index.json").exists() and (output / "transformer").is_dir()
    assert [c["step"] for c in result["checkpoints"]] == [20]

    from diffusers import PixArtSigmaPipeline

    pipe = PixArtSigmaPipeline.from_pretrained(str(output))  # the weights the API trained load as diffusers
    assert sum(p.numel() for p in pipe.transformer.parameters()) > 0

    # --env: a broken name stops the server with a message; a good one starts a job once the server is ready
    bad = subprocess.run([sys.executable, "-m", "simpletuner_core.cli", "server", "--home", str(home), "--port",
                          str(free_port()), "--env", "no-such-env"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown environment 'no-such-env'" in bad.stderr, bad.stderr

    env = {**os.environ, "SIMPLETUNER_PROGRESS": "0"}
    log_path = tmp_path / "autostart.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "simpletuner_core.cli", "server", "--home", str(home),
                                   "--port", str(port), "--env", "pixart-api-demo"], stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        job = None
        while time.monotonic() < deadline and job is None:
            text = log_path.read_text()
            job = next((line.split()[3] for line in text.splitlines() if line.startswith("environment ")), None)
            time.sleep(0.1)
        assert job and job != result["job_id"], log_path.read_text()
        # stop the server while the trainer runs: the trainer is left alone...
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
    # ...and a new server re-attaches to it (reconcile keeps it: the process is alive) and sees it finish
    server = start_server(home, port, tmp_path / "server2.log")
    try:
        deadline = time.monotonic() + 300
        while True:
            state = _get(base, "/api/training/status", key)
            assert state["job_id"] == job and state["state"] != "failed", state
            if state["state"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert state["state"] == "completed", state
        events = _get(base, f"/api/training/events?job_id={job}&limit=10000", key)["events"]
        assert state["status"] == "completed" and state["progress"]["step"] == state["progress"]["total_steps"]
        resumed = [e["stage"]["status"] for e in events
                   if e["type"] == "lifecycle.stage" and e["stage"]["key"] == "init_resume_checkpoint"]
        assert resumed == ["running", "completed"], [e["type"] for e in events]  # latest picked checkpoint-20
    finally:
        stop_server(server)


async def _walk_kontext(base: str, home: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    async with session(base) as http:
        api = Api(http, lambda line: None)
        await setup_admin(api)
        examples = await api.call("GET", "/api/configs/examples")
        result = await kontext_example(api, str(home), steps=12)
        return examples, result


@pytest.mark.slow
@pytest.mark.skipif("flux" not in get_registry().families, reason="needs the flux plugin")
def test_tutorial_kontext_walkthrough(tmp_path: Path) -> None:
    """The tutorial's second worked example (Flux Kontext, LyCORIS, int8-quanto, optimi-lion, clip_skip 2,
    the three-dataset paired dataloader) over HTTP on tiny-kontext, with a real trainer process."""
    home = tmp_path / "home"
    port = free_port()
    server = start_server(home, port, tmp_path / "server.log")
    try:
        examples, result = asyncio.run(_walk_kontext(f"http://127.0.0.1:{port}", home))
    finally:
        assert stop_server(server) == 0, (tmp_path / "server.log").read_text()[-3000:]
    assert {"tiny-pixart", "tiny-kontext"} <= {e["name"] for e in examples["examples"]}
    status = result["status"]
    assert status["state"] == "completed", status
    assert len(status["losses"]) == 12
    output = Path(result["output_dir"])
    weights = sorted(p.name for p in output.rglob("*.safetensors"))
    assert weights, sorted(p.name for p in output.rglob("*"))
    config = json.loads((home / "config" / "kontext-api-demo" / "config.json").read_text())
    for key, value in (("--optimizer", "optimi-lion"), ("--base_model_precision", "int8-quanto"),
                       ("--lora_type", "lycoris"), ("--clip_skip", 2), ("--lora_rank", 16),
                       ("--report_to", "wandb")):  # as the tutorial writes it: no wandb here, the run goes on
        assert config[key] == value, key
