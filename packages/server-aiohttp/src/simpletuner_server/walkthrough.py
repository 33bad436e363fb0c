"""The tutorial's API walkthrough as a client: what ``simpletuner api-demo`` runs and the e2e test checks.

Every call is the tutorial's own (paths, form fields, JSON bodies), with a tiny model in place of the real
weights, and every answer is checked: an unexpected status or shape raises :class:`WalkthroughError` with the
response, so a broken server cannot look like a working demo. Torch-free: it only speaks HTTP.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from simpletuner_core.demo_data import write_demo_dataset

FINAL_STATES = ("completed", "stopped", "cancelled", "failed")
Log = Callable[[str], None]


class WalkthroughError(AssertionError):
    """A server answer the tutorial does not allow; the message carries the request and the response."""


class Api:
    """A logged-in client whose every call names the statuses it accepts."""

    def __init__(self, session: aiohttp.ClientSession, log: Log) -> None:
        self.session = session
        self.log = log
        self.headers: dict[str, str] = {}
        self.calls: list[tuple[str, str, int]] = []

    async def call(self, method: str, path: str, expect: Iterable[int] = (200,), **kw: Any) -> Any:
        async with self.session.request(method, path, headers=self.headers, **kw) as resp:
            text = await resp.text()
            self.calls.append((method, path, resp.status))
            try:
                body = json.loads(text) if text else None
            except json.JSONDecodeError:
                body = text
            if resp.status not in tuple(expect):
                raise WalkthroughError(f"{method} {path} -> {resp.status} (expected {tuple(expect)}): {text[:2000]}")
            if not resp.content_type.startswith("application/json") and resp.status != 204:
                raise WalkthroughError(f"{method} {path} answered {resp.content_type}, not JSON")
            return body


def check(condition: bool, what: str, body: Any) -> None:
    if not condition:
        raise WalkthroughError(f"{what}: {json.dumps(body)[:2000] if not isinstance(body, str) else body[:2000]}")


def _form(**fields: Any) -> aiohttp.FormData:
    """A multipart form like ``curl -F`` sends (the tutorial's validate/start bodies)."""
    form = aiohttp.FormData(default_to_multipart=True)
    for key, value in fields.items():
        form.add_field(key, str(value))
    return form


def session(base_url: str) -> aiohttp.ClientSession:
    """A client session for ``base_url`` that keeps the login cookie even for an IP-address host."""
    return aiohttp.ClientSession(base_url=base_url, cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 timeout=aiohttp.ClientTimeout(total=300))


async def setup_admin(api: Api, password: str = "demo password, change me") -> str:
    """Setup status → first admin (from this machine) → login → an API key used for everything after."""
    status = await api.call("GET", "/api/cloud/auth/setup/status")
    admin = {"email": "admin@example.com", "username": "admin", "password": password}
    if status["needs_setup"]:
        await api.call("POST", "/api/cloud/auth/setup/first-admin", expect=(201,), json=admin)
    await api.call("POST", "/api/cloud/auth/login", json={"username": "admin", "password": password})
    created = await api.call("POST", "/api/cloud/auth/api-keys", expect=(201,), json={"name": "automation-key"})
    key = created["key"]
    check(key.startswith("st_"), "API keys start with st_", created)
    api.headers = {"X-API-Key": key}
    me = await api.call("GET", "/api/cloud/auth/me")
    check(me["username"] == "admin", "the key acts as the admin", me)
    spec = await api.call("GET", "/openapi.json")
    tags = {t["name"] for t in spec["tags"]}
    check({"configurations", "training"} <= tags, "OpenAPI tags", spec.get("tags"))
    return key


async def make_folder(api: Api, name: str) -> str:
    """``POST /api/datasets/folders`` under the datasets root (an existing one is fine): its server path."""
    root = (await api.call("GET", "/api/datasets/root"))["datasets_dir"]
    made = await api.call("POST", "/api/datasets/folders", expect=(201, 409),
                          data=_form(parent_path=root, folder_name=name))
    return made["path"] if "path" in made else f"{root}/{name}"


async def upload_zip(api: Api, target: str, paths: list[Path]) -> dict[str, Any]:
    """The files zipped client-side, extracted server-side (``/api/datasets/upload/zip``, overwriting)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in paths:
            archive.write(path, path.name)
    form = aiohttp.FormData()
    form.add_field("target_path", target)
    form.add_field("overwrite", "true")
    form.add_field("file", buffer.getvalue(), filename="dataset.zip", content_type="application/zip")
    return await api.call("POST", "/api/datasets/upload/zip", data=form)


async def upload_files(api: Api, target: str, paths: list[Path], field: str = "files[]") -> dict[str, Any]:
    """The files as repeated multipart fields (``/api/datasets/upload``, overwriting)."""
    form = aiohttp.FormData()
    form.add_field("target_path", target)
    form.add_field("overwrite", "true")
    for path in paths:
        form.add_field(field, path.read_bytes(), filename=path.name)
    return await api.call("POST", "/api/datasets/upload", data=form)


async def upload_demo_images(api: Api, folder: str, count: int, size: int = 64) -> str:
    """Create ``datasets_dir/<folder>`` and upload generated images with captions: most as a zip, one pair as
    individual files (both tutorial routes). Returns the folder's absolute path on the server."""
    target = await make_folder(api, folder)
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_dataset(Path(tmp), count=count, size=size)  # demo_000.png + demo_000.txt, …
        files = sorted(Path(tmp).iterdir())
        single = files[0].stem
        zipped = [p for p in files if p.stem != single]
        result = await upload_zip(api, target, zipped)
        check(result["files_extracted"] == len(zipped), "every zipped image and caption extracted", result)
        result = await upload_files(api, target, [p for p in files if p.stem == single])
        check(result["files_uploaded"] == 2, "image and caption uploaded", result)
    return target


async def create_environment(api: Api, name: str, create: dict[str, Any], overrides: dict[str, Any],
                             dataloader: list[dict[str, Any]], tags: list[str]) -> dict[str, Any]:
    """The tutorial's steps 1-4: create, wire the dataloader, merge hyper-parameters with PUT, activate."""
    existing = await api.call("GET", f"/api/configs/{name}", expect=(200, 404))
    if "config" in existing:
        await api.call("DELETE", f"/api/configs/{name}", expect=(204,))
    env = await api.call("POST", "/api/configs/environments", expect=(201,), json={"name": name, **create})
    check(env["config"]["--model_family"] == create["model_family"], "environment created", env)
    saved = await api.call("POST", f"/api/configs/{name}/dataloader", json=dataloader)
    check(len(saved["dataloader"]) == len(dataloader), "dataloader saved", saved)
    current = (await api.call("GET", f"/api/configs/{name}"))["config"]
    update = {"name": name, "description": create.get("description", ""), "tags": tags,
              "config": {**current, **overrides, "--data_backend_config": f"{name}/multidatabackend.json"}}
    result = await api.call("PUT", f"/api/configs/{name}", json=update)
    check(result["config"]["--max_train_steps"] == overrides["--max_train_steps"], "hyper-parameters saved",
          result)
    active = await api.call("POST", f"/api/configs/{name}/activate")
    check(active == {"active": name}, "activated", active)
    return result


async def validate_and_start(api: Api) -> str:
    """Steps 5-6 with the tutorial's multipart forms; returns the job id."""
    valid = await api.call("POST", "/api/training/validate",
                           data=_form(__active_tab__="model", **{"--num_train_epochs": 0}))
    check(valid["valid"] is True and valid["message"] == "Configuration Valid", "Configuration Valid", valid)
    started = await api.call("POST", "/api/training/start", expect=(200, 202),
                             data=_form(__active_tab__="model", **{"--num_train_epochs": 0}))
    check(started["success"] is True and started["job_id"], "job started", started)
    return started["job_id"]


async def follow(api: Api, job_id: str, timeout: float = 900.0) -> dict[str, Any]:
    """Step 7: poll status and read events incrementally until the job ends, reading both as a SimpleTuner
    client would (``.status``, ``.progress.step``; ``training.progress`` events); returns the last status with
    the per-step ``losses`` seen in the events."""
    since, seen, last_percent = 0, 0, -1.0
    losses: list[float] = []
    deadline = time.monotonic() + timeout
    while True:
        page = await api.call("GET", f"/api/training/events?since_index={since}&job_id={job_id}")
        for event in page["events"]:
            seen += 1
            check(event["id"] == str(int(event["id"])) and event["message_type"] == event["type"],
                  "events in SimpleTuner's envelope", event)
            progress = event.get("progress") or {}
            loss = (progress.get("metrics") or {}).get("loss")
            if event["type"] == "training.progress" and isinstance(loss, (int, float)):
                losses.append(float(loss))
                if (progress.get("percent") or 0) >= last_percent + 20:
                    last_percent = progress["percent"]
                    api.log(f"  step {progress['current']}/{progress['total']} loss {loss:.4f}")
            elif event["type"] in ("lifecycle.stage", "training.checkpoint", "training.status"):
                api.log(f"  {event['type']}: {event['title']} {event['message']}".rstrip())
        since = page["next_index"]
        status = await api.call("GET", "/api/training/status")
        if status["job_id"] == job_id and status["state"] in FINAL_STATES:
            check(seen > 0, "the job logged events", status)
            check(status["status"] in ("completed", "error", "cancelled") and "startup_progress" in status,
                  "status in SimpleTuner's shape", status)
            return {**status, "losses": losses}
        if time.monotonic() > deadline:
            raise WalkthroughError(f"job {job_id} did not finish within {timeout:.0f}s: {status}")
        await asyncio.sleep(0.5)


async def finish(api: Api, job_id: str) -> dict[str, Any]:
    """Checkpoints of the job plus the queue/system views (and the no-job 400s the tutorial documents)."""
    checkpoints = await api.call("POST", "/api/training/checkpoints", data=_form(job_id=job_id))
    system = await api.call("GET", "/api/system/status?include_allocation=true")
    check("gpu_allocation" in system, "allocation included", system)
    stats = await api.call("GET", "/api/queue/stats")
    check("local" in stats, "queue stats include local", stats)
    await api.call("POST", "/api/training/validation/run", expect=(400,))
    return checkpoints


async def run_active(api: Api, output_dir: str) -> dict[str, Any]:
    """Steps 5-7 and the wrap-up for the active environment: job id, final status, output dir, checkpoints."""
    job_id = await validate_and_start(api)
    api.log(f"started job {job_id}")
    status = await follow(api, job_id)
    checkpoints = await finish(api, job_id)
    return {"job_id": job_id, "status": status, "output_dir": output_dir, "checkpoints": checkpoints["checkpoints"]}


PIXART_OVERRIDES = {  # the tutorial's step 3, scaled to the tiny model on CPU
    "--train_batch_size": 2, "--gradient_accumulation_steps": 2, "--learning_rate": 1e-3,
    "--optimizer": "adamw", "--lr_scheduler": "cosine", "--lr_warmup_steps": 5, "--max_train_steps": 60,
    "--num_train_epochs": 0, "--validation_prompt": "a red square on a blue background",
    "--validation_guidance": 3.8, "--validation_resolution": "64x64", "--validation_num_inference_steps": 4,
    "--seed": 1337, "--resume_from_checkpoint": "latest", "--report_to": "none",
    "--checkpointing_steps": 20, "--checkpoints_total_limit": 4, "--validation_seed": 12345,
}


def pixart_dataloader(images: str, cache: str) -> list[dict[str, Any]]:
    return [
        {"id": "pixart-camera", "type": "local", "dataset_type": "image", "instance_data_dir": images,
         "caption_strategy": "textfile", "resolution": 64, "resolution_type": "pixel_area", "crop": True,
         "crop_style": "random", "crop_aspect": "square", "cache_dir_vae": f"{cache}/vae"},
        {"id": "pixart-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": f"{cache}/text", "write_batch_size": 128},
    ]


async def pixart_example(api: Api, home: str, steps: int = 60, name: str = "pixart-api-demo") -> dict[str, Any]:
    """The tutorial's first worked example on the tiny PixArt Sigma (``home``: the server's state directory,
    where outputs and caches go): returns job id, final status, output dir and checkpoints."""
    images = await upload_demo_images(api, "pixart-upload", count=16)
    overrides = {**PIXART_OVERRIDES, "--max_train_steps": steps,
                 "--output_dir": f"{home}/output/{name}"}
    create = {"model_family": "pixart_sigma", "model_flavour": "tiny", "model_type": "full",
              "description": "PixArt tiny API-driven training"}
    dataloader = pixart_dataloader(images, f"{home}/cache/{name}")
    await create_environment(api, name, create, overrides, dataloader, ["pixart", "api"])
    return await run_active(api, overrides["--output_dir"])


KONTEXT_OVERRIDES = {  # the tutorial's Kontext step 3, scaled to the tiny-kontext model on CPU
    "--train_batch_size": 1, "--gradient_accumulation_steps": 2, "--learning_rate": 0.003,
    "--optimizer": "optimi-lion", "--lr_scheduler": "cosine", "--lr_warmup_steps": 3, "--max_train_steps": 30,
    "--num_train_epochs": 0, "--validation_prompt": "make the square blue", "--validation_guidance": 2.5,
    "--validation_resolution": "64x64", "--validation_num_inference_steps": 2, "--seed": 777,
    "--resume_from_checkpoint": "latest", "--base_model_precision": "int8-quanto", "--dataloader_prefetch": True,
    "--report_to": "wandb", "--lora_rank": 16, "--lora_dropout": 0.05,
    "--conditioning_multidataset_sampling": "combined", "--clip_skip": 2, "--checkpointing_steps": 10,
}


def kontext_dataloader(edit: str, reference: str, cache: str) -> list[dict[str, Any]]:
    """The tutorial's paired dataloader (edit targets + ``reference_strict`` conditioning + text embeds)."""
    return [
        {"id": "kontext-edit", "type": "local", "dataset_type": "image", "instance_data_dir": edit,
         "conditioning_data": ["kontext-reference"], "resolution": 64, "resolution_type": "pixel_area",
         "caption_strategy": "textfile", "minimum_image_size": 32, "maximum_image_size": 128,
         "target_downsample_size": 64, "cache_dir_vae": f"{cache}/vae/edit", "crop": True, "crop_style": "random",
         "crop_aspect": "square"},
        {"id": "kontext-reference", "type": "local", "dataset_type": "conditioning",
         "instance_data_dir": reference, "conditioning_type": "reference_strict", "resolution": 64,
         "resolution_type": "pixel_area", "cache_dir_vae": f"{cache}/vae/reference"},
        {"id": "kontext-text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": f"{cache}/text"},
    ]


async def upload_pairs(api: Api, count: int = 8) -> tuple[str, str]:
    """Edit targets (with instructions) as a zip into ``kontext-edit``, their references as files into
    ``kontext-reference`` (same file names): returns both folders' server paths."""
    from simpletuner_core.demo_data import write_demo_pairs

    edit, reference = await make_folder(api, "kontext-edit"), await make_folder(api, "kontext-reference")
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_pairs(Path(tmp) / "edit", Path(tmp) / "reference", count=count, size=64)
        result = await upload_zip(api, edit, sorted((Path(tmp) / "edit").iterdir()))
        check(result["files_extracted"] == 2 * count, "edit images and instructions extracted", result)
        result = await upload_files(api, reference, sorted((Path(tmp) / "reference").iterdir()), field="files")
        check(result["files_uploaded"] == count, "references uploaded", result)
    return edit, reference


async def kontext_example(api: Api, home: str, steps: int = 30, name: str = "kontext-api-demo") -> dict[str, Any]:
    """The tutorial's second worked example (Flux Kontext LyCORIS LoRA) on ``tiny-kontext``."""
    edit, reference = await upload_pairs(api)
    overrides = {**KONTEXT_OVERRIDES, "--max_train_steps": steps, "--validation_steps": steps,
                 "--output_dir": f"{home}/output/{name}"}
    create = {"model_family": "flux", "model_flavour": "tiny-kontext", "model_type": "lora", "lora_type": "lycoris",
              "description": "Flux Kontext LoRA via API"}
    dataloader = kontext_dataloader(edit, reference, f"{home}/cache/{name}")
    await create_environment(api, name, create, overrides, dataloader, ["flux", "kontext", "api"])
    return await run_active(api, overrides["--output_dir"])
