"""SimpleTuner's config keys over HTTP: refused with the reason, typed, or named in a warning; never a 5xx."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from simpletuner_core.config.environments import create_environment, save_environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import call, needs_pixart, serve_as_admin

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from conftest import tiny_config


@needs_pixart
def test_simpletuner_keys_over_http(tmp_path: Path, tiny_pixart_dir: Path, demo_images: Path) -> None:
    create_environment("st", model_family="pixart_sigma", home=tmp_path)
    save_environment("st", tiny_config(tmp_path, tiny_pixart_dir, demo_images), home=tmp_path)

    async def put(client: TestClient, keys: dict[str, Any]) -> tuple[int, Any]:
        status, body, _ = await call(client, "PUT", "/api/configs/st?mode=merge", json={"config": keys})
        return status, body

    async def scenario(client: TestClient) -> None:
        status, body = await put(client, {"--controlnet": True})
        assert status == 422, body
        assert body["error"]["errors"] == [{"path": "controlnet", "message": "ControlNet training is not supported "
                                            "here", "did_you_mean": None}]
        status, body = await put(client, {"--controlnet": "banana", "--ideogram_schedule_mu": "abc"})
        assert status == 422 and {e["path"] for e in body["error"]["errors"]} == {"controlnet",
                                                                                "ideogram_schedule_mu"}, body
        status, body = await put(client, {"--controlnet": False, "--ideogram_schedule_mu": 0.5,
                                          "--checkpointing_steps": 7, "__active_tab__": "model"})
        assert status == 200, body
        assert (await call(client, "POST", "/api/configs/st/activate"))[0] == 200
        status, body, _ = await call(client, "POST", "/api/training/validate", data={"--print_filenames": "true"})
        assert status == 200 and body["valid"], body
        assert "ideogram_schedule_mu has no effect here: applies only to SimpleTuner's ideogram model family" in \
            body["warnings"]
        assert any(w.startswith("print_filenames has no effect here") for w in body["warnings"])
        status, shown, _ = await call(client, "GET", "/api/configs/st/effective")
        assert shown["config"]["checkpoint_step_interval"] == {"value": 7, "source": "alias:checkpointing_steps"}
        status, body, _ = await call(client, "POST", "/api/training/validate", data={"--fsdp_enable": "true"})
        assert status == 422 and body["errors"][0]["path"] == "fsdp_enable", body

    serve_as_admin(tmp_path, scenario)
