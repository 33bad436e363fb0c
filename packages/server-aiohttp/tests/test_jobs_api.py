"""``/api/jobs`` and the job page's training routes (metrics, validation images, files, checkpoints) over real
sockets. No trainer runs: jobs and their events are written straight into the app's store, files onto disk.

Running jobs name an executor this server does not enable, so ``Runner.reconcile`` leaves them running.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from simpletuner_core.events.types import Event
from simpletuner_core.jobs.models import Job
from simpletuner_core.jobs.store import Store
from simpletuner_server.keys import STORE_KEY

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import as_user, call, serve_as_admin

ENTRY_KEYS = {"job_id", "env", "user", "state", "created_at", "started_at", "finished_at", "duration_seconds",
              "gpus_requested", "allocated_gpus", "cpu_slot", "executor", "worker_id", "target", "priority",
              "queue_position", "reason", "resumable", "output_dir", "progress"}
ELSEWHERE = "not-enabled-here"  # an executor name reconcile leaves alone


def store_of(client: TestClient) -> Store:
    return client.server.app[STORE_KEY]


def add_job(store: Store, job_id: str, user: str = "admin", state: str = "completed", **fields: Any) -> Job:
    fields.setdefault("created_at", time.time())
    if state == "running":
        fields.setdefault("executor", ELSEWHERE)
    return store.create_job(Job(id=job_id, config=fields.pop("config", {}), state=state, user=user, **fields))


def status_events(store: Store, job_id: str, count: int, total: int | None = None) -> None:
    """``count`` training.status events, step i with loss i and lr i / 1000, in one transaction."""
    with store.transaction():
        for step in range(1, count + 1):
            store.append_event(Event("training.status", job_id, {"step": step, "total": total or count,
                                                                 "loss": float(step), "lr": step / 1000}))


def errors_of(body: dict[str, Any]) -> set[str]:
    return {error["path"] for error in body["error"].get("errors", [])}


# --- /api/jobs ----------------------------------------------------------------------------------------------


def test_job_list_newest_first_filtered_paged_and_owned(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        store = store_of(client)
        now = time.time()
        add_job(store, "old", created_at=now - 300, started_at=now - 290, finished_at=now - 190,
                output_dir="/tmp/old-out", env="demo")
        add_job(store, "run", state="running", created_at=now - 200, started_at=now - 100, gpus_requested=1,
                allocated_gpus=(0,), worker_id="w1", priority=2)
        add_job(store, "q1", state="queued", created_at=now - 50, reason="waiting for a GPU")
        add_job(store, "q2", state="queued", created_at=now - 40)
        add_job(store, "ada-1", user="ada", created_at=now - 10)
        status_events(store, "run", 3, total=10)
        store.append_event(Event("log", "run", {"message": "not a status event"}))

        status, body, _ = await call(client, "GET", "/api/jobs")
        assert status == 200, body
        assert [j["job_id"] for j in body["jobs"]] == ["ada-1", "q2", "q1", "run", "old"]
        assert (body["count"], body["total"]) == (5, 5)
        assert all(set(entry) == ENTRY_KEYS for entry in body["jobs"])
        entries = {entry["job_id"]: entry for entry in body["jobs"]}
        old, run = entries["old"], entries["run"]
        assert old["duration_seconds"] == pytest.approx(100, abs=0.01) and old["env"] == "demo"
        assert old["finished_at"].startswith(time.strftime("%Y-", time.gmtime(now))) and old["progress"] is None
        assert old["output_dir"] == "/tmp/old-out" and old["queue_position"] is None
        assert 99 < run["duration_seconds"] < 200 and run["finished_at"] is None
        assert run["progress"] == {"step": 3, "total_steps": 10, "percent": 30.0, "epoch": None, "loss": 3.0,
                                   "learning_rate": 0.003, "iterations_per_second": None, "eta_seconds": None}
        assert (run["allocated_gpus"], run["worker_id"], run["priority"], run["gpus_requested"]) == ([0], "w1", 2, 1)
        assert [entries[j]["queue_position"] for j in ("q1", "q2")] == [1, 2]
        assert entries["q1"]["reason"] == "waiting for a GPU" and entries["q1"]["started_at"] is None
        assert entries["q1"]["duration_seconds"] is None

        status, body, _ = await call(client, "GET", "/api/jobs", params={"state": "queued,running"})
        assert [j["job_id"] for j in body["jobs"]] == ["q2", "q1", "run"]
        status, body, _ = await call(client, "GET", "/api/jobs", params={"limit": 2, "offset": 1})
        assert [j["job_id"] for j in body["jobs"]] == ["q2", "q1"] and (body["count"], body["total"]) == (2, 5)

        for params, field in (({"state": "running,bogus"}, "state"), ({"limit": 0}, "limit"),
                              ({"offset": -1}, "offset"), ({"limit": "many"}, "limit")):
            status, body, _ = await call(client, "GET", "/api/jobs", params=params)
            assert status == 422 and field in errors_of(body), (params, body)

        async with as_user(client, "ada", ["researcher"]) as ada:
            status, body, _ = await call(ada, "GET", "/api/jobs")
            assert status == 200 and [j["job_id"] for j in body["jobs"]] == ["ada-1"] and body["total"] == 1
            assert (await call(ada, "GET", "/api/jobs/run"))[0] == 404
            status, body, _ = await call(ada, "GET", "/api/jobs/ada-1")
            assert status == 200 and body["user"] == "ada"

    serve_as_admin(tmp_path, scenario)


def test_job_detail_adds_config_and_last_event_id(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        store = store_of(client)
        config = {"--learning_rate": 0.0001, "--webhook_config": [{"callback_url": "https://x", "secret": "s"}]}
        add_job(store, "j1", user="ada", config=config)
        status_events(store, "j1", 2)
        store.append_event(Event("job.stage", "j1", {"stage": "init_vae_cache", "status": "running", "label": "x"}))
        store.append_event(Event("job.stage", "j1", {"stage": "init_vae_cache", "status": "completed", "label": "x"}))
        last = store.append_event(Event("log", "j1", {"message": "done"})).id
        status, body, _ = await call(client, "GET", "/api/jobs/j1")  # an admin sees secrets, as /status does
        assert status == 200, body
        assert set(body) == ENTRY_KEYS | {"config", "stage", "last_event_id"}
        assert body["config"] == config and body["last_event_id"] == last
        assert body["stage"] == {"stage": "init_vae_cache", "status": "completed", "label": "x"}  # the newest
        assert body["progress"]["step"] == 2
        status, body, _ = await call(client, "GET", "/api/jobs/nope")
        assert status == 404 and body["error"]["status"] == 404

    serve_as_admin(tmp_path, scenario)


# --- /api/training/metrics ----------------------------------------------------------------------------------


def test_metrics_decimates_10k_status_events_quickly(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        store = store_of(client)
        add_job(store, "big")
        status_events(store, "big", 10_000)
        with store.transaction():
            for step in (2_500, 5_000, 10_000):
                store.append_event(Event("training.metric", "big", {"step": step, "metrics": {"eval_loss": step / 10}}))
                store.append_event(Event("log", "big", {"message": "noise"}))
        last = store.last_event_id("big")

        started = time.perf_counter()
        status, body, _ = await call(client, "GET", "/api/training/metrics",
                                     params={"job_id": "big", "max_points": 500})
        elapsed = time.perf_counter() - started
        assert status == 200, body
        assert (body["job_id"], body["last_event_id"], body["total_points"]) == ("big", last, 10_000)
        series = body["series"]
        assert len(series["step"]) == len(series["loss"]) == len(series["lr"]) == 500
        # 20 steps per bucket: step and lr are the bucket's last, loss its mean (loss i at step i)
        assert series["step"][:3] == [20, 40, 60] and series["step"][-1] == 10_000
        assert series["loss"][:2] == [10.5, 30.5] and series["loss"][-1] == pytest.approx(9990.5)
        assert series["lr"][0] == pytest.approx(0.02) and series["lr"][-1] == pytest.approx(10.0)
        assert body["metrics"] == {"eval_loss": {"step": [2_500, 5_000, 10_000], "value": [250.0, 500.0, 1000.0]}}
        assert elapsed < 1.0, f"metrics took {elapsed * 1000:.0f} ms"  # ~30 ms here; generous for shared CI

        status, body, _ = await call(client, "GET", "/api/training/metrics", params={"job_id": "big"})
        assert len(body["series"]["step"]) == 1000 and body["series"]["step"][-1] == 10_000
        status, body, _ = await call(client, "GET", "/api/training/metrics")  # default: the current job
        assert status == 200 and body["job_id"] == "big" and body["total_points"] == 10_000
        for value in (0, 10_001, "abc"):
            status, body, _ = await call(client, "GET", "/api/training/metrics",
                                         params={"job_id": "big", "max_points": value})
            assert status == 422 and errors_of(body) == {"max_points"}, (value, body)

    serve_as_admin(tmp_path, scenario)


def test_metrics_small_run_is_exact_and_private(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        store = store_of(client)
        add_job(store, "admins")
        status, body, _ = await call(client, "GET", "/api/training/metrics", params={"job_id": "admins"})
        assert body == {"job_id": "admins", "last_event_id": 0, "total_points": 0,
                        "series": {"step": [], "loss": [], "lr": []}, "metrics": {}}
        store.append_event(Event("training.status", "admins", {"step": 1, "loss": 0.5, "lr": 0.001}))
        store.append_event(Event("training.status", "admins", {"step": 2, "loss": None, "lr": 0.002}))
        store.append_event(Event("training.metric", "admins", {"step": 2, "name": "eval_loss", "value": 0.4}))
        status, body, _ = await call(client, "GET", "/api/training/metrics", params={"job_id": "admins"})
        assert body["series"] == {"step": [1, 2], "loss": [0.5, None], "lr": [0.001, 0.002]}
        assert body["metrics"] == {"eval_loss": {"step": [2], "value": [0.4]}} and body["total_points"] == 2
        store.append_event(Event("training.status", "admins", {"step": 3, "loss": float("nan"), "lr": 0.003}))
        for path, params in (("/api/training/metrics", {"job_id": "admins"}), ("/api/jobs", {})):
            resp = await client.get(path, params=params)
            text = await resp.text()
            assert resp.status == 200 and "NaN" not in text, text  # strict JSON: browsers reject NaN
        assert json.loads(text)["jobs"][0]["progress"] == {
            "step": 3, "total_steps": None, "percent": None, "epoch": None, "loss": None, "learning_rate": 0.003,
            "iterations_per_second": None, "eta_seconds": None}
        async with as_user(client, "ada", ["researcher"]) as ada:
            assert (await call(ada, "GET", "/api/training/metrics", params={"job_id": "admins"}))[0] == 404
            status, body, _ = await call(ada, "GET", "/api/training/metrics")  # no job of hers
            assert status == 200 and body["job_id"] is None and body["series"]["step"] == []

    serve_as_admin(tmp_path, scenario)


# --- validation images and files ----------------------------------------------------------------------------


def png(path: Path, color: str, size: tuple[int, int] = (8, 6)) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path.read_bytes()


def image_event(job_id: str, step: int, name: str, path: Path | None, kind: str = "final") -> Event:
    data: dict[str, Any] = {"step": step, "global_step": step, "prompt": f"a {name} prompt", "prompt_name": name,
                            "validation_type": kind, "resolution": [8, 6],
                            "images": [{"src": "data:image/png;base64,AAAA", "mime_type": "image/png"}]}
    if path is not None:
        data["path"] = str(path)
    return Event("validation.image", job_id, data)


def test_validation_images_listed_by_file_and_served(tmp_path: Path) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "elsewhere"

    async def scenario(client: TestClient) -> None:
        store = store_of(client)
        add_job(store, "v", output_dir=str(out))
        written = {}
        for step, name in ((20, "main"), (20, "cat dog"), (10, "main"), (10, "cat dog")):
            path = out / "validation" / f"step-{step:06d}-{name}.png"
            written[(step, name)] = png(path, "red" if step == 10 else "blue")
            store.append_event(image_event("v", step, name, path))
        store.append_event(image_event("v", 20, "main", None, kind="intermediary"))  # a preview: inline only
        store.append_event(image_event("v", 20, "main", None))  # final but no file: nothing to serve
        png(outside / "stray.png", "green")
        store.append_event(image_event("v", 30, "stray", outside / "stray.png"))  # outside output_dir

        resp = await client.get("/api/training/validation/images", params={"job_id": "v"})
        text = await resp.text()
        assert resp.status == 200 and "data:image" not in text
        body = json.loads(text)
        assert body["job_id"] == "v" and body["prompts"] == ["main", "cat dog"] and body["steps"] == [10, 20]
        images = body["images"]
        assert [(i["step"], i["prompt_name"]) for i in images] == [(20, "main"), (20, "cat dog"), (10, "main"),
                                                                   (10, "cat dog")]
        first = images[1]
        assert set(first) == {"event_id", "step", "prompt_name", "prompt", "validation_type", "resolution", "url",
                              "timestamp"}
        assert first["prompt"] == "a cat dog prompt" and first["resolution"] == [8, 6]
        assert first["validation_type"] == "final" and first["timestamp"].endswith("+00:00")
        url = urlsplit(first["url"])
        assert url.path == "/api/training/files" and "%2F" in url.query and "%20" in url.query
        assert parse_qs(url.query) == {"job_id": ["v"], "path": ["validation/step-000020-cat dog.png"]}

        for image in images:
            resp = await client.get(image["url"])
            assert resp.status == 200 and resp.content_type == "image/png"
            assert await resp.read() == written[(image["step"], image["prompt_name"])]
            assert "Content-Disposition" not in resp.headers
            assert resp.headers["X-Content-Type-Options"] == "nosniff"

        later = out / "validation" / "step-000030-main.png"  # a later validation joins the cached listing
        png(later, "black")
        store.append_event(image_event("v", 30, "main", later))
        status, body, _ = await call(client, "GET", "/api/training/validation/images", params={"job_id": "v"})
        assert status == 200 and [(i["step"], i["prompt_name"]) for i in body["images"]][-1] == (30, "main")
        assert body["steps"] == [10, 20, 30] and len(body["images"]) == 5

        async with as_user(client, "ada", ["researcher"]) as ada:
            assert (await call(ada, "GET", "/api/training/validation/images", params={"job_id": "v"}))[0] == 404
            assert (await call(ada, "GET", images[0]["url"]))[0] == 404

    serve_as_admin(tmp_path, scenario)


def test_files_stay_inside_the_output_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    secret = tmp_path / "secret.txt"

    async def scenario(client: TestClient) -> None:
        add_job(store_of(client), "f", output_dir=str(out))
        (out / "sub").mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"\x00weights")
        png(out / "photo.JPG", "white")
        secret.write_text("top secret")
        os.symlink(secret, out / "link-out.txt")
        os.symlink(tmp_path, out / "dir-out")
        os.symlink(out / "model.safetensors", out / "link-in.bin")

        async def get(path: str, job_id: str = "f") -> tuple[int, Any, Any]:
            return await call(client, "GET", "/api/training/files", params={"job_id": job_id, "path": path})

        resp = await client.get("/api/training/files", params={"job_id": "f", "path": "model.safetensors"})
        assert resp.status == 200 and await resp.read() == b"\x00weights"
        assert resp.content_type == "application/octet-stream"
        assert resp.headers["Content-Disposition"] == 'attachment; filename="model.safetensors"'
        resp = await client.get("/api/training/files", params={"job_id": "f", "path": "link-in.bin"})
        assert resp.status == 200 and await resp.read() == b"\x00weights"  # a link that stays inside is fine
        resp = await client.get("/api/training/files", params={"job_id": "f", "path": "photo.JPG"})
        assert resp.status == 200 and resp.content_type == "image/jpeg" and (await resp.read())[:2] == b"\xff\xd8"

        for path in ("../../etc/passwd", "../secret.txt", "link-out.txt", "dir-out/secret.txt", "/etc/passwd"):
            status, body, _ = await get(path)
            assert status == 403 and errors_of(body) == {"path"}, (path, body)
            assert "top secret" not in json.dumps(body)
        status, body, _ = await get("missing.png")
        assert status == 404
        for path in ("sub", "."):
            status, body, _ = await get(path)
            assert status == 422 and errors_of(body) == {"path"}, (path, body)
        status, body, _ = await call(client, "GET", "/api/training/files", params={"job_id": "f"})
        assert status == 422 and errors_of(body) == {"path"}
        status, body, _ = await call(client, "GET", "/api/training/files", params={"path": "x"})
        assert status == 422 and errors_of(body) == {"job_id"}
        assert (await get("model.safetensors", job_id="nope"))[0] == 404

    serve_as_admin(tmp_path, scenario)


# --- checkpoints --------------------------------------------------------------------------------------------


def checkpoint(out: Path, step: int, files: dict[str, bytes]) -> Path:
    directory = out / f"checkpoint-{step}"
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    manifest = json.dumps({"complete": True, "step": step, "created_at": time.time() + step})
    (directory / "manifest.json").write_text(manifest)
    return directory


def test_checkpoints_listed_with_sizes_and_downloaded_as_zip(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "home" / "out"

    async def scenario(client: TestClient) -> None:
        add_job(store_of(client), "c", config={"--output_dir": "out"})  # relative: to home, where trainers run
        small = checkpoint(out, 5, {"model.safetensors": b"a" * 1000, "optimizer/state.bin": b"b" * 234})
        large = checkpoint(out, 10, {"model.safetensors": b"c" * 5000})
        (out / "checkpoint-15").mkdir()  # incomplete: no manifest
        os.symlink(tmp_path, small / "escape")  # never followed, never zipped

        listings = [await call(client, "POST", "/api/training/checkpoints", json={"job_id": "c"}),
                    await call(client, "GET", "/api/training/checkpoints", params={"job_id": "c"}),
                    await call(client, "GET", "/api/training/checkpoints")]
        for status, body, _ in listings:
            assert status == 200, body
            assert body["job_id"] == "c" and body["output_dir"] == "out"
            found = body["checkpoints"]
            assert [c["step"] for c in found] == [5, 10]
            manifest_size = [len((d / "manifest.json").read_bytes()) for d in (small, large)]
            assert [c["size_bytes"] for c in found] == [1234 + manifest_size[0], 5000 + manifest_size[1]]
            assert found[0]["path"] == str(small) and found[0]["created_at"].endswith("+00:00")
            assert found[0]["download_url"] == "/api/training/checkpoints/download?job_id=c&step=5"

        resp = await client.get(listings[0][1]["checkpoints"][0]["download_url"])
        data = await resp.read()
        assert resp.status == 200 and resp.content_type == "application/zip", data[:200]
        assert resp.headers["Content-Disposition"] == 'attachment; filename="c-checkpoint-5.zip"'
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = sorted(archive.namelist())
            assert names == ["checkpoint-5/manifest.json", "checkpoint-5/model.safetensors",
                             "checkpoint-5/optimizer/state.bin"]
            for name in names:
                assert archive.read(name) == (small / name.split("/", 1)[1]).read_bytes()
        for _ in range(100):  # the spooled zip is deleted right after the server sent its last byte
            if not list((home / ".downloads").iterdir()):
                break
            await asyncio.sleep(0.02)
        assert list((home / ".downloads").iterdir()) == []

        download = "/api/training/checkpoints/download"
        for params, code, field in (({"job_id": "c", "step": "abc"}, 422, "step"),
                                    ({"job_id": "c", "step": -1}, 422, "step"),
                                    ({"job_id": "c"}, 422, "step"), ({"step": 5}, 422, "job_id")):
            status, body, _ = await call(client, "GET", download, params=params)
            assert status == code and errors_of(body) == {field}, (params, body)
        linked = checkpoint(tmp_path / "elsewhere", 20, {"secret.bin": b"s"})
        os.symlink(linked, out / "checkpoint-20")  # complete, but a link leading out of the output directory
        for step in (7, 15, 20):
            assert (await call(client, "GET", download, params={"job_id": "c", "step": step}))[0] == 404
        status, body, _ = await call(client, "GET", "/api/training/checkpoints", params={"job_id": "c"})
        assert status == 200 and [c["step"] for c in body["checkpoints"]] == [5, 10]

        async with as_user(client, "ada", ["researcher"]) as ada:
            assert (await call(ada, "GET", download, params={"job_id": "c", "step": 5}))[0] == 404
            assert (await call(ada, "GET", "/api/training/checkpoints", params={"job_id": "c"}))[0] == 404

    serve_as_admin(home, scenario)
