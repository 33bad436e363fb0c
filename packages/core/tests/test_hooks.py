"""Hook scripts, background publishing and the loss plot, with real subprocesses and files (no trainer)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from simpletuner_core.config import validate
from simpletuner_core.events.emitter import EventEmitter
from simpletuner_core.events.log import JsonlEventLog
from simpletuner_core.events.types import EVENT_TYPES
from simpletuner_core.hooks.publish import Publishing
from simpletuner_core.hooks.scripts import HookScriptError, HookScripts, context_values, render
from simpletuner_core.plot import PLOT_NAME, job_plot_path, plot_path, write_plot
from simpletuner_core.plugins import get_registry
from simpletuner_core.training.preview import preview_steps

ARGV_SCRIPT = """
import json, sys
with open(sys.argv[1], "w") as fh:
    json.dump(sys.argv[2:], fh)
print("wrote", len(sys.argv) - 2, "args")
"""

HANG_SCRIPT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(str(child.pid))
print("hanging", flush=True)
time.sleep(60)
"""

DETACHED_SCRIPT = """
import subprocess, sys, time
# A child in its own session (out of reach of the process-group kill) that inherits stdout and keeps it open.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
open(sys.argv[1], "w").write(str(child.pid))
print("started a detached child", flush=True)
if sys.argv[2] == "hang":
    time.sleep(60)
"""


def _kill_pid_in(path: Path) -> None:
    try:
        os.kill(int(path.read_text()), 9)
    except (OSError, ValueError):
        pass


def cfg(**extra: Any) -> Any:
    raw = {"model_family": "pixart_sigma", "model_flavour": "tiny", "output_dir": "/tmp/out",
           "data_backend_config": "/tmp/dl.json", "max_train_steps": 10, "tracker_project_name": "proj",
           "validation_guidance": 3.5, "model_type": "lora", "lora_type": "lycoris", **extra}
    return validate(raw, get_registry())


def emitter(tmp_path: Path) -> tuple[EventEmitter, JsonlEventLog]:
    log = JsonlEventLog(tmp_path / "events.jsonl")
    return EventEmitter("job-1", log), log


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_placeholders_are_filled_per_argument_without_a_shell(tmp_path: Path) -> None:
    config = cfg(post_checkpoint_script="x", push_to_hub=True, hub_model_id="me/toy")
    values = context_values(config, global_step=7, job_id="job-1", local_checkpoint_path="/o u t/checkpoint-7")
    argv = render("run --ckpt {local_checkpoint_path} --step={global_step} '{tracker_run_name}; rm -rf /' "
                  "{tracker_project_name} {model_family} {model_type} {lora_type} {huggingface_path} "
                  "[{remote_checkpoint_path}] {validation_guidance}", values)
    assert argv == ["run", "--ckpt", "/o u t/checkpoint-7", "--step=7", "job-1; rm -rf /", "proj", "pixart_sigma",
                    "lora", "lycoris", "me/toy", "[]", "3.5"]


def test_script_receives_its_argv_and_output_is_recorded(tmp_path: Path) -> None:
    events, log = emitter(tmp_path)
    out = tmp_path / "argv.json"
    runner = HookScripts(events, timeout=60)
    values = context_values(cfg(), global_step=3, job_id="job-1", local_checkpoint_path=str(tmp_path / "ck 3"))
    command = f"{sys.executable} {script(tmp_path, 'argv.py', ARGV_SCRIPT)} {out} {{local_checkpoint_path}} " \
              "{global_step} {model_family}"
    result = runner.run("post_checkpoint", command, values)
    assert result is not None and result.ok
    assert json.loads(out.read_text()) == [str(tmp_path / "ck 3"), "3", "pixart_sigma"]
    (event,) = [e for e in log.read() if e.type == "hook.script"]
    assert set(EVENT_TYPES["hook.script"]) <= set(event.data)
    assert event.data["hook"] == "post_checkpoint" and event.data["returncode"] == 0
    assert event.data["output"] == "wrote 3 args\n" and event.level == "info"


