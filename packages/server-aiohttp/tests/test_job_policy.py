"""Non-admin jobs: paths only under the allowed roots, no host-side hooks; admins unrestricted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from simpletuner_core.jobs.store import SQLiteStore
from simpletuner_server.api.training.policy import PolicyError, check_job
from simpletuner_server.settings import ServerSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import as_user, call, needs_pixart, serve_as_admin


def test_check_job_paths_hooks_and_roots(tmp_path: Path) -> None:
    home, extra, outside = tmp_path / "home", tmp_path / "extra", tmp_path / "outside"
    for d in (home, extra, outside):
        d.mkdir()
    (home / "link").symlink_to(outside)
    roots = [home, extra]

    def refused(config: dict[str, object], can_hooks: bool = False) -> str | None:
        try:
            check_job(config, is_admin=False, can_hooks=can_hooks, home=home, roots=roots)
        except PolicyError as exc:
            return exc.key
        return None

    assert refused({"--output_dir": "output/x", "--pretrained_model_name_or_path": "org/model"}) is None
    assert refused({"--output_dir": str(extra / "x")}) is None
    assert refused({"--output_dir": str(outside / "x")}) == "output_dir"
    assert refused({"--output_dir": "../outside/x"}) == "output_dir"
    assert refused({"--output_dir": "link/x"}) == "output_dir"  # symlinks are followed
    assert refused({"--pretrained_model_name_or_path": str(outside)}) == "pretrained_model_name_or_path"
    assert refused({"--webhook_config": str(outside / "hooks.json")}) == "webhook_config"
    assert refused({"--webhook_config": '[{"webhook_type": "raw", "callback_url": "http://x"}]'}) is None
    assert refused({"--post_checkpoint_script": "echo hi"}) == "post_checkpoint_script"
    assert refused({"--post_checkpoint_script": "echo hi"}, can_hooks=True) is None
    assert refused({"--validation_method": "external-script"}) == "validation_method"
    assert refused({"--push_to_hub": True}) == "push_to_hub"
    dataloader = home / "config" / "e" / "multidatabackend.json"
    dataloader.parent.mkdir(parents=True)
    dataloader.write_text(json.dumps([{"id": "a", "instance_data_dir": "../../../outside"},
                                      {"id": "t", "cache_dir": "cache"}]))
    assert refused({"--data_backend_config": "e/multidatabackend.json"}) == "dataloader[0].instance_data_dir"
    check_job({"--output_dir": str(outside), "--post_upload_script": "x"}, is_admin=True, can_hooks=True,
              home=home, roots=roots)  # admins: anything


async def active_example_env(session: object) -> None:
    """The tiny-pixart example as the session's own, active environment ``rita-env``."""
    status, env, _ = await call(session, "POST", "/api/configs/environments",
                                json={"name": "rita-env", "example": "tiny-pixart"})
    assert status == 201, env
    assert (await call(session, "POST", "/api/configs/rita-env/activate"))[0] == 200


