"""``/api/configs`` over real sockets: the tutorial's environment sequence, then bad input and permissions.

The client is aiohttp's TestClient logged in as the first admin (its jar keeps the session cookie).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import as_user, call, needs_pixart, serve_as_admin

VIEWER = {"email": "vi@example.com", "username": "victor", "password": "only-looking", "level_names": ["viewer"]}
NAME = "pixart-api-demo"
CREATE = {"name": NAME, "model_family": "pixart_sigma", "model_flavour": "900M-1024-v0.6", "model_type": "full",
          "description": "PixArt Sigma via the API", "tags": ["pixart"]}


def tutorial_body(home: Path) -> dict[str, Any]:
    return {"name": NAME, "description": "PixArt Sigma 900M, cosine schedule", "tags": ["pixart", "tutorial"],
            "config": {
                "--model_family": "pixart_sigma", "--model_flavour": "900M-1024-v0.6", "--model_type": "full",
                "--output_dir": str(home / "output" / NAME), "--train_batch_size": 2,
                "--learning_rate": 0.0001, "--lr_scheduler": "cosine", "--max_train_steps": 1800,
                "--num_train_epochs": 0, "--validation_resolution": "1024x1024",
                "--data_backend_config": f"{NAME}/multidatabackend.json"}}


@needs_pixart
def test_tutorial_sequence(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> None:
        status, body, _ = await call(client, "GET", "/api/configs/")
        assert (status, body) == (200, {"configs": [], "count": 0})

        status, body, _ = await call(client, "POST", "/api/configs/environments", json=CREATE)
        assert status == 201, body
        assert set(body) == {"name", "config", "dataloader", "metadata"}
        assert body["config"]["--model_family"] == "pixart_sigma"
        assert body["config"]["--model_flavour"] == "900M-1024-v0.6"
        assert body["metadata"]["description"] == CREATE["description"]
        assert [d["id"] for d in body["dataloader"]] == [f"{NAME}-images", f"{NAME}-text-embeds"]
        assert (tmp_path / "config" / NAME / "config.json").is_file()  # under settings.home, not the default

        status, body, _ = await call(client, "GET", f"/api/configs/{NAME}")
        assert status == 200 and body["name"] == NAME and body["config"]["--model_type"] == "full"

        # PUT replaces the stored config with the tutorial's body; rules come back as warnings only.
        update = tutorial_body(tmp_path)
        status, body, _ = await call(client, "PUT", f"/api/configs/{NAME}", json=update)
        assert status == 200, body
        assert body["config"]["--learning_rate"] == 0.0001 and body["config"]["--train_batch_size"] == 2
        assert body["config"]["--lr_scheduler"] == "cosine" and body["config"]["--max_train_steps"] == 1800
        assert "--config_version" in body["config"]
        assert body["metadata"]["tags"] == ["pixart", "tutorial"]
        assert isinstance(body["warnings"], list) and all(isinstance(w, str) for w in body["warnings"])
        saved = json.loads((tmp_path / "config" / NAME / "config.json").read_text())
        assert saved["--validation_resolution"] == "1024x1024"

        # Merge overlays keys; a semantic problem is saved but reported.
        status, body, _ = await call(client, "PUT", f"/api/configs/{NAME}?mode=merge",
                                     json={"config": {"--num_train_epochs": 3}})
        assert status == 200, body
        assert body["config"]["--num_train_epochs"] == 3 and body["config"]["--learning_rate"] == 0.0001
        assert any("max_train_steps" in w for w in body["warnings"])
        status, body, _ = await call(client, "PUT", f"/api/configs/{NAME}",
                                     json={"merge": True, "config": {"--num_train_epochs": 0}})
        assert status == 200 and body["config"]["--max_train_steps"] == 1800

        status, body, _ = await call(client, "GET", "/api/configs/active")
        assert (status, body) == (200, {"active": None, "config": None})
        status, body, _ = await call(client, "POST", f"/api/configs/{NAME}/activate")
        assert (status, body) == (200, {"active": NAME})
        status, body, _ = await call(client, "GET", "/api/configs/active")
        assert status == 200 and body["active"] == NAME and body["config"]["--max_train_steps"] == 1800

        status, body, resp = await call(client, "GET", f"/api/configs/{NAME}/export")
        assert status == 200
        assert resp.headers["Content-Disposition"] == f'attachment; filename="{NAME}.json"'
        assert body["format"] == "simpletuner-environment" and body["name"] == NAME
        assert body["config"]["--lr_scheduler"] == "cosine" and len(body["dataloader"]) == 2

        # Dataloader: a valid list is saved as given; a bad one is a 422 with paths; no body regenerates.
        images = {**body["dataloader"][0], "resolution": 512}
        new = [images, body["dataloader"][1]]
        status, body, _ = await call(client, "POST", f"/api/configs/{NAME}/dataloader", json=new)
        assert (status, body) == (200, {"name": NAME, "dataloader": new})
        status, body, _ = await call(client, "POST", f"/api/configs/{NAME}/dataloader",
                                     json=[{**images, "crop_style": "middle"}])
        assert status == 422 and any(e["path"].startswith("[0]") for e in body["error"]["errors"])
        status, body, _ = await call(client, "POST", f"/api/configs/{NAME}/dataloader")
        assert status == 200 and body["dataloader"][0]["resolution"] == 1024

        for path in ("/api/configs", "/api/configs/?config_type=model"):
            status, body, _ = await call(client, "GET", path)
            assert status == 200 and body["count"] == 1
            entry = body["configs"][0]
            assert entry["name"] == NAME and entry["tags"] == ["pixart", "tutorial"]
            assert entry["description"] == "PixArt Sigma 900M, cosine schedule"
            assert (entry["model_family"], entry["model_flavour"], entry["model_type"]) == (
                "pixart_sigma", "900M-1024-v0.6", "full")
            assert entry["updated_at"]

        status, body, _ = await call(client, "DELETE", f"/api/configs/{NAME}")
        assert (status, body) == (204, None)
        assert not (tmp_path / "config" / NAME).exists()
        status, body, _ = await call(client, "GET", "/api/configs/active")
        assert body == {"active": None, "config": None}
        status, body, _ = await call(client, "GET", "/api/configs/")
        assert body == {"configs": [], "count": 0}

    serve_as_admin(tmp_path, scenario)


def test_bad_input_and_permissions(tmp_path: Path) -> None:
    pixart = "pixart_sigma" in get_registry().families

    async def scenario(client: TestClient) -> None:
        for bad in ("../x", "a.b", ""):
            status, body, _ = await call(client, "POST", "/api/configs/environments",
                                         json={**CREATE, "name": bad})
            assert status == 422, (bad, body)
            assert body["error"]["errors"][0]["path"] == "name"
        status, body, _ = await call(client, "GET", "/api/configs/a.b")
        assert status == 422 and body["error"]["errors"][0]["path"] == "name"
        status, body, _ = await call(client, "PUT", "/api/configs/a.b", json={"config": {}})
        assert status == 422

        status, body, _ = await call(client, "POST", "/api/configs/environments",
                                     json={**CREATE, "model_family": "pixart_sigmaa"})
        assert status == 422
        error = body["error"]["errors"][0]
        assert error["path"] == "model_family" and "unknown model family" in error["message"]
        if pixart:
            assert error["did_you_mean"] == "pixart_sigma"
        status, body, _ = await call(client, "GET", "/api/configs/nope")
        assert status == 404 and "'nope'" in body["error"]["message"]
        assert (await call(client, "DELETE", "/api/configs/nope"))[0] == 404
        assert (await call(client, "POST", "/api/configs/nope/activate"))[0] == 404
        assert (await call(client, "GET", "/api/configs?config_type=lora"))[0] == 422
        if not pixart:
            return

        status, body, _ = await call(client, "POST", "/api/configs/environments",
                                     json={**CREATE, "model_flavour": "900M"})
        assert status == 422 and body["error"]["errors"][0]["path"] == "model_flavour"
        assert (await call(client, "POST", "/api/configs/environments", json=CREATE))[0] == 201
        status, body, _ = await call(client, "POST", "/api/configs/environments", json=CREATE)
        assert status == 409 and NAME in body["error"]["message"]

        # Unknown key: 422 naming it with a suggestion, and nothing written.
        before = (tmp_path / "config" / NAME / "config.json").read_text()
        status, body, _ = await call(client, "PUT", f"/api/configs/{NAME}",
                                     json={"config": {"--learning_rat": 0.001, "--train_batch_size": 2}})
        assert status == 422
        assert body["error"]["errors"] == [
            {"path": "learning_rat", "message": "unknown config key", "did_you_mean": "learning_rate"}]
        assert (tmp_path / "config" / NAME / "config.json").read_text() == before
        status, body, _ = await call(client, "PUT", f"/api/configs/{NAME}", json={"name": "other", "config": {}})
        assert status == 422 and body["error"]["errors"][0]["path"] == "name"
        assert (await call(client, "PUT", f"/api/configs/{NAME}?mode=append", json={"config": {}}))[0] == 422

        # A viewer reads but cannot write; nobody unauthenticated gets anything.
        assert (await call(client, "POST", "/api/users", json=VIEWER))[0] == 201
        base = str(client.make_url("/"))
        async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as viewer:
            login = {"username": VIEWER["username"], "password": VIEWER["password"]}
            assert (await call(viewer, "POST", "/api/cloud/auth/login", json=login))[0] == 200
            assert (await call(viewer, "GET", f"/api/configs/{NAME}"))[0] == 200
            status, body, _ = await call(viewer, "PUT", f"/api/configs/{NAME}", json={"config": {}})
            assert status == 403 and body["error"]["message"] == "Permission denied: config.edit.own"
            assert (await call(viewer, "DELETE", f"/api/configs/{NAME}"))[0] == 403
            assert (await call(viewer, "POST", "/api/configs/environments",
                               json={**CREATE, "name": "mine"}))[0] == 403
        async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.DummyCookieJar()) as anonymous:
            for method, path in (("GET", "/api/configs/"), ("GET", f"/api/configs/{NAME}"),
                                 ("PUT", f"/api/configs/{NAME}"), ("GET", "/api/configs/active")):
                status, _, resp = await call(anonymous, method, path)
                assert status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"

    serve_as_admin(tmp_path, scenario)


@needs_pixart
def test_environment_ownership_and_per_user_active(tmp_path: Path) -> None:
    """Only an environment's creator (or an admin) may change or delete it; each user has their own active one."""

    async def scenario(client: TestClient) -> None:
        env = {"name": "ada-env", "model_family": "pixart_sigma", "model_flavour": "tiny"}
        async with as_user(client, "ada", ["researcher"]) as ada, as_user(client, "bob", ["researcher"]) as bob:
            status, body, _ = await call(ada, "POST", "/api/configs/environments", json=env)
            assert status == 201 and body["metadata"]["owner"] == "ada"
            for method, path, kw in (("PUT", "/api/configs/ada-env", {"json": {"config": {}}}),
                                     ("DELETE", "/api/configs/ada-env", {}),
                                     ("POST", "/api/configs/ada-env/dataloader", {})):
                status, body, _ = await call(bob, method, path, **kw)
                assert status == 403 and "belongs to another user" in body["error"]["message"], (method, path)
            assert (await call(bob, "GET", "/api/configs/ada-env"))[0] == 200  # viewing and training are shared
            assert (await call(bob, "POST", "/api/configs/ada-env/activate"))[0] == 200
            assert (await call(ada, "GET", "/api/configs/active"))[1]["active"] is None  # bob's choice only
            assert (await call(bob, "GET", "/api/configs/active"))[1]["active"] == "ada-env"
            # activating is for training: a key scoped to viewing and submitting may, without edit rights
            status, made, _ = await call(bob, "POST", "/api/cloud/auth/api-keys",
                                         json={"name": "train-only", "scoped_permissions":
                                               ["api.access", "config.view", "job.submit"]})
            assert status == 201, made
            train_only = {"X-API-Key": made["key"]}
            assert (await call(client, "POST", "/api/configs/ada-env/activate", headers=train_only))[0] == 200
            status, body, _ = await call(ada, "PUT", "/api/configs/ada-env?mode=merge",
                                         json={"config": {"--learning_rate": 0.001}})
            assert status == 200 and body["metadata"]["owner"] == "ada"  # edits keep the owner
            hook = '[{"webhook_type": "raw", "callback_url": "https://hooks.example/T0KEN", "secret": "s3cret"}]'
            status, _, _ = await call(ada, "PUT", "/api/configs/ada-env?mode=merge",
                                      json={"config": {"--webhook_config": hook}})
            assert status == 200
            assert (await call(ada, "GET", "/api/configs/ada-env"))[1]["config"]["--webhook_config"] == hook
            for path in ("/api/configs/ada-env", "/api/configs/ada-env/export", "/api/configs/active"):
                text = json.dumps((await call(bob, "GET", path))[1])
                assert "s3cret" not in text and "T0KEN" not in text and "redacted" in text, path
        async with as_user(client, "vera", ["viewer"]) as vera:
            status, body, _ = await call(vera, "POST", "/api/configs/ada-env/activate")
            assert status == 403 and "job.submit" in body["error"]["message"]  # viewers do not train
        assert "s3cret" in json.dumps((await call(client, "GET", "/api/configs/ada-env"))[1])  # admins see all
        status, _, _ = await call(client, "PUT", "/api/configs/ada-env?mode=merge",
                                  json={"config": {"--seed": 3}})
        assert status == 200  # admins may change anyone's
        assert (await call(client, "DELETE", "/api/configs/ada-env"))[0] == 204

    serve_as_admin(tmp_path, scenario)