def test_a_hanging_script_and_its_children_are_killed_at_the_timeout(tmp_path: Path) -> None:
    events, log = emitter(tmp_path)
    pid_file = tmp_path / "child.pid"
    runner = HookScripts(events, timeout=1.0)
    started = time.monotonic()
    result = runner.run("validation", [sys.executable, str(script(tmp_path, "hang.py", HANG_SCRIPT)),
                                       str(pid_file)], {})
    assert result is not None and result.timed_out and not result.ok
    assert time.monotonic() - started < 30  # nowhere near the script's 60 s
    assert "hanging" in result.output
    child = int(pid_file.read_text())
    for _ in range(200):  # the grandchild was in the killed process group; wait until it is reaped or gone
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the script's child outlived the timeout")
    (event,) = [e for e in log.read() if e.type == "hook.script"]
    assert event.level == "warning" and event.data["timed_out"] and "killed after its 1s timeout" in \
        event.data["message"]


def test_failing_scripts_are_reported_and_fatal_only_when_configured(tmp_path: Path) -> None:
    events, log = emitter(tmp_path)
    failing = [sys.executable, "-c", "import sys; print('x' * 9000); sys.exit(3)"]
    result = HookScripts(events, timeout=30).run("validation", failing, {})
    assert result is not None and result.returncode == 3
    assert len(result.output) < 4100 and result.output.startswith("[")  # truncated, tail kept
    with pytest.raises(HookScriptError, match="validation script exited with 3"):
        HookScripts(events, timeout=30, fatal=True).run("validation", failing, {})
    missing = HookScripts(events, timeout=30, fatal=False).run("validation", ["/no/such/tool"], {})
    assert missing is not None and missing.returncode is None and "could not start" in missing.output
    assert [e.data["returncode"] for e in log.read() if e.type == "hook.script"] == [3, 3, None]


def test_background_scripts_do_not_block_and_are_awaited_at_the_end(tmp_path: Path) -> None:
    events, log = emitter(tmp_path)
    out = tmp_path / "argv.json"
    runner = HookScripts(events, timeout=60)
    slow = [sys.executable, "-c", f"import time, pathlib; time.sleep(2); pathlib.Path({str(out)!r}).write_text('1')"]
    assert runner.run("post_checkpoint", slow, {}, background=True) is None
    assert not out.exists()  # returned before the script finished
    runner.wait()
    assert out.read_text() == "1"
    assert [e.data["background"] for e in log.read() if e.type == "hook.script"] == [True]


def test_local_publishing_runs_in_the_background_then_the_upload_hook(tmp_path: Path) -> None:
    events, log = emitter(tmp_path)
    checkpoint = tmp_path / "out" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    target = tmp_path / "published"
    argv_out = tmp_path / "upload-argv.json"
    config = cfg(publish_local_dir=str(target), push_checkpoints_to_hub=True,
                 post_upload_script=f"{sys.executable} {script(tmp_path, 'a.py', ARGV_SCRIPT)} {argv_out} "
                                    "{remote_checkpoint_path} {local_checkpoint_path} {global_step}")
    scripts = HookScripts(events, timeout=60)

    def values(step: int, local: str = "", remote: str = "") -> dict[str, str]:
        return context_values(config, global_step=step, job_id="job-1", local_checkpoint_path=local,
                              remote_checkpoint_path=remote)

    publishing = Publishing(list(get_registry().publishers.values()), config, "job-1", events, scripts, values)
    assert [s.name for s in publishing.wanted("checkpoint")] == ["local"]  # push_to_hub is off
    assert publishing.submit(checkpoint, "checkpoint", 4)
    (result,) = publishing.drain()
    assert result["ok"] and result["remote"] == str(target / "checkpoint-4")
    assert (target / "checkpoint-4" / "model.safetensors").read_bytes() == b"weights"
    assert json.loads(argv_out.read_text()) == [str(target / "checkpoint-4"), str(checkpoint), "4"]
    kinds = [e.type for e in log.read()]
    assert kinds == ["publish.completed", "hook.script"]
    assert set(EVENT_TYPES["publish.completed"]) <= set(log.read()[0].data)