@needs_pixart
def test_researcher_jobs_are_confined_admins_are_not(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    settings = ServerSettings(home=tmp_path / "home", allowed_roots=(tmp_path / "shared-roots",))

    async def scenario(client: TestClient) -> None:
        async with as_user(client, "rita", ["researcher"]) as rita:
            await active_example_env(rita)
            status, body, _ = await call(rita, "POST", "/api/training/validate", data={"--num_train_epochs": "0"})
            assert status == 200 and body["valid"], body  # the example stays under the state directory

            for override, key in (({"--output_dir": str(outside)}, "output_dir"),
                                  ({"--post_checkpoint_script": "touch /tmp/x"}, "post_checkpoint_script")):
                status, body, _ = await call(rita, "POST", "/api/training/start", json=override)
                assert status == 403 and body["error"]["message"].startswith(f"{key}:"), body
                status, body, _ = await call(rita, "POST", "/api/training/validate", json=override)
                assert status == 422 and body["errors"][0]["path"] == key, body
            assert "allowed roots" in (await call(rita, "POST", "/api/training/start",
                                                  json={"--output_dir": str(outside)}))[1]["error"]["message"]
            status, _, _ = await call(rita, "PUT", "/api/configs/rita-env?mode=merge",
                                      json={"config": {"--output_dir": str(outside)}})
            assert status == 200  # saving is fine; running it is not
            status, body, _ = await call(rita, "POST", "/api/queue/submit", json={"config_name": "rita-env"})
            assert status == 403 and "output_dir" in body["error"]["message"]
            status, _, _ = await call(rita, "POST", "/api/training/validate",
                                      json={"--output_dir": str(tmp_path / "shared-roots" / "out")})
            assert status == 200  # an operator-listed root
        # the admin may use any path
        assert (await call(client, "POST", "/api/configs/rita-env/activate"))[0] == 200
        status, body, _ = await call(client, "POST", "/api/training/validate", json={"--output_dir": str(outside)})
        assert status == 200 and body["valid"], body

    serve_as_admin(tmp_path, scenario, settings)


def _hook(url: str) -> str:
    return json.dumps([{"webhook_type": "raw", "callback_url": url}])


def test_check_job_refuses_private_webhook_hosts_unless_allowed(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIMPLETUNER_WEBHOOK_ALLOW", raising=False)

    def refusal(url: str, is_admin: bool = False) -> str | None:
        try:
            check_job({"--webhook_config": _hook(url)}, is_admin=is_admin, can_hooks=False, home=tmp_path,
                      roots=[tmp_path])
        except PolicyError as exc:
            return str(exc)
        return None

    for url, kind in (("http://127.0.0.1:9/hook", "loopback"), ("http://localhost:9/x", "loopback"),
                      ("http://169.254.169.254/latest/meta-data", "link-local"), ("https://10.0.0.7/h", "private"),
                      ("http://192.168.1.20/h", "private"), ("http://[fd00::1]/h", "private"),
                      ("http://[::1]:8001/h", "loopback"), ("http://0.0.0.0/h", "unspecified"),
                      ("http://224.0.0.1/h", "multicast")):
        message = refusal(url)
        assert message is not None and message.startswith("webhook_config: callback_url"), url
        assert f"a {kind} address" in message and "SIMPLETUNER_WEBHOOK_ALLOW" in message, message
    assert "/latest/meta-data" not in (refusal("http://169.254.169.254/latest/meta-data") or "")  # no paths shown
    assert refusal("http://127.0.0.1:9/hook", is_admin=True) is None  # admins: anything
    assert refusal("https://93.184.215.14/hook") is None  # a public address
    monkeypatch.setenv("SIMPLETUNER_WEBHOOK_ALLOW", "127.0.0.0/8, localhost, fd00::/8")
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/x", "http://[fd00::1]/h"):
        assert refusal(url) is None, url
    assert refusal("http://10.0.0.7/h") is not None  # only what is listed
    monkeypatch.setenv("SIMPLETUNER_WEBHOOK_ALLOW", "10.0.0.0/33")
    assert "is not a host name, an IP address or a CIDR network" in (refusal("http://10.0.0.7/h") or "")


def _job_config(home: Path, job_id: str) -> dict[str, object]:
    store = SQLiteStore(home / "state.db")
    try:
        job = store.get_job(job_id)
        assert job is not None
        return job.config
    finally:
        store.close()


@needs_pixart
def test_researcher_webhooks_stay_off_private_addresses_admins_keep_loopback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a real server: a researcher's loopback webhook is refused at validate and start (naming
    webhook_config) until an admin lists it; the job then carries webhook_restricted, so the sink checks
    again at send time. An admin's job reaches loopback and is not restricted."""
    monkeypatch.delenv("SIMPLETUNER_WEBHOOK_ALLOW", raising=False)
    home = tmp_path / "home"
    loopback = {"--webhook_config": _hook("http://127.0.0.1:9/hook")}

    async def cancel(client: object, job_id: str) -> None:
        status, body, _ = await call(client, "POST", "/api/training/cancel", json={"job_id": job_id})
        assert status == 200, body

    async def scenario(client: TestClient) -> None:
        async with as_user(client, "rita", ["researcher"]) as rita:
            await active_example_env(rita)
            status, body, _ = await call(rita, "POST", "/api/training/start", json=loopback)
            assert status == 403 and body["error"]["message"].startswith("webhook_config: callback_url"), body
            assert "loopback" in body["error"]["message"]
            status, body, _ = await call(rita, "POST", "/api/training/validate", json=loopback)
            assert status == 422 and body["errors"][0]["path"] == "webhook_config", body
            status, body, _ = await call(rita, "POST", "/api/training/start",
                                         json={"--webhook_config": _hook("http://localhost:9/hook")})
            assert status == 403 and "resolves to" in body["error"]["message"], body

            monkeypatch.setenv("SIMPLETUNER_WEBHOOK_ALLOW", "127.0.0.1")  # the operator's exception
            status, body, _ = await call(rita, "POST", "/api/training/start", json=loopback)
            assert status in (200, 202), body
            await cancel(rita, body["job_id"])
            assert _job_config(home, body["job_id"])["--webhook_restricted"] is True
            status, body, _ = await call(rita, "POST", "/api/training/start",
                                         json={**loopback, "--webhook_restricted": False})
            assert status in (200, 202), body
            await cancel(rita, body["job_id"])
            assert _job_config(home, body["job_id"])["--webhook_restricted"] is True  # cannot be switched off
        monkeypatch.delenv("SIMPLETUNER_WEBHOOK_ALLOW")
        assert (await call(client, "POST", "/api/configs/rita-env/activate"))[0] == 200
        status, body, _ = await call(client, "POST", "/api/training/start", json=loopback)
        assert status in (200, 202), body
        await cancel(client, body["job_id"])
        assert _job_config(home, body["job_id"])["--webhook_restricted"] is False

    serve_as_admin(home, scenario)
