"""`simpletuner config show` and `GET /api/configs/{name}/effective`: every key, its value and where it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from simpletuner_core.config.environments import create_environment, save_environment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "server-aiohttp" / "tests"))
from server_helpers import as_user, call, needs_pixart, serve_as_admin

GIVEN = {"--model_family": "pixart_sigma", "--model_flavour": "tiny", "--output_dir": "/tmp/show-out",
         "data_backend_config": "/tmp/show-dl.json", "--max_train_steps": 5, "checkpointing_steps": 9,
         "--webhook_config": [{"webhook_type": "raw", "callback_url": "http://127.0.0.1:9/hook"}]}


def show(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIMPLETUNER_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "simpletuner_core.cli", "config", "show", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@needs_pixart
def test_cli_json_names_every_source(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(GIVEN))
    out = show(tmp_path, "--config", str(config), "--set", "learning_rate=0.5", "--json")
    assert out.returncode == 0, out.stderr
    table: dict[str, Any] = json.loads(out.stdout)
    assert table["max_train_steps"] == {"value": 5, "source": "file"}
    assert table["checkpoint_step_interval"] == {"value": 9, "source": "alias:checkpointing_steps"}
    assert table["learning_rate"] == {"value": 0.5, "source": "override"}
    assert table["validation_step_interval"] == {"value": 100, "source": "default"}
    assert "checkpointing_steps" not in table and all(set(e) == {"value", "source"} for e in table.values())
    text = show(tmp_path, "--config", str(config))
    line = next(ln for ln in text.stdout.splitlines() if ln.startswith("checkpoint_step_interval "))
    assert text.returncode == 0 and line.split() == ["checkpoint_step_interval", "9", "(alias:checkpointing_steps)"]


def test_cli_bad_config_is_a_one_line_reason(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**GIVEN, "--learning_rat": 1}))
    out = show(tmp_path, "--config", str(config), "--json")
    assert out.returncode != 0 and out.stdout == ""
    assert "learning_rat: unknown config key (did you mean 'learning_rate'?)" in out.stderr


@needs_pixart
def test_http_effective_config_with_sources_and_redaction(tmp_path: Path) -> None:
    create_environment("shown", model_family="pixart_sigma", model_flavour="tiny", home=tmp_path)
    save_environment("shown", GIVEN, home=tmp_path)

    async def scenario(client: Any) -> None:
        status, body, _ = await call(client, "GET", "/api/configs/shown/effective")
        assert status == 200, body
        assert body["name"] == "shown"
        assert body["config"]["checkpoint_step_interval"] == {"value": 9, "source": "alias:checkpointing_steps"}
        assert body["config"]["webhook_config"]["value"][0]["callback_url"].startswith("http://127.0.0.1")
        async with as_user(client, "vera", ["viewer"]) as viewer:
            status, seen, _ = await call(viewer, "GET", "/api/configs/shown/effective")
            assert status == 200 and seen["config"]["webhook_config"]["value"].startswith("<redacted")
            assert seen["config"]["max_train_steps"] == {"value": 5, "source": "file"}
        status, body, _ = await call(client, "GET", "/api/configs/missing/effective")
        assert status == 404, body
        save_environment("shown", {**GIVEN, "--lr_end": 0.5}, home=tmp_path)
        status, body, _ = await call(client, "GET", "/api/configs/shown/effective")
        assert status == 422 and body["error"]["errors"][0]["path"] == "lr_end", body
        status, spec, _ = await call(client, "GET", "/openapi.json")
        assert "/api/configs/{name}/effective" in spec["paths"]

    serve_as_admin(tmp_path, scenario)