def test_a_failed_upload_is_an_event_not_an_exception(tmp_path: Path) -> None:
    events, log = emitter(tmp_path)
    config = cfg(publish_local_dir=str(tmp_path / "pub"))
    publishing = Publishing(list(get_registry().publishers.values()), config, "job-1", events,
                            HookScripts(events, 5), lambda *a: {})
    publishing.submit(tmp_path / "gone", "final", 10)
    (result,) = publishing.drain()
    assert not result["ok"] and "no longer exists" in result["error"]
    (event,) = log.read()
    assert event.type == "publish.failed" and event.level == "warning"
    assert set(EVENT_TYPES["publish.failed"]) <= set(event.data)


def test_loss_plot_is_a_png_and_found_for_a_job(tmp_path: Path) -> None:
    from PIL import Image

    from simpletuner_core.jobs import models as m
    from simpletuner_core.jobs.store import open_store

    out = tmp_path / "output"
    losses = [1.0 / (i + 1) for i in range(50)]
    path = write_plot(plot_path(out), losses, [1e-3] * 50)
    assert path == out / PLOT_NAME
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (640, 360)
        assert len(set(image.getdata())) > 2  # something was drawn
    store = open_store(tmp_path)
    store.create_job(m.Job(id="j1", config={}, state=m.COMPLETED, created_at=time.time(), output_dir=str(out)))
    store.create_job(m.Job(id="j2", config={}, state=m.QUEUED, created_at=time.time()))
    assert job_plot_path(store, "j1") == path
    assert job_plot_path(store, "j2") is None


@pytest.mark.parametrize(("total", "every", "expected"), [
    (20, 4, [1, 5, 9, 13, 17, 20]), (5, 1, [1, 2, 3, 4, 5]), (5, 10, [1, 5]), (1, 3, [1]), (4, 3, [1, 4]),
])
def test_preview_steps_follow_the_tutorial(total: int, every: int, expected: list[int]) -> None:
    assert preview_steps(total, every) == expected


def test_preview_decoder_needs_a_family_that_reports_latents_and_a_decoder() -> None:
    from types import SimpleNamespace

    from simpletuner_core.training.preview import decoder_for

    notes: list[tuple[str, str]] = []

    def log(message: str, level: str = "info") -> None:
        notes.append((level, message))

    no_config = SimpleNamespace(validation_preview_decoder=None)
    assert decoder_for(object(), no_config, "toyfam", "cpu", log) is None
    nameless = decoder_for(SimpleNamespace(supports_preview=True), no_config, "toyfam", "cpu", log)
    assert nameless is not None and nameless.broken and nameless.safe_decode(None) == []
    named = decoder_for(SimpleNamespace(supports_preview=True, preview_decoder="org/taesd"), no_config, "toyfam",
                        "cpu", log)
    assert named is not None and named.source == "org/taesd" and not named.broken
    assert [level for level, _ in notes] == ["warning", "warning"]
    assert "toyfam does not report intermediate latents" in notes[0][1]
    assert "--validation_preview_decoder" in notes[1][1]


def test_preview_decoder_undoes_scaling_and_shift_like_the_pipeline(tmp_path: Path) -> None:
    """Flux-style decoders carry a shift_factor: latents / scaling_factor + shift_factor, as pipelines decode."""
    import numpy as np
    import torch
    from diffusers import AutoencoderTiny

    from simpletuner_core.training.preview import PreviewDecoder

    torch.manual_seed(0)
    vae = AutoencoderTiny(latent_channels=4, encoder_block_out_channels=(8, 8, 8, 8),
                          decoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 1, 1, 1),
                          num_decoder_blocks=(1, 1, 1, 1), scaling_factor=0.5, shift_factor=0.25)
    vae.save_pretrained(tmp_path / "taef")
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    [image] = PreviewDecoder(str(tmp_path / "taef"), "cpu", lambda *a, **k: None).decode(latents)
    with torch.no_grad():
        pixels = vae.eval().decode(latents / 0.5 + 0.25).sample
    expected = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(image), expected)


