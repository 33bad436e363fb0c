"""``/api/training`` over real sockets: validation (JSON, forms, HTML), errors, and one real trainer run.

The client is aiohttp's TestClient logged in as the first admin (its jar keeps the session cookie).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from simpletuner_core.config.environments import create_environment, save_environment
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import call, needs_pixart, serve_as_admin

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from conftest import tiny_config, write_dataloader  # the monorepo root conftest

PIXART = {"--model_family": "pixart_sigma", "--model_flavour": "900M-1024-v0.6", "--model_type": "full",
          "--output_dir": "/tmp/out", "--train_batch_size": 2, "--max_train_steps": 1800,
          "--num_train_epochs": 0, "--data_backend_config": "env/multidatabackend.json"}
FINAL = ("completed", "stopped", "cancelled", "failed")
IDLE_STATUS = {"status": "idle", "config": {}, "job_id": None, "job_info": None, "progress": None,
               "startup_progress": {}}
SIMPLETUNER_STATUS = tuple(IDLE_STATUS)
PROGRESS = {"percent", "step", "total_steps", "epoch", "total_epochs", "loss", "learning_rate", "metrics"}
STARTUP = {"label", "progress_type", "status", "percent", "current", "total"}


def form(fields: dict[str, Any]) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for key, value in fields.items():
        data.add_field(key, str(value))
    return data


#: The tutorial's Kontext step 3 as written (full size, ``report_to=wandb``), merged over the step-1 environment.
TUTORIAL_KONTEXT_STEP3 = {
    "--output_dir": "/workspace/output/kontext", "--train_batch_size": 1, "--gradient_accumulation_steps": 4,
    "--learning_rate": 0.00001, "--optimizer": "optimi-lion", "--lr_scheduler": "cosine", "--lr_warmup_steps": 200,
    "--max_train_steps": 12000, "--num_train_epochs": 0,
    "--validation_prompt": "a cinematic 1024px product photo of <token>", "--validation_guidance": 2.5,
    "--validation_resolution": "1024x1024", "--validation_num_inference_steps": 30,
    "--cache_dir_vae": "/data/cache/vae/kontext", "--seed": 777, "--resume_from_checkpoint": "latest",
    "--base_model_precision": "int8-quanto", "--dataloader_prefetch": True, "--report_to": "wandb",
    "--lora_rank": 16, "--lora_dropout": 0.05, "--conditioning_multidataset_sampling": "combined",
    "--clip_skip": 2, "--data_backend_config": "kontext-api-demo/multidatabackend.json",
}


@pytest.mark.skipif("flux" not in get_registry().families, reason="needs the flux plugin")
def test_tutorial_kontext_config_validates_on_the_default_install(tmp_path: Path) -> None:
    """Steps 1, 3 and 4 of the tutorial's Kontext example as written: valid without wandb installed, with one
    warning that the run will go on without that tracker."""
    async def scenario(client: TestClient) -> None:
        status, body, _ = await call(client, "POST", "/api/configs/environments", json={
            "name": "kontext-api-demo", "model_family": "flux", "model_flavour": "kontext", "model_type": "lora",
            "lora_type": "lycoris", "description": "Flux Kontext LoRA via API"})
        assert status == 201, body
        update = {"name": "kontext-api-demo", "description": "Flux Kontext LyCORIS (API)",
                  "tags": ["flux", "kontext", "api"], "config": {**body["config"], **TUTORIAL_KONTEXT_STEP3}}
        status, body, _ = await call(client, "PUT", "/api/configs/kontext-api-demo", json=update)
        assert status == 200, body
        await call(client, "POST", "/api/configs/kontext-api-demo/activate")
        status, body, _ = await call(client, "POST", "/api/training/validate",
                                     data=form({"__active_tab__": "model", "--num_train_epochs": 0}))
        assert (status, body["valid"], body["message"]) == (200, True, "Configuration Valid"), body
        plan = body["memory_plan"]  # computed in the server process, without torch
        assert (plan["family"], plan["flavour"], plan["batch"]) == ("flux", "kontext", 1), plan
        assert plan["largest"] == max(plan["breakdown_bytes"], key=plan["breakdown_bytes"].get)
        assert plan["total_bytes"] == sum(plan["breakdown_bytes"].values()) > 15 * 2**30
        if importlib.util.find_spec("wandb") is None:
            assert any("pip install wandb" in w and "continue without" in w for w in body["warnings"]), body

    serve_as_admin(tmp_path / "home", scenario)


@needs_pixart
def test_validate_json_form_and_html(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        status, body, _ = await call(client, "POST", "/api/training/validate", json=PIXART)
        assert status == 200, body
        assert body["valid"] is True and body["errors"] == [] and body["message"] == "Configuration Valid"
        assert isinstance(body["warnings"], list)

        # The tutorial's multipart form: string values, UI bookkeeping keys ignored.
        status, body, _ = await call(client, "POST", "/api/training/validate",
                                     data=form({"__active_tab__": "model", **PIXART}))
        assert status == 200, body
        assert body["valid"] is True and body["message"] == "Configuration Valid"
        status, body, _ = await call(client, "POST", "/api/training/validate",
                                     data={"__active_tab__": "model", **{k: str(v) for k, v in PIXART.items()}})
        assert status == 200 and body["valid"] is True  # urlencoded too

        status, body, _ = await call(client, "POST", "/api/training/validate",
                                     data=form({**PIXART, "--learning_rat": "0.001"}))
        assert status == 422, body
        assert body["valid"] is False and body["message"] == "Configuration has 1 error(s)"
        assert body["errors"] == [{"path": "learning_rat", "message": "unknown config key",
                                   "did_you_mean": "learning_rate"}]

        # HTML only when asked for, with every value escaped.
        status, text, resp = await call(client, "POST", "/api/training/validate", data=form(PIXART),
                                        headers={"Accept": "text/html"})
        assert status == 200 and resp.content_type == "text/html" and "Configuration Valid" in text
        status, text, resp = await call(client, "POST", "/api/training/validate",
                                        data=form({**PIXART, "--<script>alert(1)</script>": "x"}),
                                        headers={"HX-Request": "true"})
        assert status == 422 and resp.content_type == "text/html"
        assert "<script>" not in text and "&lt;script&gt;" in text and "Configuration has 1 error(s)" in text

        # Merged over the active environment: its keys count, the submitted ones win.
        create_environment("env", model_family="pixart_sigma", home=tmp_path)
        save_environment("env", {**PIXART, "--learning_rate": 0.5}, home=tmp_path)
        assert (await call(client, "POST", "/api/configs/env/activate"))[0] == 200
        status, body, _ = await call(client, "POST", "/api/training/validate", data=form({"__x__": "1"}))
        assert status == 200 and body["valid"] is True
        status, body, _ = await call(client, "POST", "/api/training/validate",
                                     json={"--num_train_epochs": 3})
        assert status == 422 and any("max_train_steps" in e["message"] or "num_train_epochs" in e["path"]
                                     for e in body["errors"]), body

    serve_as_admin(tmp_path, scenario)


def test_idle_errors_and_auth(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        status, body, _ = await call(client, "GET", "/api/training/status")
        assert status == 200 and {k: body[k] for k in SIMPLETUNER_STATUS} == IDLE_STATUS  # SimpleTuner's, exactly
        assert (body["state"], body["stage"]) == ("idle", None)  # our extras
        status, body, _ = await call(client, "GET", "/api/training/events?since_index=0")
        assert (status, body) == (200, {"job_id": None, "events": [], "next_index": 0})
        for path in ("/api/training/stop", "/api/training/cancel", "/api/training/validation/run",
                     "/api/training/checkpoint/run"):
            status, body, _ = await call(client, "POST", path)
            assert status == 400 and "No running training job" in body["error"]["message"], (path, body)
            status, body, _ = await call(client, "POST", path, json={"job_id": "nope"})
            assert status == 404 and "'nope'" in body["error"]["message"]
        assert (await call(client, "POST", "/api/training/stop", data={"job_id": "nope"}))[0] == 404
        assert (await call(client, "GET", "/api/training/events?job_id=nope"))[0] == 404
        assert (await call(client, "POST", "/api/training/checkpoints", json={"job_id": "nope"}))[0] == 404
        assert (await call(client, "POST", "/api/training/checkpoints"))[0] == 400
        for bad in ("x", "-1"):
            status, body, _ = await call(client, "GET", f"/api/training/events?since_index={bad}")
            assert status == 422 and body["error"]["errors"][0]["path"] == "since_index"
        status, body, _ = await call(client, "POST", "/api/training/start", json={"--learning_rat": 1})
        assert status == 422 and body["error"]["errors"][0]["did_you_mean"] == "learning_rate"

        base = str(client.make_url("/"))
        async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.DummyCookieJar()) as anonymous:
            for method, path in (("POST", "/api/training/validate"), ("POST", "/api/training/start"),
                                 ("GET", "/api/training/status"), ("GET", "/api/training/events"),
                                 ("POST", "/api/training/stop"), ("POST", "/api/training/checkpoints")):
                status, _, resp = await call(anonymous, method, path)
                assert status == 401 and resp.headers["WWW-Authenticate"] == "Bearer", path

    serve_as_admin(tmp_path, scenario)


async def poll(check: Callable[[], Awaitable[Any]], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s")


@pytest.mark.slow
@needs_pixart
def test_train_checkpoint_stop(tmp_path: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    home = tmp_path
    name = "tiny"
    create_environment(name, model_family="pixart_sigma", home=home)
    save_environment(name, tiny_config(home, tiny_pixart_dir, demo_images, output_dir=str(home / "output" / name)),
                     home=home)

    async def scenario(client: TestClient) -> None:
        assert (await call(client, "POST", f"/api/configs/{name}/activate"))[0] == 200
        status, body, _ = await call(client, "POST", "/api/training/start",
                                     data=form({"__active_tab__": "training", "--max_train_steps": 100000}))
        assert status in (200, 202), body
        assert body["success"] is True and body["status"] in ("running", "queued")
        job_id = body["job_id"]
        try:
            async def running_with_progress() -> Any:
                _, status_body, _ = await call(client, "GET", "/api/training/status")
                assert status_body["state"] not in FINAL, status_body
                return status_body["state"] == "running" and status_body["progress"] and status_body

            current = await poll(running_with_progress)
            assert current["job_id"] == job_id
            assert current["status"] == "running" and current["job_info"] is None
            assert current["progress"]["total_steps"] == 100000 and current["progress"]["step"] >= 1
            assert set(current["progress"]) == PROGRESS and isinstance(current["progress"]["loss"], float)
            assert int(current["config"]["--max_train_steps"]) == 100000
            startup = current["startup_progress"]
            assert {"init_data_backend", "init_load_base_model", "init_vae_cache", "init_prepare_models"} <= set(startup)
            assert all(set(e) == STARTUP and e["status"] == "completed" for e in startup.values()), startup
            # The last lifecycle stage before the loop: setup ended (no resume, no checkpoint yet).
            assert {k: current["stage"][k] for k in ("stage", "status")} == {"stage": "init_prepare_models",
                                                                            "status": "completed"}

            status, first, _ = await call(client, "GET", "/api/training/events?since_index=0")
            assert status == 200 and first["job_id"] == job_id and first["events"]
            assert first["next_index"] == int(first["events"][-1]["id"])
            seen = {int(e["id"]) for e in first["events"]}

            status, body, _ = await call(client, "POST", "/api/training/checkpoint/run")
            assert (status, body["job_id"]) == (200, job_id), body

            async def saved() -> Any:
                nonlocal first
                _, page, _ = await call(client, "GET", f"/api/training/events?since_index={first['next_index']}"
                                                       f"&job_id={job_id}")
                ids = [int(e["id"]) for e in page["events"]]
                assert not seen & set(ids) and ids == sorted(ids)
                seen.update(ids)
                first = {**first, "next_index": page["next_index"]}
                return [e for e in page["events"] if e["type"] == "training.checkpoint"]

            checkpoint = (await poll(saved))[0]

            status, body, _ = await call(client, "POST", "/api/training/stop", data={"job_id": job_id})
            assert status == 200 and body == {"job_id": job_id, "state": "stopping"}

            async def ended() -> Any:
                _, status_body, _ = await call(client, "GET", "/api/training/status")
                return status_body["state"] in FINAL and status_body

            final = await poll(ended)
            assert (final["state"], final["status"]) == ("stopped", "cancelled")
            aborted = final["startup_progress"]["training_abort"]
            assert aborted["status"] == "completed", final
            status, body, _ = await call(client, "POST", "/api/training/stop")
            assert status == 400  # nothing runs now

            status, body, _ = await call(client, "POST", "/api/training/checkpoints")
            assert status == 200 and body["job_id"] == job_id
            assert body["output_dir"] == str(home / "output" / name)
            paths = [c["path"] for c in body["checkpoints"]]
            assert checkpoint["checkpoint"]["path"] in paths

            resp = await client.get(f"/api/training/plot?job_id={job_id}")  # the loss plot, as a PNG
            png = await resp.read()
            assert resp.status == 200 and resp.content_type == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
            assert (await call(client, "GET", "/api/training/plot?job_id=nope"))[0] == 404
        finally:
            _, state, _ = await call(client, "GET", "/api/training/status")
            if state["state"] not in FINAL:
                await call(client, "POST", "/api/training/cancel", json={"job_id": job_id})

                async def gone() -> Any:
                    _, status_body, _ = await call(client, "GET", "/api/training/status")
                    return status_body["state"] in FINAL

                await poll(gone, timeout=60)

    serve_as_admin(home, scenario)


@needs_pixart
def test_tiny_pixart_example_starts_and_completes_with_no_other_step(tmp_path: Path) -> None:
    """Create from the shipped example (the family given by its alias), activate, start: the demo images were
    written at creation, and the trainer runs the example's own settings to completion. Without the dataset
    folder, start is a 422 naming the folder and the upload call, before any job exists."""
    datasets = tmp_path / "datasets"

    async def scenario(client: TestClient) -> None:
        status, env, _ = await call(client, "POST", "/api/configs/environments",
                                    json={"name": "demo", "example": "tiny-pixart", "model_family": "pixart",
                                          "model_type": "full"})
        assert status == 201, env
        assert env["datasets_created"] == [str(datasets / "pixart-demo")]
        assert len(list((datasets / "pixart-demo").glob("*.png"))) == 12
        assert len(list((datasets / "pixart-demo").glob("*.txt"))) == 12
        status, again, _ = await call(client, "POST", "/api/configs/environments",
                                      json={"name": "demo2", "example": "tiny-pixart"})
        assert status == 201 and again["datasets_created"] == []  # an existing folder is never rewritten

        assert (await call(client, "POST", "/api/configs/demo/activate"))[0] == 200
        status, body, _ = await call(client, "POST", "/api/training/start", data=form({"__active_tab__": "model"}))
        assert status in (200, 202), body

        async def ended() -> Any:
            _, status_body, _ = await call(client, "GET", "/api/training/status")
            return status_body["state"] in FINAL and status_body

        final = await poll(ended, timeout=600)
        assert final["state"] == "completed", final
        assert final["progress"]["step"] == final["progress"]["total_steps"] == env["config"]["--max_train_steps"]

        shutil.rmtree(datasets / "pixart-demo")
        status, body, _ = await call(client, "POST", "/api/training/start", data=form({"__active_tab__": "model"}))
        assert status == 422, body
        error = body["error"]["errors"][0]
        assert error["path"] == "dataloader[0].instance_data_dir"
        assert str(datasets / "pixart-demo") in error["message"] and "POST /api/datasets/upload" in error["message"]
        _, jobs, _ = await call(client, "GET", "/api/training/status")
        assert jobs["job_id"] == body.get("job_id", final["job_id"])  # no new job was made

    serve_as_admin(tmp_path, scenario)


@needs_pixart
def test_model_keys_given_with_an_example_must_agree_with_it(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        for key, value, expected in (("model_family", "flux", "pixart_sigma"), ("model_flavour", "900M-1024-v0.6",
                                     "tiny"), ("model_type", "lora", "full"), ("lora_type", "lycoris", "standard")):
            status, body, _ = await call(client, "POST", "/api/configs/environments",
                                         json={"name": "clash", "example": "tiny-pixart", key: value})
            assert status == 422, body
            [error] = body["error"]["errors"]
            assert (error["path"], error["given"], error["example"]) == (key, value, expected)
            assert repr(value) in error["message"] and repr(expected) in error["message"]
        status, body, _ = await call(client, "POST", "/api/configs/environments",
                                     json={"name": "agree", "example": "tiny-pixart", "model_family": "pixart_sigma",
                                           "model_flavour": "tiny", "lora_type": "standard"})
        assert status == 201, body
        assert not (tmp_path / "config" / "clash").exists()

    serve_as_admin(tmp_path, scenario)


@pytest.mark.skipif("flux" not in get_registry().families, reason="needs the flux plugin")
def test_tiny_kontext_example_gets_edit_reference_pairs(tmp_path: Path) -> None:
    datasets = tmp_path / "datasets"

    async def scenario(client: TestClient) -> None:
        status, env, _ = await call(client, "POST", "/api/configs/environments",
                                    json={"name": "kx", "example": "tiny-kontext", "model_family": "flux",
                                          "model_flavour": "tiny-kontext", "lora_type": "lycoris"})
        assert status == 201, env
        edit, reference = datasets / "kontext-edit", datasets / "kontext-reference"
        assert env["datasets_created"] == [str(edit), str(reference)]
        names = sorted(p.name for p in edit.glob("*.png"))
        assert names and names == sorted(p.name for p in reference.glob("*.png"))
        assert len(list(edit.glob("*.txt"))) == len(names) and not list(reference.glob("*.txt"))
        assert (await call(client, "POST", "/api/configs/kx/activate"))[0] == 200
        status, body, _ = await call(client, "POST", "/api/training/validate", data=form({}))
        assert status == 200 and body["valid"] is True, body

    serve_as_admin(tmp_path, scenario)


@pytest.mark.slow
@needs_pixart
def test_status_and_events_of_a_finished_and_a_failed_run(tmp_path: Path, tiny_pixart_dir: Path,
                                                          demo_images: Path) -> None:
    """A real tiny run, read back as a SimpleTuner client would: its status, and every wire event through a
    reader written only from SimpleTuner's documented event surface."""
    from simpletuner_reader import read

    home = tmp_path
    create_environment("tiny", model_family="pixart_sigma", home=home)
    config = tiny_config(home, tiny_pixart_dir, demo_images, output_dir=str(home / "out"), max_train_steps=4,
                         checkpointing_steps=2)
    save_environment("tiny", config, home=home)

    async def finished(job_id: str) -> Any:
        async def done() -> Any:
            _, body, _ = await call(client_ref[0], "GET", "/api/training/status")
            return body["job_id"] == job_id and body["state"] in FINAL and body
        return await poll(done, timeout=300)

    client_ref: list[TestClient] = []

    async def scenario(client: TestClient) -> None:
        client_ref.append(client)
        assert (await call(client, "POST", "/api/configs/tiny/activate"))[0] == 200
        status, body, _ = await call(client, "POST", "/api/training/start", json={})
        assert status in (200, 202), body
        job_id = body["job_id"]
        final = await finished(job_id)
        assert (final["status"], final["state"], final["job_info"]) == ("completed", "completed", None), final
        progress = final["progress"]
        assert set(progress) == PROGRESS
        assert (progress["step"], progress["total_steps"], progress["percent"]) == (4, 4, 100.0)
        assert progress["total_epochs"] >= 1 and isinstance(progress["learning_rate"], float)
        assert int(final["config"]["--max_train_steps"]) == 4
        startup = final["startup_progress"]
        assert {"init_data_backend", "init_load_base_model", "init_vae_cache", "init_prepare_models",
                "checkpoint_save", "model_save", "training_complete"} <= set(startup), startup
        assert all(set(e) == STARTUP and (e["status"], e["percent"]) == ("completed", 100) for e in startup.values())

        _, page, _ = await call(client, "GET", f"/api/training/events?job_id={job_id}&limit=10000")
        events = page["events"]
        assert page["next_index"] == int(events[-1]["id"])
        mirror = home / "jobs" / job_id / "events.jsonl"  # the trainer's JSONL mirror: the same envelopes
        trainer_events = [e for e in events if e["event_type"] != "job.queued"]  # (queued: by the server)
        assert [json.loads(line) for line in mirror.read_text().splitlines()] == trainer_events
        run = read(events)
        expected = {"init_data_backend", "init_load_base_model", "init_vae_cache", "init_text_embed_cache",
                    "init_prepare_models", "checkpoint_save", "model_save", "training_complete"}
        assert set(run.stages) == expected and run.unknown_stages == {"init_text_embed_cache"}
        assert all(statuses == ["running", "completed"] for statuses in run.stages.values()), run.stages
        assert run.steps == [1, 2, 3, 4]
        assert run.checkpoints == [str(home / "out" / "checkpoint-2")]
        assert run.statuses == ["queued", "starting", "running", "completed"]
        assert "training.summary" in run.types

        # A run whose dataset has no images: it fails in init_data_backend, with the reason in job_info.
        empty = home / "empty"
        empty.mkdir()
        write_dataloader(home, empty)
        status, body, _ = await call(client, "POST", "/api/training/start", json={"--output_dir": str(home / "o2")})
        assert status in (200, 202), body
        failed = await finished(body["job_id"])
        assert (failed["status"], failed["state"], failed["progress"]) == ("error", "failed", None), failed
        info = failed["job_info"]
        assert (info["status"], info["status_detail"]) == ("error", "error_with_details") and info["error"]
        assert failed["startup_progress"]["init_data_backend"]["status"] == "failed"
        _, page, _ = await call(client, "GET", f"/api/training/events?job_id={body['job_id']}")
        run = read(page["events"])
        assert run.stages == {"init_data_backend": ["running", "failed"]} and run.statuses[-1] == "error"

    serve_as_admin(home, scenario)
