"""Background publishing: checkpoints and the final model go to every publisher the job asks for.

Uploads run in one worker thread, in order, so training never waits on the network; the end of a run waits for
the queue (the final model must be out before the job is reported complete). Each upload is recorded as a
``publish.completed`` or ``publish.failed`` event, and ``post_upload_script`` runs once per successful upload.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import attrs

#: Never uploaded with the final model: training state and scratch space.
FINAL_IGNORE = ("checkpoint-*", ".checkpoint-*", "logs", ".*")


@attrs.frozen
class PublishItem:
    """What a publisher receives: a directory to upload and why."""

    path: Path
    kind: str  # checkpoint | final
    step: int
    config: Any
    job_id: str


class Publishing:
    """The job's publishing queue; ``submit`` returns at once, ``drain`` waits for everything submitted."""

    def __init__(self, specs: list[Any], cfg: Any, job_id: str, emitter: Any, scripts: Any,
                 script_values: Any) -> None:
        self.specs = specs
        self.cfg = cfg
        self.job_id = job_id
        self.emitter = emitter
        self.scripts = scripts
        self.script_values = script_values  # (step, local_path, remote) -> placeholder values
        self.results: list[dict[str, Any]] = []
        self._queue: queue.Queue[PublishItem | None] = queue.Queue()
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None

    def wanted(self, kind: str) -> list[Any]:
        return [spec for spec in self.specs if spec.wants(self.cfg, kind)]

    def submit(self, path: Path, kind: str, step: int) -> bool:
        if not self.wanted(kind):
            return False
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="publishing", daemon=True)
            self._thread.start()
        self._queue.put(PublishItem(Path(path), kind, step, self.cfg, self.job_id))
        return True

    def drain(self, abandon: bool = False) -> list[dict[str, Any]]:
        """Wait for queued uploads (or skip those not started, when ``abandon``); returns every result."""
        if self._thread is not None:
            if abandon:
                self._abandon.set()
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        return list(self.results)

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                if self._abandon.is_set():
                    continue
                for spec in self.wanted(item.kind):
                    self._publish(spec, item)
        finally:
            self.emitter.thread_done()

    def _publish(self, spec: Any, item: PublishItem) -> None:
        started = time.monotonic()
        base = {"publisher": spec.name, "kind": item.kind, "step": item.step, "path": str(item.path)}
        try:
            if not item.path.exists():
                raise FileNotFoundError(f"{item.path} no longer exists (removed by checkpoints_total_limit "
                                        "before its upload started?)")
            remote = spec.publish(item)
        except Exception as exc:  # an upload failure is reported, never raised into training
            result = {**base, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:1000]}
            self.results.append(result)
            self.emitter.emit("publish.failed", level="warning", **result,
                              message=f"{spec.name}: publishing {item.kind} {item.step} failed: {result['error']}")
            return
        result = {**base, "ok": True, "remote": remote, "seconds": round(time.monotonic() - started, 3)}
        self.results.append(result)
        self.emitter.emit("publish.completed", **result)
        if self.cfg.post_upload_script:
            values = self.script_values(item.step, str(item.path), remote or "")
            try:
                self.scripts.run("post_upload", self.cfg.post_upload_script, values)
            except Exception:  # recorded as a hook.script event; an upload hook cannot fail a finished step
                pass