def test_checkpoint_manifests_redact_secrets_that_a_resume_never_compares() -> None:
    from simpletuner_core.config.model import unstructure
    from simpletuner_core.hooks.card import is_redacted_key
    from simpletuner_core.training.run_identity import RESUME_MAY_CHANGE, checkpoint_manifest, config_hash

    config = cfg(webhook_config=[{"webhook_type": "raw", "callback_url": "https://u:pw@hooks.test/t0k"}],
                 post_upload_script="notify --key=k3y", publish_local_dir="/srv/share/models")
    redacted = [k for k in unstructure(config) if is_redacted_key(k)]
    assert {"webhook_config", "post_upload_script", "publish_local_dir"} <= set(redacted)
    assert "tokenizer_max_length" not in redacted
    # a resume compares config_hash over the live config; redacted keys must be ones it ignores anyway
    assert set(redacted) <= set(RESUME_MAY_CHANGE)
    manifest = checkpoint_manifest(config, epoch=1, step_in_epoch=2, seed=3, fingerprint="f", adapter=None,
                                   job_id="job-1")
    text = json.dumps(manifest)
    assert "t0k" not in text and "k3y" not in text and "/srv/share" not in text
    assert manifest["config_hash"] == config_hash(config)


@pytest.mark.parametrize("mode", ["hang", "exit"])
def test_a_detached_child_holding_the_output_pipe_does_not_hold_the_call(tmp_path: Path, mode: str) -> None:
    events, _ = emitter(tmp_path)
    pid_file = tmp_path / "detached.pid"
    argv = [sys.executable, str(script(tmp_path, "detach.py", DETACHED_SCRIPT)), str(pid_file), mode]
    try:
        started = time.monotonic()
        result = HookScripts(events, timeout=2.0).run("validation", argv, {})
        elapsed = time.monotonic() - started
    finally:
        _kill_pid_in(pid_file)
    assert result is not None and "started a detached child" in result.output
    # the child sleeps 60 s with the pipe open; the call is bounded by the timeout plus a few seconds of grace
    assert elapsed < 15, elapsed
    if mode == "hang":
        assert result.timed_out and result.returncode is not None
    else:  # the script itself exited at once: not a timeout, and it succeeded
        assert result.ok and not result.timed_out and result.returncode == 0


def test_output_is_read_into_a_bounded_tail(tmp_path: Path) -> None:
    events, _ = emitter(tmp_path)
    chatty = [sys.executable, "-c", "import sys\nfor i in range(200000): print(i)\nprint('the end')"]
    result = HookScripts(events, timeout=60).run("validation", chatty, {})
    assert result is not None and result.ok
    assert len(result.output) < 4100 and result.output.rstrip().endswith("199999\nthe end")
    assert result.output.startswith("[") and "bytes of earlier output cut]" in result.output.splitlines()[0]


def test_one_background_run_per_hook_and_a_bounded_wait(tmp_path: Path) -> None:
    events, log = emitter(tmp_path)
    gate = tmp_path / "gate"
    slow = [sys.executable, "-c", f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)"]
    runner = HookScripts(events, timeout=60)
    assert runner.run("post_checkpoint", slow, {}, background=True) is None
    assert runner.run("post_checkpoint", slow, {}, background=True) is None  # the first is still going
    skipped = [e for e in log.read() if e.type == "hook.script" and e.data.get("skipped")]
    assert len(skipped) == 1 and skipped[0].level == "warning" and "still going" in skipped[0].data["message"]
    started = time.monotonic()
    assert runner.wait(timeout=0.2) is False  # bounded: the script is still waiting for its gate
    assert time.monotonic() - started < 5
    gate.write_text("open")
    assert runner.wait() is True
    assert runner.run("post_checkpoint", [sys.executable, "-c", "pass"], {}, background=True) is None
    assert runner.wait() is True
    runs = [e for e in log.read() if e.type == "hook.script" and not e.data.get("skipped")]
    assert [e.data["returncode"] for e in runs] == [0, 0]


