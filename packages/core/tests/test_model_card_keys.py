"""model_card_note and model_card_private through huggingface_hub's real client and the loopback Hub API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.hooks.card import model_card

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hub_publish import FakeHubServer

FINISH = """
import json, sys
from pathlib import Path
from simpletuner_core.config import validate
from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.events.log import JsonlEventLog
from simpletuner_core.hooks.job import JobHooks
from simpletuner_core.plugins import get_registry

out = Path(sys.argv[1])
cfg = validate({"model_family": "pixart_sigma", "model_flavour": "tiny", "output_dir": str(out),
                "data_backend_config": "x.json", "max_train_steps": 2, "push_to_hub": True,
                "hub_model_id": "me/noted", **json.loads(sys.argv[2])})
hooks = JobHooks(cfg, "job-1", EventEmitter("job-1", JsonlEventLog(out.parent / "events.jsonl")), get_registry())
print(json.dumps(hooks.finished(out, 2, [1.0, 0.5], [1e-3, 1e-3])))
"""


def publish(tmp_path: Path, keys: dict[str, Any]) -> FakeHubServer:
    out = tmp_path / "output"
    (out / "transformer").mkdir(parents=True)
    (out / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"w")
    hub = FakeHubServer()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_test_token", HF_HOME=str(tmp_path / "hf"))
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(FINISH), str(out), json.dumps(keys)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert [r["ok"] for r in json.loads(proc.stdout.strip().splitlines()[-1])] == [True]
    finally:
        hub.stop()
    return hub


@pytest.mark.parametrize(("keys", "visibility"), [
    ({"model_card_private": False}, "public"),
    ({"model_card_private": True}, "private"),
    ({"hub_private": False}, "public"),  # the old name migrates
])
def test_the_repo_is_created_with_model_card_private(tmp_path: Path, keys: dict[str, Any], visibility: str) -> None:
    hub = publish(tmp_path, keys)
    assert [r.get("visibility", "private" if r.get("private") else "public") for r in hub.repos] == [visibility]


def test_the_uploaded_card_starts_with_model_card_note(tmp_path: Path) -> None:
    note = "**Research preview.** Trained on synthetic shapes; not for production."
    hub = publish(tmp_path, {"model_card_note": note})
    card = hub.commits[0]["files"]["README.md"].decode()
    header_end = card.index("\n---\n", 4) + len("\n---\n")
    assert card.startswith("---\n") and card[header_end:].lstrip("\n").startswith(note + "\n")


def test_no_note_no_extra_text(tmp_path: Path) -> None:
    card = model_card({"model_family": "pixart_sigma", "model_type": "full"}, tmp_path / "run", job_id="j", step=1)
    assert card.split("---\n", 2)[2].lstrip("\n").startswith("# run\n")
