"""A tiny training job in its own trainer process, watched only through webhooks on a loopback receiver.

The receiver must see the job's story exactly as the event log holds it: lifecycle in order, progress with ETA,
checkpoints, previews and final images as decodable PNGs, hook scripts and uploads, every request signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "webhooks" / "tests"))
from jobs_helpers import events_of, final, make_env, runner
from webhook_receiver import Receiver

from simpletuner_core.jobs import models as m
from simpletuner_webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER

pytestmark = pytest.mark.slow

RECORD = """
import json, sys
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps(sys.argv[2:]) + "\\n")
"""


def png(payload: dict[str, Any]) -> Image.Image:
    (image,) = payload["images"]
    assert image["mime_type"] == "image/png" and image["src"].startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))


def test_a_receiver_records_the_whole_run(tmp_path: Path, tiny_pixart_dir: Path, demo_images: Path,
                                          tiny_taesd_dir: Path) -> None:
    receiver = Receiver()
    try:
        script = tmp_path / "record.py"
        script.write_text(RECORD)
        hook = {"webhook_type": "raw", "callback_url": receiver.url, "secret": "shared-secret"}
        env = make_env(tmp_path, tiny_pixart_dir, demo_images, max_train_steps=6, checkpoint_step_interval=3,
                       validation_steps=3, validation_prompt="a red square", validation_resolution="64x64",
                       validation_disable_unconditional=True,
                       validation_num_inference_steps=3, validation_preview=True, validation_preview_steps=2,
                       validation_preview_decoder=str(tiny_taesd_dir), webhook_config=json.dumps([hook]),
                       post_checkpoint_script=f"{sys.executable} {script} {tmp_path / 'ck.jsonl'} "
                                              "{local_checkpoint_path} {global_step}",
                       publish_local_dir=str(tmp_path / "published"), push_checkpoints_to_hub=True,
                       post_upload_script=f"{sys.executable} {script} {tmp_path / 'up.jsonl'} "
                                          "{remote_checkpoint_path} {global_step}")
        run, store = runner(tmp_path, devices=[])
        job_id = run.submit(env=env).job_id
        assert final(store, job_id, timeout=240).state == m.COMPLETED
        # delivery is asynchronous and ordered: once job.completed is in, everything before it is too
        assert receiver.wait_for_type("job.completed")
        posts = receiver.posts
        stored = {e.id: e for e in events_of(store, job_id)}
        kinds = [p["event_type"] for p in posts]

        assert kinds[0] == "job.started" and kinds[-1] == "job.completed"
        assert all(p["message_type"] == p["type"] and p["headline"] == p["title"] for p in posts)  # SimpleTuner's
        ids = [int(p["id"]) for p in posts]
        assert ids == sorted(ids) and set(ids) <= set(stored)
        assert set(stored) - set(ids) == {e.id for e in stored.values() if e.type == "job.queued"}  # runner's
        assert all(p["job_id"] == job_id and p["version"] == 1 and p["timestamp"] for p in posts)
        stages = [(p["stage"]["key"], p["stage"]["status"]) for p in posts if p["type"] == "lifecycle.stage"]
        keys = ["init_data_backend", "init_load_base_model", "init_vae_cache", "init_text_embed_cache",
                "init_prepare_models", "checkpoint_save", "final_validation", "model_save", "training_complete"]
        assert stages == [(key, status) for key in keys for status in ("running", "completed")]
        assert [p["progress"]["current"] for p in posts if p["type"] == "training.progress"] == list(range(1, 7))

        status = [p["data"] for p in posts if p["event_type"] == "training.status"]
        assert [s["step"] for s in status] == list(range(1, 7))
        assert all(s["total"] == 6 and {"percent", "rate", "eta_seconds", "loss", "lr"} <= set(s) for s in status)
        assert status[-1]["percent"] == 100.0 and status[-1]["eta_seconds"] == 0.0
        assert all(isinstance(s["eta_seconds"], float) for s in status[1:])

        checkpoints = [p["data"] for p in posts if p["event_type"] == "checkpoint.saved"]
        assert [c["step"] for c in checkpoints] == [3]
        ck = str(tmp_path / "output" / env / "checkpoint-3")
        assert checkpoints[0]["path"] == ck

        images = [p for p in posts if p["event_type"] == "validation.image"]
        previews = [p for p in images if p["data"]["validation_type"] == "intermediary"]
        finals = [p for p in images if p["data"]["validation_type"] == "final"]
        assert [(p["data"]["global_step"], p["data"]["step_label"]) for p in previews] == [
            (3, "1/3"), (3, "3/3"), (6, "1/3"), (6, "3/3")]
        assert [p["data"]["step"] for p in finals] == [3, 6]
        for p in images:
            assert p["title"].startswith("Validation (step ") and p["body"] == "a red square"
            assert "images" not in p["data"] and png(p).size == (64, 64)

        published = [p["data"] for p in posts if p["event_type"] == "publish.completed"]
        assert [(d["publisher"], d["kind"], d["step"]) for d in published] == [
            ("local", "checkpoint", 3), ("local", "final", 6)]
        assert (tmp_path / "published" / "final" / "model_index.json").is_file()
        assert "## Training configuration" in (tmp_path / "published" / "final" / "README.md").read_text()
        assert not list((tmp_path / "published" / "final").glob("checkpoint-*"))
        hooks = [p["data"] for p in posts if p["event_type"] == "hook.script"]
        assert sorted(h["hook"] for h in hooks) == ["post_checkpoint", "post_upload", "post_upload"]
        assert all(h["returncode"] == 0 for h in hooks)
        assert (tmp_path / "ck.jsonl").read_text().splitlines() == [json.dumps([ck, "3"])]
        uploads = [json.loads(line) for line in (tmp_path / "up.jsonl").read_text().splitlines()]
        assert uploads == [[str(tmp_path / "published" / "checkpoint-3"), "3"],
                           [str(tmp_path / "published" / "final"), "6"]]
        done = posts[-1]["data"]
        assert [r["remote"] for r in done["published"]] == [u[0] for u in uploads]
        assert (tmp_path / "output" / env / "training-plot.png").is_file()

        for request in receiver.requests:  # every delivery is signed over its exact bytes
            stamp = request["headers"][TIMESTAMP_HEADER]
            mac = hmac.new(b"shared-secret", stamp.encode() + b"." + request["raw"], hashlib.sha256).hexdigest()
            assert request["headers"][SIGNATURE_HEADER] == f"sha256={mac}"
    finally:
        receiver.stop()
