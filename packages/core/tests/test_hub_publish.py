"""The hub publisher with huggingface_hub's real client, pointed (HF_ENDPOINT) at a loopback HTTP server.

The server implements the four Hub API calls a small upload makes (create repo, validate the card's YAML,
preupload, commit) and answers "regular" upload mode, so file contents travel inline in the commit; the LFS/Xet
transfer a real Hub asks for with large files is the one part not exercised here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

web = pytest.importorskip("aiohttp.web")


class FakeHubServer:
    """Records repos, commits (path -> bytes) and the Authorization headers it saw."""

    def __init__(self) -> None:
        self.repos: list[dict[str, Any]] = []
        self.commits: list[dict[str, Any]] = []
        self.auth: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/api/repos/create", self._create)
        app.router.add_post("/api/validate-yaml", self._yaml)
        app.router.add_post("/api/models/{ns}/{name}/preupload/{rev}", self._preupload)
        app.router.add_post("/api/models/{ns}/{name}/commit/{rev}", self._commit)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return int(self._runner.addresses[0][1])

    def _seen(self, request: Any) -> None:
        self.auth.add(request.headers.get("Authorization", ""))

    async def _create(self, request: Any) -> Any:
        self._seen(request)
        body = await request.json()
        self.repos.append(body)
        return web.json_response({"url": f"{self.url}/{body.get('organization')}/{body['name']}"})

    async def _yaml(self, request: Any) -> Any:
        self._seen(request)
        body = await request.json()
        ok = body["content"].startswith("---\n")
        return web.json_response({"errors": [] if ok else [{"message": "no metadata"}], "warnings": []},
                                 status=200 if ok else 400)

    async def _preupload(self, request: Any) -> Any:
        self._seen(request)
        files = (await request.json())["files"]
        return web.json_response({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                            for f in files]})

    async def _commit(self, request: Any) -> Any:
        self._seen(request)
        lines = [json.loads(line) for line in (await request.read()).splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                 for item in lines if item["key"] == "file"}
        repo = f"{request.match_info['ns']}/{request.match_info['name']}"
        self.commits.append({"repo": repo, "summary": header["summary"], "files": files})
        oid = f"{len(self.commits):040x}"
        return web.json_response({"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid,
                                  "pullRequestUrl": None})

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


PUBLISH = """
import json, sys
from pathlib import Path
from simpletuner_core.config import validate
from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.events.log import JsonlEventLog
from simpletuner_core.hooks.job import JobHooks
from simpletuner_core.plugins import get_registry
from simpletuner_core.training.checkpoint import save_checkpoint
from simpletuner_core.training.run_identity import checkpoint_manifest, config_hash

out = Path(sys.argv[1])
cfg = validate({"model_family": "pixart_sigma", "model_flavour": "tiny", "output_dir": str(out),
                "data_backend_config": "x.json", "max_train_steps": 6, "push_to_hub": True,
                "hub_model_id": "me/toy-model", "push_checkpoints_to_hub": True, "validation_prompt": "a red square", "tokenizer_max_length": 77,
                "webhook_config": [{"webhook_type": "raw", "callback_url": "http://x.test", "secret": "hush"},
                                   {"webhook_type": "discord",
                                    "callback_url": "https://discord.test/api/webhooks/1/discord-token"}],
                "post_checkpoint_script": "true --api-key=argv-key", "hook_script_timeout": 30})
log = JsonlEventLog(out.parent / "events.jsonl")
hooks = JobHooks(cfg, "job-9", EventEmitter("job-9", log), get_registry())
# The checkpoint as the engine writes it: its own manifest, through the real checkpoint writer.
manifest = checkpoint_manifest(cfg, epoch=0, step_in_epoch=3, seed=7, fingerprint="f" * 16, adapter=None,
                               job_id="job-9")
assert manifest["config_hash"] == config_hash(cfg)  # what a resume compares: the live config, unredacted
save_checkpoint(out, 3, lambda tmp: (tmp / "model.safetensors").write_bytes(b"ck-weights"), manifest)
hooks.checkpoint_saved(out / "checkpoint-3", 3, [1.0, 0.5, 0.4], [1e-3] * 3)
print(json.dumps(hooks.finished(out, 6, [1.0, 0.5, 0.4, 0.3, 0.2, 0.1], [1e-3] * 6)))
"""


def test_checkpoints_and_final_model_reach_the_hub_api(tmp_path: Path) -> None:
    out = tmp_path / "output"
    for rel, data in {"model_index.json": b"{}", "transformer/diffusion_pytorch_model.safetensors": b"final",
                      "validation/step-000006-0.png": b"png", "logs/toy/events": b"tb",
                      ".checkpoint-9.tmp/partial": b"x"}.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    hub = FakeHubServer()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_test_token", HF_HOME=str(tmp_path / "hf"))
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(PUBLISH), str(out)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        results = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        hub.stop()
    assert [(r["kind"], r["ok"], r["remote"]) for r in results] == [
        ("checkpoint", True, f"{hub.url}/me/toy-model/tree/main/checkpoint-3"),
        ("final", True, f"{hub.url}/me/toy-model")]
    assert hub.auth == {"Bearer hf_test_token"}
    assert {r["name"] for r in hub.repos} == {"toy-model"}
    assert {r.get("visibility") for r in hub.repos} == {"private"}, hub.repos  # hub_private defaults to true
    checkpoint, final = hub.commits
    assert sorted(checkpoint["files"]) == ["checkpoint-3/manifest.json", "checkpoint-3/model.safetensors"]
    assert checkpoint["files"]["checkpoint-3/model.safetensors"] == b"ck-weights"
    uploaded = checkpoint["files"]["checkpoint-3/manifest.json"].decode()
    for secret in ("hush", "discord-token", "x.test", "argv-key"):
        assert secret not in uploaded
    config = json.loads(uploaded)["config"]
    assert config["webhook_config"] == config["post_checkpoint_script"] == "<redacted>"
    assert config["hub_model_id"] == "me/toy-model" and config["tokenizer_max_length"] == 77
    assert "checkpoint at step 3 (job job-9)" == checkpoint["summary"]
    assert sorted(final["files"]) == ["README.md", "model_index.json", "training-plot.png",
                                      "transformer/diffusion_pytorch_model.safetensors",
                                      "validation/step-000006-0.png"]
    card = final["files"]["README.md"].decode()
    assert card.startswith("---\nlibrary_name: diffusers\n") and "![step-000006-0](validation/step-000006-0.png)" in card
    assert '"hub_model_id": "me/toy-model"' in card and '"webhook_config": "<redacted>"' in card
    assert "hush" not in card and "discord-token" not in card and "argv-key" not in card
    events = (tmp_path / "events.jsonl").read_text()
    assert "hf_test_token" not in events and events.count('"publish.completed"') == 2