class BlockingPublisher:
    """A publisher whose uploads wait for ``release`` (a hung network upload)."""

    def __init__(self) -> None:
        import threading

        from simpletuner_core.records import PublisherSpec

        self.release = threading.Event()
        self.started = threading.Event()
        self.calls: list[int] = []
        self.spec = PublisherSpec("slow", self.publish, wants=lambda config, kind: True)

    def publish(self, item: Any) -> str:
        self.calls.append(item.step)
        self.started.set()
        self.release.wait(60)
        return f"remote/{item.step}"


def test_a_cancelled_run_waits_a_bounded_time_for_uploads_and_reports_them_abandoned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from simpletuner_core.hooks import publish

    monkeypatch.setattr(publish, "ABANDON_WAIT_S", 0.5)
    events, log = emitter(tmp_path)
    slow = BlockingPublisher()
    publishing = Publishing([slow.spec], cfg(), "job-1", events, HookScripts(events, 5), lambda *a: {})
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
        assert publishing.submit(tmp_path / f"checkpoint-{step}", "checkpoint", step)
    assert slow.started.wait(10)
    try:
        started = time.monotonic()
        results = publishing.drain(abandon=True)
        assert time.monotonic() - started < 10  # not the upload's 60 s
    finally:
        slow.release.set()
    assert [(r["step"], r["ok"]) for r in results] == [(1, False), (2, False)]
    assert all("abandoned" in r["error"] for r in results)
    time.sleep(0.2)  # the left-behind upload finishes now: it must not be reported after the fact
    failed = [e for e in log.read() if e.type.startswith("publish.")]
    assert [(e.type, e.data["step"]) for e in failed] == [("publish.failed", 1), ("publish.failed", 2)]
    assert slow.calls == [1]  # the queued upload never started


def test_each_upload_is_bounded_by_publish_timeout(tmp_path: Path) -> None:
    events, log = emitter(tmp_path)
    slow = BlockingPublisher()
    publishing = Publishing([slow.spec], cfg(publish_timeout=0.5), "job-1", events, HookScripts(events, 5),
                            lambda *a: {})
    (tmp_path / "checkpoint-1").mkdir()
    publishing.submit(tmp_path / "checkpoint-1", "checkpoint", 1)
    try:
        started = time.monotonic()
        (result,) = publishing.drain()
        assert time.monotonic() - started < 20
    finally:
        slow.release.set()
    assert not result["ok"] and "publish_timeout" in result["error"]
    assert [e.type for e in log.read()] == ["publish.failed"]


def test_local_publishing_swaps_atomically_and_leaves_nothing_behind_on_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from simpletuner_core.builtins import publishers
    from simpletuner_core.config.errors import ConfigInvalid
    from simpletuner_core.hooks.publish import PublishItem

    root = tmp_path / "published"
    config = cfg(publish_local_dir=str(root), push_checkpoints_to_hub=True)
    checkpoint = tmp_path / "out" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"v1")
    item = PublishItem(checkpoint, "checkpoint", 4, config, "job-1")
    assert publishers._local_publish(item) == str(root / "checkpoint-4")
    (checkpoint / "model.safetensors").write_bytes(b"v2")
    publishers._local_publish(item)  # republished: replaced, the old copy removed
    assert (root / "checkpoint-4" / "model.safetensors").read_bytes() == b"v2"
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-4"]

    real_copytree = publishers.shutil.copytree

    def copy_then_fail(src: Any, dst: Any, **kwargs: Any) -> Any:
        real_copytree(src, dst, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(publishers.shutil, "copytree", copy_then_fail)
    (checkpoint / "model.safetensors").write_bytes(b"v3")
    with pytest.raises(OSError, match="disk full"):
        publishers._local_publish(item)
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-4"]  # no temp copy left behind
    assert (root / "checkpoint-4" / "model.safetensors").read_bytes() == b"v2"  # the previous copy intact
    with pytest.raises(ConfigInvalid, match="publish_local_dir"):
        cfg(publish_local_dir="relative/dir")
